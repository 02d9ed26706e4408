"""E2 optimizers: the six jaxens optimizers against optax and torch.optim on MNIST.

    python -m experiments.optimizers_mnist --workdir runs/optimizers_mnist [--config.<field>=<value>]

Trains the seed MLP (784-100-100-100-10 ReLU, batch 32) with momentum, Nesterov, RMSProp,
Adam, AdaGrad and AdaDelta, each three times from the same initial weights and the same
order of examples: with ``jaxens.optim``, with optax's built-in optimizer, and with
``torch.optim`` (when torch is installed). Each library gets the hyperparameters that make
it compute the same update (``SETTINGS``). Everything
runs in float32. The three runs advance side by side, ``eval_every`` steps at a time in
alternating order, so that changes in the load of a shared machine hit them alike; torch
runs on ``torch_threads`` threads.

The default is a reduced-scale CPU run: one epoch (1407 steps) on the 45,000 training
images, validation on the 15,000 held out (``val_fraction=0.25``), a few minutes on 2
cores. Writes:

- ``summary.json``: per optimizer and library, the validation accuracy and loss after
  training, the mean training loss of the last ``eval_every`` steps, the step time
  (compilation excluded), and the largest parameter difference from jaxens at every
  evaluation;
- ``curves.png``: training loss (mean over each ``eval_every`` steps) and validation
  accuracy per optimizer, jaxens and the references overlaid;
- ``param_difference.png``: the largest parameter difference from jaxens against steps.

The parameter differences are float32 rounding amplified by training: optax computes
some updates in a different order (e.g. ``g * (1 / d)`` for ``g / d``) and torch sums
its matrix products in its own order, and the differences grow along the trajectory.
"""

import dataclasses
import math
import os
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from experiments import _cli  # noqa: E402
from jaxens import data as data_lib  # noqa: E402
from jaxens import ensemble  # noqa: E402
from jaxens import losses  # noqa: E402
from jaxens import nn  # noqa: E402
from jaxens import optim  # noqa: E402

# name -> the same update in each library: (jaxens, optax, torch given the parameters).
SETTINGS = {
    "momentum": (
        lambda: optim.momentum(0.01, mu=0.9),
        lambda: optax.sgd(0.01, momentum=0.9),
        lambda torch, p: torch.optim.SGD(p, lr=0.01, momentum=0.9)),
    "nesterov": (
        lambda: optim.nesterov(0.01, mu=0.9),
        lambda: optax.sgd(0.01, momentum=0.9, nesterov=True),
        lambda torch, p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True)),
    "rmsprop": (
        lambda: optim.rmsprop(1e-3, rho=0.9, eps=1e-8),
        lambda: optax.rmsprop(1e-3, decay=0.9, eps=1e-8, eps_in_sqrt=False),
        lambda torch, p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-8)),
    "adam": (
        lambda: optim.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8),
        lambda: optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8),
        lambda torch, p: torch.optim.Adam(p, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)),
    # eps=0 is the one setting where optax's eps-inside and torch's eps-outside agree.
    "adagrad": (
        lambda: optim.adagrad(0.01, eps=0.0, initial_accumulator=0.1),
        lambda: optax.adagrad(0.01, initial_accumulator_value=0.1, eps=0.0),
        lambda torch, p: torch.optim.Adagrad(p, lr=0.01, initial_accumulator_value=0.1, eps=0.0)),
    "adadelta": (
        lambda: optim.adadelta(1.0, rho=0.95, eps=1e-6),
        lambda: optax.adadelta(1.0, rho=0.95, eps=1e-6),
        lambda torch, p: torch.optim.Adadelta(p, lr=1.0, rho=0.95, eps=1e-6)),
}
LIBRARIES = ("jaxens", "optax", "torch")


@dataclasses.dataclass(frozen=True)
class Config:
  """A reduced-scale CPU run: one epoch of the seed MLP per optimizer and library."""
  model: nn.MLPConfig = dataclasses.field(default_factory=nn.MLPConfig)
  optimizers: tuple = tuple(SETTINGS)
  batch_size: int = 32
  epochs: int = 1
  eval_every: int = 67  # 1407 steps = 21 x 67
  seed: int = 0  # initial weights and order of examples
  use_torch: bool = True  # when torch is installed
  # torch's OpenMP pool thrashes on a shared 2-core machine (115 ms a step with 2 threads,
  # 0.7 ms with 1, measured here); XLA keeps its own threads.
  torch_threads: int = 1
  data_source: str = "auto"
  data_dir: str = None
  val_fraction: float = 0.25
  data_seed: int = 0
  n_train: int = None  # subsets for quick runs (None: the whole split)
  n_val: int = None

  def __post_init__(self):
    unknown = set(self.optimizers) - set(SETTINGS)
    if unknown:
      raise ValueError(f"optimizers: unknown {sorted(unknown)}; expected names from "
                       f"{tuple(SETTINGS)}")
    for name in ("batch_size", "epochs", "eval_every", "torch_threads"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")


def batch_order(n_train, batch_size, epochs, seed):
  """``(steps, batch_size)`` example indices: a fresh permutation every epoch, whose last
  batch is completed with the permutation's first examples."""
  rng = np.random.default_rng(seed)
  steps_per_epoch = math.ceil(n_train / batch_size)
  epochs_order = []
  for _ in range(epochs):
    permutation = rng.permutation(n_train)
    epochs_order.append(np.resize(permutation, steps_per_epoch * batch_size))
  return np.concatenate(epochs_order).reshape(-1, batch_size)


def _chunks(steps, eval_every):
  """Step ranges between evaluations: full ``eval_every`` chunks, then the remainder."""
  starts = range(0, steps, eval_every)
  return [(start, min(start + eval_every, steps)) for start in starts]


def _flat(params):
  return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(params)])


def _evaluator(model, state, x_val, y_val):
  """``params -> (val loss, val accuracy)`` in eval mode; the data goes in as arguments, not
  as constants folded into the compiled program."""
  evaluate = jax.jit(ensemble.evaluate, static_argnums=0)
  return lambda params: tuple(float(v) for v in evaluate(model, params, state, x_val, y_val))


class Trainer(NamedTuple):
  """One library's training run: ``params()`` as a jaxens pytree, ``run(indices_KxB)`` trains
  on K batches and returns their K losses."""
  params: Callable[[], dict]
  run: Callable[[np.ndarray], np.ndarray]


def jax_trainer(opt, model, params, state, train, chunk_shapes):
  """Training with an optax-style ``opt``, one jitted ``lax.scan`` per chunk of steps."""
  def loss_fn(params, x, y):
    logits, _ = nn.mlp_apply(model, params, state, x, train=True)
    return losses.log_loss_from_logits(logits, y)

  def step(carry, batch):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  def chunk(carry, x, y):
    return jax.lax.scan(step, carry, (x, y))

  carry = [(params, opt.init(params))]
  compiled = {  # ahead of time, so that step times exclude compilation
      shape: jax.jit(chunk).lower(
          carry[0], jax.ShapeDtypeStruct(shape + train.x.shape[1:], train.x.dtype),
          jax.ShapeDtypeStruct(shape, train.y.dtype)).compile()
      for shape in set(chunk_shapes)}
  for shape, executable in compiled.items():  # a first, discarded call: warm-up
    jax.block_until_ready(executable(carry[0], train.x[np.zeros(shape, int)],
                                     train.y[np.zeros(shape, int)]))

  def run(indices):
    carry[0], chunk_losses = compiled[indices.shape](carry[0], train.x[indices], train.y[indices])
    return np.asarray(chunk_losses)

  return Trainer(params=lambda: carry[0][0], run=run)


def torch_trainer(torch, make_opt, model, params, train):
  """The same training in torch; the MLP is written out from ``params`` (no dropout, no norm)."""
  weights = [(torch.tensor(np.asarray(layer["kernel"]).T.copy(), requires_grad=True),
              torch.tensor(np.asarray(layer["bias"]).copy(), requires_grad=True))
             for layer in (params[f"dense_{i}"] for i in range(len(model.sizes) - 1))]
  opt = make_opt(torch, [tensor for pair in weights for tensor in pair])
  activation = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[model.activation]
  x_train, y_train = torch.from_numpy(train.x), torch.from_numpy(train.y.astype(np.int64))

  def forward(x):
    for i, (w, b) in enumerate(weights):
      x = torch.nn.functional.linear(x, w, b)
      x = activation(x) if i < len(weights) - 1 else x
    return x

  torch.nn.functional.cross_entropy(forward(x_train[:32]), y_train[:32]).backward()  # warm-up

  def run(indices):
    chunk_losses = []
    for batch in torch.from_numpy(indices):
      opt.zero_grad()  # also clears the warm-up's gradients
      loss = torch.nn.functional.cross_entropy(forward(x_train[batch]), y_train[batch])
      loss.backward()
      opt.step()
      chunk_losses.append(loss.item())
    return np.asarray(chunk_losses)

  def as_jax():
    return {f"dense_{i}": {"kernel": w.detach().numpy().T.copy(),
                           "bias": b.detach().numpy().copy()} for i, (w, b) in enumerate(weights)}

  return Trainer(params=as_jax, run=run)


def train_side_by_side(trainers, order, eval_every, evaluate):
  """Runs the trainers chunk by chunk, alternating which goes first, so that a change in the
  machine's load hits them alike. Returns ``{library: record}`` and the parameter paths."""
  records = {lib: _new_record(evaluate(t.params())) for lib, t in trainers.items()}
  paths = {lib: [_flat(t.params())] for lib, t in trainers.items()}
  for k, (a, b) in enumerate(_chunks(len(order), eval_every)):
    for lib in (list(trainers) if k % 2 == 0 else list(trainers)[::-1]):
      start = time.perf_counter()
      chunk_losses = trainers[lib].run(order[a:b])
      records[lib]["seconds"] += time.perf_counter() - start
      _log(records[lib], chunk_losses, evaluate(trainers[lib].params()))
      paths[lib].append(_flat(trainers[lib].params()))
  return {lib: _finish(record, len(order)) for lib, record in records.items()}, paths


def _new_record(evaluation):
  return {"train_loss": [], "val_loss": [evaluation[0]], "val_accuracy": [evaluation[1]],
          "seconds": 0.0}


def _log(record, chunk_losses, evaluation):
  record["train_loss"].append(float(np.mean(chunk_losses)))
  record["val_loss"].append(evaluation[0])
  record["val_accuracy"].append(evaluation[1])


def _finish(record, steps):
  record["step_ms"] = 1e3 * record.pop("seconds") / steps
  return record


def run(config, workdir):
  """Trains every optimizer with every library, writes the artefacts; returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  splits = data_lib.load_mnist(config.data_source, config.val_fraction, config.data_seed,
                               config.data_dir)
  splits = data_lib.subset(splits, config.n_train, config.n_val, 0)
  torch = _import_torch(config.torch_threads) if config.use_torch else None
  libraries = LIBRARIES if torch is not None else LIBRARIES[:2]
  params, state = nn.mlp_init(jax.random.PRNGKey(config.seed), config.model)
  if state or config.model.stochastic:
    raise ValueError("model: this experiment trains plain MLPs only (no norm, no dropout)")
  order = batch_order(len(splits.train.y), config.batch_size, config.epochs, config.seed)
  evaluate = _evaluator(config.model, state, jnp.asarray(splits.val.x), jnp.asarray(splits.val.y))
  eval_steps = [0] + [b for _, b in _chunks(len(order), config.eval_every)]

  chunk_shapes = [order[a:b].shape for a, b in _chunks(len(order), config.eval_every)]
  results = {}
  for name in config.optimizers:
    make_jaxens, make_optax, make_torch = SETTINGS[name]
    trainers = {
        library: jax_trainer(make(), config.model, params, state, splits.train, chunk_shapes)
        for library, make in (("jaxens", make_jaxens), ("optax", make_optax))}
    if torch is not None:
      trainers["torch"] = torch_trainer(torch, make_torch, config.model, params, splits.train)
    runs, paths = train_side_by_side(trainers, order, config.eval_every, evaluate)
    for library in libraries[1:]:
      runs[library]["max_param_difference"] = [
          float(np.max(np.abs(ours - theirs)))
          for ours, theirs in zip(paths["jaxens"], paths[library])]
    results[name] = runs
    print(f"{name}: done", file=sys.stderr, flush=True)

  summary = {
      "experiment": "E2 optimizers: jaxens.optim against optax and torch.optim on MNIST",
      "config": config,
      "libraries": libraries,
      "steps": len(order),
      "n_train": int(len(splits.train.y)),
      "n_val": int(len(splits.val.y)),
      "eval_steps": eval_steps,
      "results": results,
      "table": _table_rows(results, libraries),
  }
  _cli.write_summary(workdir, summary)
  _plot_curves(results, libraries, eval_steps, os.path.join(workdir, "curves.png"))
  _plot_differences(results, libraries, eval_steps, os.path.join(workdir, "param_difference.png"))
  return summary


def _import_torch(threads):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("torch is not installed: comparing with optax only", file=sys.stderr)
    return None
  torch.set_num_threads(threads)
  return torch


def _table_headers(libraries):
  headers = ["optimizer"] + [f"val acc {lib}" for lib in libraries]
  headers += [f"max abs Δθ vs {lib}" for lib in libraries[1:]]
  headers += ["step ms jaxens"] + [f"step ratio jaxens/{lib}" for lib in libraries[1:]]
  return headers


def _table_rows(results, libraries):
  rows = []
  for name, runs in results.items():
    row = [name] + [f"{runs[lib]['val_accuracy'][-1]:.4f}" for lib in libraries]
    row += [f"{runs[lib]['max_param_difference'][-1]:.1e}" for lib in libraries[1:]]
    row += [f"{runs['jaxens']['step_ms']:.3f}"]
    row += [f"{runs['jaxens']['step_ms'] / runs[lib]['step_ms']:.2f}" for lib in libraries[1:]]
    rows.append(row)
  return rows


def _plot_curves(results, libraries, eval_steps, path):
  fig, axes = plt.subplots(2, len(results), figsize=(3.2 * len(results), 6), squeeze=False)
  styles = {"jaxens": dict(lw=2.5, alpha=0.5), "optax": dict(ls="--"), "torch": dict(ls=":")}
  for column, (name, runs) in enumerate(results.items()):
    for library in libraries:
      axes[0, column].plot(eval_steps[1:], runs[library]["train_loss"], label=library,
                           **styles[library])
      axes[1, column].plot(eval_steps, runs[library]["val_accuracy"], label=library,
                           **styles[library])
    axes[0, column].set_title(name)
    axes[1, column].set_xlabel("step")
  axes[0, 0].set_ylabel("training loss (mean between evaluations)")
  axes[1, 0].set_ylabel("validation accuracy")
  axes[0, 0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot_differences(results, libraries, eval_steps, path):
  fig, axes = plt.subplots(1, len(libraries) - 1, figsize=(5.5 * (len(libraries) - 1), 4),
                           squeeze=False)
  for ax, library in zip(axes[0], libraries[1:]):
    for name, runs in results.items():
      # Zero differences (identical float32 arithmetic) sit at the bottom of the log axis.
      ax.semilogy(eval_steps, np.maximum(runs[library]["max_param_difference"], 1e-12),
                  label=name)
    ax.set_title(f"max |θ_jaxens − θ_{library}| (float32; 1e-12 means 0)")
    ax.set_xlabel("step")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def print_summary(summary):
  print(_cli.markdown_table(_table_headers(summary["libraries"]), summary["table"]))
  print(f"\n{summary['steps']} steps of batch {summary['config'].batch_size} on "
        f"{summary['n_train']} training images; validation accuracy on {summary['n_val']}. "
        "Δθ: largest parameter difference from jaxens after the last step. Step times exclude "
        f"compilation; torch ran on {summary['config'].torch_threads} thread(s) "
        "(reduced-scale CPU run).")


def main(argv=None):
  _cli.main(Config(), run, print_summary, default_workdir="runs/optimizers_mnist", argv=argv)


if __name__ == "__main__":
  main()
