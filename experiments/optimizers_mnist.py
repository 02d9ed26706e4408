"""E2 optimizers: the six jaxens optimizers against optax and torch.optim on MNIST.

    python -m experiments.optimizers_mnist [--config=configs/optimizers_mnist.py] \\
        [--config.<field>=<value>] [--workdir=runs/optimizers_mnist]

Trains the seed MLP (784-100-100-100-10 ReLU, batch 32) with momentum, Nesterov, RMSProp,
Adam, AdaGrad and AdaDelta, each three times from the same initial weights and the same
order of examples: with ``jaxens.optim``, with optax's built-in optimizer, and with
``torch.optim`` (when torch is installed). Each library gets the hyperparameters that make
it compute the same update: ``SETTINGS`` gives jaxens' arguments, and the table of exact
equivalents (``jaxens.optim.equivalent``) translates them for optax and torch. Everything
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
- ``metrics.csv`` and ``tensorboard/`` (one run per optimizer and library): training loss
  and validation loss and accuracy at every evaluation;
- ``curves.png``: training loss (mean over each ``eval_every`` steps) and validation
  accuracy per optimizer, jaxens and the references overlaid;
- ``param_difference.png``: the largest parameter difference from jaxens against steps.

The parameter differences are float32 rounding amplified by training: optax computes
some updates in a different order (e.g. ``g * (1 / d)`` for ``g / d``) and torch sums
its matrix products in its own order, and the differences grow along the trajectory.
"""

import dataclasses
import functools
import math
import os
from typing import Callable, NamedTuple, Optional

from absl import logging

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments import _mnist  # noqa: E402
from experiments import app  # noqa: E402
from experiments import baselines  # noqa: E402
from experiments import reporting  # noqa: E402
from jaxens import _validation  # noqa: E402
from jaxens import ensemble  # noqa: E402
from jaxens import nn  # noqa: E402
from jaxens import optim  # noqa: E402

# name -> jaxens' arguments; optax's and torch's come from ``optim.equivalent``.
SETTINGS = {
    "momentum": dict(learning_rate=0.01, mu=0.9),
    "nesterov": dict(learning_rate=0.01, mu=0.9),
    "rmsprop": dict(learning_rate=1e-3, rho=0.9, eps=1e-8),
    "adam": dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8),
    # eps=0 is the one setting where optax's eps-inside and torch's eps-outside agree.
    "adagrad": dict(learning_rate=0.01, eps=0.0, initial_accumulator=0.1),
    "adadelta": dict(learning_rate=1.0, rho=0.95, eps=1e-6),
}
LIBRARIES = ("jaxens", "optax", "torch")


@dataclasses.dataclass
class Config(_mnist.MnistData):
  """A reduced-scale CPU run: one epoch of the seed MLP per optimizer and library.

  Attributes:
    sizes, activation: the MLP (no norm, no dropout, so that torch can mirror it).
    optimizers: names from ``SETTINGS``.
    batch_size, epochs: the training run.
    eval_every: steps between evaluations (1407 steps = 21 x 67).
    seed: initial weights and order of examples.
    use_torch: compare with torch.optim too, when torch is installed.
    torch_threads: torch's OpenMP pool thrashes on a shared 2-core machine (115 ms a step
      with 2 threads, 0.7 ms with 1, measured here); XLA keeps its own threads.
  """
  sizes: tuple = (784, 100, 100, 100, 10)
  activation: str = "relu"
  optimizers: tuple = tuple(SETTINGS)
  batch_size: int = 32
  epochs: int = 1
  eval_every: int = 67
  seed: int = 0
  use_torch: bool = True
  torch_threads: int = 1
  n_test: Optional[int] = 0

  def __post_init__(self):
    unknown = set(self.optimizers) - set(SETTINGS)
    if unknown:
      raise ValueError(f"optimizers: unknown {sorted(unknown)}; expected names from "
                       f"{tuple(SETTINGS)}")
    for name in ("batch_size", "epochs", "eval_every", "torch_threads"):
      _validation.check_int(name, getattr(self, name), 1)

  def model(self):
    return nn.MLPConfig(sizes=self.sizes, activation=self.activation)


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
  chunk = baselines.scan_steps(baselines.optax_step(baselines.mlp_loss(model, state), opt))
  carry = [(params, opt.init(params))]
  compiled = {  # ahead of time, so that step times exclude compilation
      shape: jax.jit(chunk).lower(
          *carry[0], jax.ShapeDtypeStruct(shape + train.x.shape[1:], train.x.dtype),
          jax.ShapeDtypeStruct(shape, train.y.dtype)).compile()
      for shape in set(chunk_shapes)}
  for shape, executable in compiled.items():  # a first, discarded call: warm-up
    jax.block_until_ready(executable(*carry[0], train.x[np.zeros(shape, int)],
                                     train.y[np.zeros(shape, int)]))

  def run(indices):
    *new_carry, chunk_losses = compiled[indices.shape](*carry[0], train.x[indices],
                                                       train.y[indices])
    carry[0] = tuple(new_carry)
    return np.asarray(chunk_losses)

  return Trainer(params=lambda: carry[0][0], run=run)


def torch_trainer(torch, make_opt, model, params, train):
  """The same training in torch, starting from the same ``params``."""
  module = baselines.torch_mlp(torch, model, params)
  opt = make_opt(module.parameters())
  x_train, y_train = torch.from_numpy(train.x), torch.from_numpy(train.y.astype(np.int64))
  torch.nn.functional.cross_entropy(module(x_train[:32]), y_train[:32]).backward()  # warm-up

  def run(indices):
    chunk_losses = []
    for batch in torch.from_numpy(indices):
      opt.zero_grad()  # also clears the warm-up's gradients
      loss = torch.nn.functional.cross_entropy(module(x_train[batch]), y_train[batch])
      loss.backward()
      opt.step()
      chunk_losses.append(loss.item())
    return np.asarray(chunk_losses)

  return Trainer(params=lambda: baselines.torch_mlp_params(module), run=run)


def train_side_by_side(trainers, order, eval_every, evaluate):
  """Runs the trainers chunk by chunk, alternating which goes first, so that a change in the
  machine's load hits them alike. Returns ``{library: record}`` and the parameter paths."""
  records = {lib: _new_record(evaluate(t.params())) for lib, t in trainers.items()}
  paths = {lib: [_flat(t.params())] for lib, t in trainers.items()}
  for k, (a, b) in enumerate(_chunks(len(order), eval_every)):
    for lib in (list(trainers) if k % 2 == 0 else list(trainers)[::-1]):
      with reporting.Stopwatch() as watch:
        chunk_losses = trainers[lib].run(order[a:b])
      records[lib]["seconds"] += watch.seconds
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
  splits = _mnist.load(config)
  torch = _import_torch(config.torch_threads) if config.use_torch else None
  libraries = LIBRARIES if torch is not None else LIBRARIES[:2]
  model = config.model()
  params, state = nn.mlp_init(jax.random.PRNGKey(config.seed), model)
  order = batch_order(len(splits.train.y), config.batch_size, config.epochs, config.seed)
  evaluate = _evaluator(model, state, jnp.asarray(splits.val.x), jnp.asarray(splits.val.y))
  eval_steps = [0] + [b for _, b in _chunks(len(order), config.eval_every)]

  chunk_shapes = [order[a:b].shape for a, b in _chunks(len(order), config.eval_every)]
  results = {}
  for name in config.optimizers:
    kwargs = SETTINGS[name]
    trainers = {
        library: jax_trainer(make(), model, params, state, splits.train, chunk_shapes)
        for library, make in (("jaxens", functools.partial(getattr(optim, name), **kwargs)),
                              ("optax", optim.equivalent(name, "optax", **kwargs)))}
    if torch is not None:
      trainers["torch"] = torch_trainer(torch, optim.equivalent(name, "torch", **kwargs),
                                        model, params, splits.train)
    runs, paths = train_side_by_side(trainers, order, config.eval_every, evaluate)
    for library in libraries[1:]:
      runs[library]["max_param_difference"] = [
          float(np.max(np.abs(ours - theirs)))
          for ours, theirs in zip(paths["jaxens"], paths[library])]
    results[name] = runs
    logging.info("%s: done", name)

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
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, _metric_rows(results, eval_steps))
  _plot_curves(results, libraries, eval_steps, os.path.join(workdir, "curves.png"))
  _plot_differences(results, libraries, eval_steps, os.path.join(workdir, "param_difference.png"))
  return summary


def _metric_rows(results, eval_steps):
  """Rows for ``metrics.csv``: one run per optimizer and library, one row per evaluation."""
  rows = []
  for name, runs in results.items():
    for library, record in runs.items():
      for k, step in enumerate(eval_steps):
        row = {"run": f"{name}/{library}", "member": 0, "step": step,
               "val_loss": record["val_loss"][k], "val_accuracy": record["val_accuracy"][k]}
        if k:  # the mean training loss of the steps since the last evaluation
          row["train_loss"] = record["train_loss"][k - 1]
        rows.append(row)
  return rows


def _import_torch(threads):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.warning("torch is not installed: comparing with optax only")
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
  print(reporting.markdown_table(_table_headers(summary["libraries"]), summary["table"]))
  print(f"\n{summary['steps']} steps of batch {summary['config'].batch_size} on "
        f"{summary['n_train']} training images; validation accuracy on {summary['n_val']}. "
        "Δθ: largest parameter difference from jaxens after the last step. Step times exclude "
        f"compilation; torch ran on {summary['config'].torch_threads} thread(s) "
        "(reduced-scale CPU run).")


if __name__ == "__main__":
  app.main("optimizers_mnist", Config, run, print_summary)
