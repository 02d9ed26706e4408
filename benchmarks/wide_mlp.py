"""One epoch of the chapter's dropout regime (E2), jaxens against PyTorch and the matmuls alone.

    python -m benchmarks.ensemble_train --model wide [--members 3] [--torch-threads 1,<cores>]
        [--synthetic N]

The 784-2048-1024-1024-10 network (4.8 M parameters) at batch 256 is matmul-bound, a different
regime from E1's small MLP. Side by side in one process, on the 60,000 training images with the
10,000 test images as validation (``experiments.regularisation_mnist``'s dropout regime:
dropout 0.25 on the inputs and 0.5 after every hidden layer, uniform weights, max-norm 2, SGD
0.1 with momentum 0.9):

1. jaxens: ``--members`` members vmapped in one ``train`` call of one epoch (compile excluded);
2. PyTorch: the same members one after another (the chapter's Keras code is sequential too),
   each a shuffling ``DataLoader`` epoch, the max-norm projection after every step, and the
   validation pass, on each of ``--torch-threads``; the fastest is the reference;
3. the training step's matmuls alone at the step's shapes (``step_matmul_gflops``), which bound
   the training rate from above.

It prints the seconds, member-epochs per second, the rates in GFLOP/s (counted as
``flops_per_step`` counts them), jaxens' rate as a % of the matmuls-alone rate and its speed-up
over PyTorch, with the goals (>= 70% and >= 3x).
"""

import jax

from benchmarks import ensemble_train
from experiments import regularisation_mnist
from experiments import reporting

GOAL_MATMUL_SHARE = 0.70
GOAL_TORCH_SPEEDUP = 3.0


def torch_epochs(splits, config, n_members, threads):
  """The dropout regime in PyTorch: ``n_members`` one-epoch runs one after another; returns
  their validation accuracies."""
  import torch  # The `ref` extra.
  torch.set_num_threads(threads)
  x_train, y_train = torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y).long()
  x_val, y_val = torch.from_numpy(splits.val.x), torch.from_numpy(splits.val.y).long()
  loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train),
                                       batch_size=config.batch_size, shuffle=True,
                                       drop_last=True)
  accuracies = []
  for member in range(n_members):
    torch.manual_seed(member)
    module = _torch_dropout_mlp(torch, config)
    linears = [layer for layer in module if isinstance(layer, torch.nn.Linear)]
    optimizer = torch.optim.SGD(module.parameters(), lr=config.dropout_lr,
                                momentum=config.momentum)
    module.train()
    for xb, yb in loader:
      optimizer.zero_grad()
      torch.nn.functional.cross_entropy(module(xb), yb).backward()
      optimizer.step()
      with torch.no_grad():  # Keras' MaxNorm on each unit's incoming weights (a row here).
        for linear in linears:
          norms = linear.weight.norm(dim=1, keepdim=True)
          linear.weight.mul_(torch.clamp(config.max_norm / norms.clamp_min(1e-12), max=1.0))
    module.eval()
    with torch.no_grad():
      accuracies.append(float((module(x_val).argmax(1) == y_val).float().mean()))
  return accuracies


def _torch_dropout_mlp(torch, config):
  sizes = (784, *config.hidden, 10)
  layers = [torch.nn.Dropout(config.input_dropout)]
  for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
    linear = torch.nn.Linear(fan_in, fan_out)
    torch.nn.init.uniform_(linear.weight, -config.uniform_init, config.uniform_init)
    torch.nn.init.zeros_(linear.bias)
    layers += [linear, torch.nn.ReLU(), torch.nn.Dropout(config.hidden_dropout)]
  return torch.nn.Sequential(*layers[:-2])


def run(args, splits):
  """Prints the wide network's table (``splits``: MNIST's train and validation sets)."""
  config = regularisation_mnist.Config(n_seeds=args.members, epochs=1)
  cfg = config.train_config("dropout")
  steps = len(splits.train.y) // cfg.batch_size
  member_gflop = steps * ensemble_train.flops_per_step(cfg.model, cfg.batch_size) / 1e9
  matmuls = ensemble_train.step_matmul_gflops(cfg.model, cfg.batch_size, args.members,
                                              n_steps=steps)
  jaxens_seconds = ensemble_train.epoch_seconds(cfg, splits)
  rows = [("jaxens, all members vmapped", jaxens_seconds)]
  if not args.skip_torch:
    for threads in sorted({int(t) for t in args.torch_threads.split(",")}):
      seconds, _ = reporting.seconds(torch_epochs, splits, config, args.members, threads)
      rows.append((f"PyTorch, one member after another, {threads} thread(s)", seconds))
  rows.append(("the step's matmuls alone (no activation, dropout, loss, update or "
               "validation)", args.members * member_gflop / matmuls))
  torch_best = min((s for name, s in rows if name.startswith("PyTorch")), default=None)
  table = []
  for name, seconds in rows:
    rate = args.members * member_gflop / seconds
    table.append((name, f"{seconds:.2f}", f"{args.members / seconds:.3f}", f"{rate:.1f}",
                  f"{100 * rate / matmuls:.0f}%",
                  f"{torch_best / seconds:.2f}x" if torch_best else "n/a"))
  print(f"devices: {jax.devices()}; {args.members} members x {steps} steps of batch "
        f"{cfg.batch_size} ({member_gflop:.0f} GFLOP a member-epoch)")
  print(reporting.markdown_table(
      ("workflow", "s per epoch", "member-epochs per s", "GFLOP/s", "% of matmuls-alone rate",
       "speed-up vs the fastest PyTorch"), table))
  share = (args.members * member_gflop / jaxens_seconds) / matmuls
  goals = [f"% of the matmuls-alone rate {100 * share:.0f}% (goal >= "
           f"{100 * GOAL_MATMUL_SHARE:.0f}%: {'met' if share >= GOAL_MATMUL_SHARE else 'not met'})"]
  if torch_best:
    speedup = torch_best / jaxens_seconds
    goals.append(f"speed-up vs PyTorch {speedup:.2f}x (goal >= {GOAL_TORCH_SPEEDUP:.0f}x: "
                 f"{'met' if speedup >= GOAL_TORCH_SPEEDUP else 'not met'})")
  print("Goals: " + "; ".join(goals))


def splits_for(args):
  """MNIST's 60,000 training images and, as validation, its test set (or synthetic data)."""
  if args.synthetic is not None:
    return ensemble_train.synthetic_splits(args.synthetic)
  return regularisation_mnist.splits_for(regularisation_mnist.Config())

