"""Training the E1 pool: the published PyTorch workflow against jaxens, side by side.

    python -m benchmarks.ensemble_train [--epochs 3] [--members 10] [--scaling 1,10,100]
        [--torch-threads 1,<cores>] [--torch-device cpu|cuda]
    python -m benchmarks.ensemble_train --scaling-only --scaling 1,10,30,100
        [--member-block auto,off,2] [--repeats 3]
    python -m benchmarks.ensemble_train --device-table 1,10,100,1000 [--json rows.json]
        [--synthetic N]
    python -m benchmarks.ensemble_train --model wide [--members 3]   # benchmarks/wide_mlp.py

Runs on the same machine and the same (real MNIST) data, in one process:
1. the published workflow re-implemented in PyTorch: members trained one after another,
   784-100-100-100-10 ReLU, Adam 1e-3, batch 32, a shuffling DataLoader, validation after
   every epoch and a copy of the best state (needs the ``ref`` extra), on one thread and on
   every core; the faster of the two is the reference for the speed-ups;
2. jaxens, one member at a time (``train(cfg, members=[i])``, compiled once);
3. jaxens, all E members in one vmapped run.

It prints wall times, ratios, and the achieved GFLOP/s as a fraction of a large jitted f32
matmul measured in the same run, then a scaling table over E, what Adam's update costs (the
same epoch with SGD), and the rate of the training step's matmuls alone, which bounds the
training rate from above.

``--device-table`` prints only the device check's table (``benchmarks/device_check.sh``): for
each E, one epoch's seconds (compile excluded), member-epochs per second, the % of the matmul
rate measured in the same run, and the speed-up over a loop of single-member runs (the loop's
time is E times the mean of ``--single-runs`` timed ``train(cfg, members=[i])`` calls).
``--synthetic N`` replaces MNIST by N random MNIST-shaped training images (and N / 4 for
validation), for the CPU dry run.

Then the Flax CNN rows (``--cnn-train 0`` skips them): E members of Flax's examples/mnist CNN
on the first ``--cnn-train`` training images (batch 128, Adam 1e-3, one epoch, validation on
1000 images), trained
1. by the Flax examples' workflow: a Python loop over members, each a jitted train step per
   minibatch (native convolutions);
2. by jaxens as one vmapped program with ``from_linen(conv="auto")``: on a CPU, convolutions
   as patches and a matmul;
3. by jaxens as one vmapped program with native convolutions, which ``vmap`` turns into grouped
   convolutions: timed over ``--cnn-native-steps`` steps only, since it is ~35x slower.
"""

import argparse
import copy
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import app
from experiments import baselines
from experiments import cnn_mnist
from experiments import ensemble_mnist
from experiments import reporting
from jaxens import data as data_lib
from jaxens import ensemble
from jaxens import models

MODEL = ensemble_mnist.Config().model()


def reference_rate(args):
  """``(n, GFLOP/s)`` of the reference n x n matmul: ``--matmul-size``, by default 2048 on a
  CPU and 8192 on an accelerator."""
  n = args.matmul_size or (2048 if jax.default_backend() == "cpu" else 8192)
  return n, matmul_gflops(n)


def matmul_gflops(n, repeats=20):
  """Throughput of a large jitted f32 n x n matmul: the practical compute ceiling here."""
  a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
  f = jax.jit(lambda m: m @ m)
  f(a).block_until_ready()
  times = [reporting.seconds(f, a)[0] for _ in range(repeats)]
  return 2 * n**3 / np.median(times) / 1e9


def step_matmul_gflops(model, batch_size, n_members, n_steps=1000):
  """Throughput of one training step's matmuls alone, at the step's shapes.

  Per member and layer: the forward product, the weight gradient and (above the first layer)
  the input gradient, with batch ``batch_size``, vmapped over ``n_members`` sharded as in
  training, with no activation, loss or optimizer. Each step subtracts a tiny multiple of the
  weight gradients so that no step can be skipped. The rate is counted like
  ``flops_per_step``, so it bounds the training rate from above.
  """
  mesh, n_members = ensemble.members_mesh(n_members)  # Padded to fill the mesh, as in training.
  rng = np.random.default_rng(0)
  sharded = lambda *shape: jax.device_put(
      0.01 * rng.standard_normal((n_members,) + shape, np.float32),
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(ensemble.MEMBER_AXIS)))
  weights = [sharded(fan_in, fan_out) for fan_in, fan_out in zip(model.sizes[:-1], model.sizes[1:])]
  x = sharded(batch_size, model.sizes[0])

  def member_step(weights, x):
    inputs = [x]
    for w in weights[:-1]:
      inputs.append(inputs[-1] @ w)
    delta = inputs[-1] @ weights[-1]
    grads = []
    for layer in reversed(range(len(weights))):
      grads.insert(0, inputs[layer].T @ delta)
      if layer:
        delta = delta @ weights[layer].T
    return [w - 1e-9 * g for w, g in zip(weights, grads)]

  run = jax.jit(lambda weights, x: jax.lax.fori_loop(
      0, n_steps, lambda _, w: jax.vmap(member_step)(w, x), weights),
                compiler_options=ensemble.compiler_options(ensemble.TrainConfig()))
  jax.block_until_ready(run(weights, x))
  seconds, _ = timed(lambda: run(weights, x))
  return n_members * n_steps * flops_per_step(model, batch_size) / 1e9 / seconds


def flops_per_step(model, batch_size):
  """Forward plus backward matmul FLOPs of one minibatch step: 3 x 2 x B x sum(fan_in x fan_out)."""
  weights = sum(a * b for a, b in zip(model.sizes[:-1], model.sizes[1:]))
  return 3 * 2 * batch_size * weights


def torch_workflow(splits, n_members, epochs, threads, device, batch_size=32):
  """The published loop: one member after another, best validation-loss state kept."""
  import torch  # The `ref` extra.
  torch.set_num_threads(threads)
  x_train, y_train = torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y).long()
  x_val = torch.from_numpy(splits.val.x).to(device)
  y_val = torch.from_numpy(splits.val.y).long().to(device)
  loader = torch.utils.data.DataLoader(
      torch.utils.data.TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True)
  accuracies = []
  for member in range(n_members):
    torch.manual_seed(member)
    model = baselines.torch_mlp(torch, MODEL).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    best_loss, best_state = float("inf"), None
    for _ in range(epochs):
      model.train()
      for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        optimizer.zero_grad()
        loss_fn(model(xb), yb).backward()
        optimizer.step()
      model.eval()
      with torch.no_grad():
        logits = model(x_val)
        val_loss = float(loss_fn(logits, y_val))
      if val_loss < best_loss:
        # The published loop keeps a copy of the best state; the copy is part of its cost.
        best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
        best_accuracy = float((logits.argmax(1) == y_val).float().mean())
    accuracies.append(best_accuracy)
  return accuracies


def timed(fn):
  return reporting.seconds(fn)


def jaxens_vmapped(cfg, splits):
  return ensemble.train(cfg, splits, progress=False)


def jaxens_one_at_a_time(cfg, splits):
  return [ensemble.train(cfg, splits, members=[i], progress=False)
          for i in range(cfg.n_members)]


def flax_loop(splits, n_members, epochs, batch_size, learning_rate):
  """Flax's examples/mnist workflow: one member after another, a jitted step per minibatch,
  validation loss after every epoch and the best parameters kept."""
  module, tx = cnn_mnist.CNN(), optax.adam(learning_rate)

  def loss_fn(params, x, y):
    logits = module.apply({"params": params}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  train_step = jax.jit(baselines.optax_step(loss_fn, tx))

  @jax.jit
  def val_loss(params, x, y):
    logits = module.apply({"params": params}, x, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  x, y = splits.train
  rng = np.random.default_rng(0)
  best = []
  for member in range(n_members):
    params = module.init(jax.random.PRNGKey(member), x[:1], train=False)["params"]
    opt_state = tx.init(params)
    best_loss, best_params = np.inf, params
    for _ in range(epochs):
      order = rng.permutation(len(y))
      for step in range(len(y) // batch_size):
        batch = order[step * batch_size:(step + 1) * batch_size]
        params, opt_state, _ = train_step(params, opt_state, x[batch], y[batch])
      loss = float(val_loss(params, *splits.val))
      if loss < best_loss:
        best_loss, best_params = loss, params
    best.append(best_params)
  return best


def cnn_rows(args, splits):
  """The Flax CNN: a Python loop over members against jaxens' vmapped program."""
  images = data_lib.subset(cnn_mnist.as_images(splits), args.cnn_train, 1000, 0)
  batch_size, learning_rate = 128, 1e-3
  config = lambda conv: ensemble.TrainConfig(
      models.from_linen(cnn_mnist.CNN(), conv=conv), optimizer=optax.adam,
      optimizer_kwargs={"learning_rate": learning_rate}, n_members=args.members,
      batch_size=batch_size, epochs=1)
  rows = []
  for name, fn in (
      ("Flax workflow, a Python loop over members", lambda: flax_loop(
          images, args.members, 1, batch_size, learning_rate)),
      (f"jaxens, all members vmapped, conv='auto' ({jax.default_backend()})",
       lambda: jaxens_vmapped(config("auto"), images))):
    with_compile, _ = timed(fn)
    without_compile, _ = timed(fn)
    rows.append((name, with_compile, without_compile))
  n_steps = args.cnn_train // batch_size
  print(f"\nFlax CNN, E={args.members}, {n_steps} steps of batch {batch_size}, Adam, 1 epoch "
        f"({args.cnn_train} images) plus validation on 1000:")
  print(reporting.markdown_table(
      ("workflow", "s incl. compile", "s excl. compile", "s per step (excl.)",
       "speed-up vs the loop (incl. / excl. compile)"),
      [(name, f"{with_compile:.1f}", f"{without_compile:.1f}",
        f"{without_compile / n_steps:.3f}",
        f"{rows[0][1] / with_compile:.2f}x / {rows[0][2] / without_compile:.2f}x")
       for name, with_compile, without_compile in rows]), flush=True)
  native_images = data_lib.subset(images, args.cnn_native_steps * batch_size, 1000, 0)
  native = config("native")
  timed(lambda: jaxens_vmapped(native, native_images))
  seconds, _ = timed(lambda: jaxens_vmapped(native, native_images))
  print(f"jaxens vmapped with native convolutions (grouped under vmap): {seconds:.1f} s for "
        f"{args.cnn_native_steps} steps, {seconds / args.cnn_native_steps:.3f} s per step "
        f"including the validation pass")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--model", default="e1", choices=("e1", "wide"),
                      help="e1: the E1 pool; wide: E2's 784-2048-1024-1024-10 dropout regime "
                      "(benchmarks/wide_mlp.py)")
  parser.add_argument("--members", type=int, default=None, help="E (default: 10; wide: 3)")
  parser.add_argument("--scaling", default="1,10,100", help="ensemble sizes, 1 epoch each")
  parser.add_argument("--data-order", default="independent", choices=ensemble.DATA_ORDERS)
  parser.add_argument("--skip-torch", action="store_true")
  parser.add_argument("--torch-threads", default=f"1,{os.cpu_count()}",
                      help="comma-separated torch thread counts to run; the fastest is the "
                           "reference")
  parser.add_argument("--torch-device", default="cpu", help="'cuda' on a GPU machine")
  parser.add_argument("--matmul-size", type=int, default=None,
                      help="side of the reference matmul; default 2048 on a CPU, 8192 else")
  parser.add_argument("--skip-mlp", action="store_true", help="only the Flax CNN rows")
  parser.add_argument("--cnn-train", type=int, default=12800,
                      help="training images of the Flax CNN rows; 0 skips them")
  parser.add_argument("--cnn-native-steps", type=int, default=5)
  parser.add_argument("--member-block", default="auto",
                      help="comma-separated member_block values for the scaling table: 'auto' "
                           "(the library's default), 'off' (one block) or a number")
  parser.add_argument("--repeats", type=int, default=1, help="rounds of the scaling table")
  parser.add_argument("--scaling-only", action="store_true",
                      help="only the scaling table (and the matmul rate it is compared with)")
  parser.add_argument("--device-table", default=None,
                      help="ensemble sizes of the device check's table; only that table runs")
  parser.add_argument("--single-runs", type=int, default=3,
                      help="single-member runs timed for the device table's loop column")
  parser.add_argument("--json", default=None, help="also write the device table's rows here")
  parser.add_argument("--synthetic", type=int, default=None,
                      help="N random MNIST-shaped training images instead of MNIST")
  args = parser.parse_args()
  app.use_every_core()
  if args.model == "wide":
    from benchmarks import wide_mlp  # pylint: disable=import-outside-toplevel  (it imports this)
    args.members = args.members or 3
    wide_mlp.run(args, wide_mlp.splits_for(args))
    return
  args.members = args.members or 10
  splits = data_lib.load_mnist() if args.synthetic is None else synthetic_splits(args.synthetic)
  if args.device_table:
    device_table(args, splits)
    return
  if args.scaling_only:
    cfg = ensemble.TrainConfig(MODEL, data_order=args.data_order)
    matmul_size, peak = reference_rate(args)
    print(f"devices: {jax.devices()}; jitted f32 {matmul_size}^2 matmul: {peak:.1f} GFLOP/s")
    scaling_table(args, cfg, splits, peak)
    return
  if not args.skip_mlp:
    mlp_rows(args, splits)
  if args.cnn_train:
    cnn_rows(args, splits)


def synthetic_splits(n_train):
  """Random MNIST-shaped images with labels learnable from the pixels: for dry runs only."""
  rng = np.random.default_rng(0)

  def examples(n):
    x = rng.random((n, MODEL.sizes[0]), np.float32)
    return data_lib.Examples(x, np.argmax(x[:, :MODEL.sizes[-1]], axis=1).astype(np.int32))
  return data_lib.Splits(examples(n_train), examples(max(1, n_train // 4)), examples(1))


def epoch_seconds(cfg, splits, **kwargs):
  """One ``train`` call's seconds, compile excluded: the same call is run twice."""
  timed(lambda: ensemble.train(cfg, splits, progress=False, **kwargs))
  return timed(lambda: ensemble.train(cfg, splits, progress=False, **kwargs))[0]


def device_table(args, splits):
  """The device check's table: member-epochs per second over E, against the matmul rate and a
  loop of single-member runs."""
  cfg = ensemble.TrainConfig(MODEL, n_members=1, epochs=1, data_order=args.data_order)
  n_steps = len(splits.train.y) // cfg.batch_size
  member_gflop = n_steps * flops_per_step(MODEL, cfg.batch_size) / 1e9
  matmul_size, peak = reference_rate(args)
  sizes = [int(e) for e in args.device_table.split(",")]
  n_singles = min(args.single_runs, max(sizes))
  single = dataclasses.replace(cfg, n_members=n_singles)
  timed(lambda: ensemble.train(single, splits, members=[0], progress=False))  # Compiles.
  loop_seconds = [timed(lambda: ensemble.train(single, splits, members=[i], progress=False))[0]
                  for i in range(n_singles)]
  per_member = float(np.mean(loop_seconds))
  print(f"devices: {jax.devices()}; jitted f32 {matmul_size}^2 matmul: {peak:.1f} GFLOP/s; "
        f"a single-member epoch ({n_steps} steps): mean {per_member:.2f} s over {n_singles} "
        f"members (min {min(loop_seconds):.2f}, max {max(loop_seconds):.2f})", flush=True)
  rows = []
  for n_members in sizes:
    seconds = epoch_seconds(dataclasses.replace(cfg, n_members=n_members), splits)
    rate = n_members * member_gflop / seconds
    rows.append({"run": f"E={n_members}, 1 epoch", "seconds": seconds,
                 "member_epochs_per_s": n_members / seconds,
                 "matmul_percent": 100 * rate / peak,
                 "vs_single_loop": n_members * per_member / seconds})
    print(f"E={n_members}: {seconds:.2f} s", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"rows": rows, "matmul_gflops": peak, "single_member_s": per_member}, f)
  print(device_markdown(rows))


def device_markdown(rows):
  """The device table; a row without a number shows a dash."""
  number = lambda row, name, fmt: "-" if row.get(name) is None else fmt.format(row[name])
  return reporting.markdown_table(
      ("run", "s (compile excluded; E4: wall)", "member-epochs per s", "% of matmul rate",
       "x vs a loop of single-member runs"),
      [(row["run"], number(row, "seconds", "{:.2f}"),
        number(row, "member_epochs_per_s", "{:.2f}"), number(row, "matmul_percent", "{:.0f}%"),
        number(row, "vs_single_loop", "{:.1f}x")) for row in rows])


def scaling_table(args, cfg, splits, peak):
  """One epoch per E and member block, compile excluded, timed side by side: the routes
  alternate within each of ``--repeats`` rounds; the table shows the fastest round and the
  spread. "CPU s" is the process's CPU time (both cores), which other programs on a shared
  machine disturb less than the wall time."""
  n_steps = len(splits.train.y) // cfg.batch_size
  routes = [(int(e), block) for e in args.scaling.split(",")
            for block in args.member_block.split(",")]
  configs = {(e, block): dataclasses.replace(
      cfg, n_members=e, epochs=1,
      member_block={"auto": None, "off": e}.get(block) if block in ("auto", "off") else int(block))
             for e, block in routes}
  for route in routes:
    jaxens_vmapped(configs[route], splits)  # Compiles.
  times = {route: [] for route in routes}
  for _ in range(args.repeats):
    for route in routes:
      cpu = time.process_time()
      seconds, _ = timed(lambda: jaxens_vmapped(configs[route], splits))
      times[route].append((seconds, time.process_time() - cpu))
  base = {block: min(measured)[0] / 10 for (e, block), measured in times.items() if e == 10}
  rows = []
  for (n_members, block), measured in times.items():
    wall = sorted(w / n_members for w, _ in measured)
    cpu = sorted(c / n_members for _, c in measured)
    rate = n_steps * flops_per_step(MODEL, cfg.batch_size) / 1e9 / wall[0]
    rows.append((n_members, block, f"{wall[0]:.3f}" + (f" ({wall[-1]:.3f})" if len(wall) > 1 else ""),
                 f"{cpu[0]:.3f}" + (f" ({cpu[-1]:.3f})" if len(cpu) > 1 else ""),
                 f"{1 / wall[0]:.2f}", f"{rate:.1f}", f"{100 * rate / peak:.0f}%",
                 "-" if base.get(block) is None else f"{wall[0] / base[block]:.2f}x"))
  print(f"\nScaling over E (1 epoch, vmapped, compile excluded; fastest of {args.repeats} "
        "alternating rounds, slowest in brackets):")
  print(reporting.markdown_table(
      ("E", "member_block", "s per member-epoch", "CPU s per member-epoch",
       "member-epochs per s", "GFLOP/s", "% of matmul rate", "vs E=10 (same member_block)"),
      rows), flush=True)


def mlp_rows(args, splits):
  """The E1 pool: PyTorch, jaxens one member at a time, jaxens vmapped; scaling; matmul rates."""
  cfg = ensemble.TrainConfig(MODEL, n_members=args.members, epochs=args.epochs,
                             data_order=args.data_order)
  n_steps = len(splits.train.y) // cfg.batch_size
  total_gflop = args.members * args.epochs * n_steps * flops_per_step(MODEL, cfg.batch_size) / 1e9
  matmul_size, peak = reference_rate(args)
  print(f"devices: {jax.devices()}; {os.cpu_count()} CPU cores")
  print(f"jitted f32 {matmul_size}^2 matmul: {peak:.1f} GFLOP/s; the pool is {total_gflop:.0f} GFLOP "
        f"({args.members} members x {args.epochs} epochs x {n_steps} steps); "
        f"floor at the matmul rate {total_gflop / peak:.1f} s")

  rows = []
  if not args.skip_torch:
    for threads in sorted({int(t) for t in args.torch_threads.split(",")}):
      seconds, accuracies = timed(lambda: torch_workflow(
          splits, args.members, args.epochs, threads, args.torch_device))
      print(f"PyTorch workflow ({args.torch_device}, {threads} thread(s)): {seconds:.1f} s",
            flush=True)
      rows.append((f"PyTorch, one member after another, {threads} thread(s)", seconds, seconds,
                   np.mean(accuracies)))
  n_torch_rows = len(rows)
  for name, fn in (("jaxens, one member at a time", jaxens_one_at_a_time),
                   ("jaxens, all members vmapped", jaxens_vmapped)):
    with_compile, _ = timed(lambda: fn(cfg, splits))
    without_compile, result = timed(lambda: fn(cfg, splits))  # Compiled programs are cached.
    accuracy = (np.mean([r.history["val_accuracy"][0, -1] for r in result])
                if isinstance(result, list) else result.history["val_accuracy"][:, -1].mean())
    rows.append((name, with_compile, without_compile, accuracy))

  reference_name, reference = min(rows[:n_torch_rows] or rows, key=lambda row: row[1])[:2]
  print()
  print(reporting.markdown_table(
      ("workflow", "train() s incl. compile", "s excl. compile",
       f"speed-up vs the fastest {reference_name.split(',')[0]} (incl. compile)", "GFLOP/s",
       "% of matmul rate", "mean val acc (last epoch)"),
      [(name, f"{with_compile:.1f}", f"{without_compile:.1f}", f"{reference / with_compile:.1f}x",
        f"{total_gflop / without_compile:.1f}", f"{100 * total_gflop / without_compile / peak:.0f}%",
        f"{accuracy:.4f}") for name, with_compile, without_compile, accuracy in rows]))

  scaling_table(args, cfg, splits, peak)

  # What the optimizer's element-wise update costs: the same epoch with plain SGD.
  one_epoch = dataclasses.replace(cfg, epochs=1)
  sgd = dataclasses.replace(one_epoch, optimizer=lambda learning_rate: optax.sgd(learning_rate))
  seconds = {}
  for name, variant in (("adam", one_epoch), ("sgd", sgd)):
    timed(lambda: jaxens_vmapped(variant, splits))
    seconds[name], _ = timed(lambda: jaxens_vmapped(variant, splits))
  epoch_gflop = total_gflop / args.epochs
  print(f"\nOne epoch of E={args.members}, compile excluded: Adam {seconds['adam']:.2f} s "
        f"({100 * epoch_gflop / seconds['adam'] / peak:.0f}% of the matmul rate), "
        f"SGD {seconds['sgd']:.2f} s ({100 * epoch_gflop / seconds['sgd'] / peak:.0f}%); "
        f"Adam's update costs {1e3 * (seconds['adam'] - seconds['sgd']) / n_steps:.3f} ms of "
        f"each {1e3 * seconds['adam'] / n_steps:.3f} ms step")
  matmuls = step_matmul_gflops(MODEL, cfg.batch_size, args.members)
  print(f"The step's matmuls alone (E={args.members}, batch {cfg.batch_size}, no activation, "
        f"loss or update): {matmuls:.1f} GFLOP/s, {100 * matmuls / peak:.0f}% of the matmul rate")


if __name__ == "__main__":
  main()
