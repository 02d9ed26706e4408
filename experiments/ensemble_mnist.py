"""E1: the MNIST pool of 10 MLPs trained as one vmapped run, then greedy ensemble selection.

    python -m experiments.ensemble_mnist [--config=configs/ensemble_mnist.py] \\
        [--config.<field>=<value>] [--workdir=runs/ensemble_mnist]

Trains the published pool (784-100-100-100-10 ReLU, Adam 1e-3, batch 32, 3 epochs, 25% of the
training set held out), keeps each member's best-validation-loss checkpoint, and writes:
- ``summary.json``: per-member validation and test loss and accuracy, wall times;
- ``metrics.csv`` and ``tensorboard/``: every member's training and validation metrics per
  epoch;
- ``predictions.npz``: validation and test probabilities (E, N, C) and labels, for selection;
- ``members.png``: per-member validation and test loss and accuracy (M0...M9);
- ``curves.png``: training and validation loss per epoch;
- ``selection_weights.png``: the greedy weights per step, selecting on log-loss and accuracy;
- ``selection_loss.png`` and ``selection_accuracy.png``: the ensemble's log-loss and accuracy
  per step on validation and test, against the best single member and the plain average.

Selection (Caruana et al. 2004) runs on the validation probabilities with ``init_size=1``
and replacement, ``max_iter=10`` as published plus a longer run; each step's weights are then
evaluated on the test set.
"""

import dataclasses
import functools
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import _mnist  # noqa: E402
from experiments import app  # noqa: E402
from experiments import reporting  # noqa: E402
from experiments import training  # noqa: E402
from jaxens import ensemble  # noqa: E402
from jaxens import losses  # noqa: E402
from jaxens import nn  # noqa: E402
from jaxens import select  # noqa: E402
from jaxens import sharpness  # noqa: E402


@dataclasses.dataclass
class Config(_mnist.MnistData, training.Training):
  """The published E1 pool: 10 MLPs, Adam 1e-3, batch 32, 3 epochs.

  ``init="torch"`` because the published members are PyTorch MLPs.
  """
  sizes: tuple = (784, 100, 100, 100, 10)
  activation: str = "relu"
  init: str = "torch"
  selection_losses: tuple = ("log_loss", "accuracy")
  max_iter: int = 10
  long_max_iter: int = 100
  # Keskar sharpness of every member on the training set, then sharpness-aware selection:
  # the score of an ensemble is its log-loss plus lambda times its weighted mean sharpness.
  sharpness_epsilon: float = 1e-3
  sharpness_steps: int = 10
  penalty_weights: tuple = (0.0, 1e-3, 1e-2, 1e-1)

  def model(self):
    return nn.MLPConfig(sizes=self.sizes, activation=self.activation, init=self.init)

  def train_config(self):
    return super().train_config(self.model())


def run(config, workdir):
  """Trains the pool, evaluates every member, writes the artefacts; returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  splits = _mnist.load(config)
  train_config = config.train_config()
  with reporting.Stopwatch() as train_time:
    result = ensemble.train(train_config, splits)
    result.best_params["dense_0"]["kernel"].block_until_ready()
  val_probs = np.asarray(ensemble.predict(train_config, result.best_params, result.best_state,
                                          splits.val[0]))
  test_probs = np.asarray(ensemble.predict(train_config, result.best_params, result.best_state,
                                           splits.test[0]))
  y_val, y_test = splits.val[1], splits.test[1]
  np.savez_compressed(os.path.join(workdir, "predictions.npz"), val_probs=val_probs,
                      val_labels=y_val, test_probs=test_probs, test_labels=y_test)
  members = [{
      "member": int(m),
      "best_epoch": int(result.best_epoch[i]),
      "diverged": bool(result.diverged[i]),
      "val_loss": float(losses.log_loss(val_probs[i], y_val)),
      "val_accuracy": float(losses.accuracy(val_probs[i], y_val)),
      "test_loss": float(losses.log_loss(test_probs[i], y_test)),
      "test_accuracy": float(losses.accuracy(test_probs[i], y_test)),
  } for i, m in enumerate(result.members)]
  selection = {
      loss: {max_iter: _select(val_probs, y_val, test_probs, y_test, loss, max_iter)
             for max_iter in (config.max_iter, config.long_max_iter)}
      for loss in config.selection_losses}
  summary = {
      "experiment": "E1 pool: 10 MLPs trained as one vmapped run, then greedy selection",
      "config": config,
      "n_train": int(splits.train[0].shape[0]),
      "train_seconds_including_compile": train_time.seconds,
      "members": members,
      "history": result.history,
      "best_single_test_accuracy": max(m["test_accuracy"] for m in members),
      "mean_test_accuracy": float(np.mean([m["test_accuracy"] for m in members])),
      "ensembles": _ensemble_table(members, val_probs, y_val, test_probs, y_test, selection,
                                   config.max_iter, config.long_max_iter),
      "selection": {loss: {str(k): v for k, v in paths.items()} for loss, paths in selection.items()},
  }
  summary["sharpness"] = _sharpness_study(config, result, splits, members, val_probs, test_probs,
                                          selection["log_loss"][config.max_iter]["weights"][-1])
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, reporting.history_rows(result.history))
  _plot_members(members, os.path.join(workdir, "members.png"))
  _plot_curves(result.history, os.path.join(workdir, "curves.png"))
  _plot_selection_weights(selection, config.long_max_iter,
                          os.path.join(workdir, "selection_weights.png"))
  for metric in ("loss", "accuracy"):
    _plot_selection_metric(summary["ensembles"], selection, config.long_max_iter, metric,
                           os.path.join(workdir, f"selection_{metric}.png"))
  return summary


def _sharpness_study(config, result, splits, members, val_probs, test_probs, greedy_weights):
  """Each member's Keskar sharpness, its correlation with test loss and selection weight, and
  plain against sharpness-aware selection on the test set."""
  model_cfg = config.train_config().model

  def member_sharpness(params, state):
    return sharpness.keskar(functools.partial(ensemble.eval_loss, model_cfg, state), params,
                            (splits.train.x, splits.train.y), epsilon=config.sharpness_epsilon,
                            steps=config.sharpness_steps)

  with reporting.Stopwatch() as timer:
    result_sharpness = jax.vmap(member_sharpness)(result.best_params, result.best_state)
    phi = np.asarray(result_sharpness.value, np.float64)
  for member, value in zip(members, phi):
    member["sharpness"] = float(value)
  test_loss = np.array([m["test_loss"] for m in members])
  y_val, y_test = splits.val.y, splits.test.y
  comparison = {}
  for weight in config.penalty_weights:
    chosen = select.greedy(val_probs, y_val, loss="log_loss", max_iter=config.max_iter,
                           penalty=phi, penalty_weight=weight)
    final = np.asarray(chosen.final_weights)
    val_loss, val_acc = _metrics(np.einsum("m,mnc->nc", final, val_probs), y_val)
    test_loss_w, test_acc = _metrics(np.einsum("m,mnc->nc", final, test_probs), y_test)
    comparison[str(weight)] = {
        "weights": final, "mean_sharpness": float(final @ phi), "val_loss": float(val_loss),
        "val_accuracy": float(val_acc), "test_loss": float(test_loss_w),
        "test_accuracy": float(test_acc)}
  return {
      "epsilon": config.sharpness_epsilon, "steps": config.sharpness_steps,
      "solver": result_sharpness.solver, "passes_per_member": result_sharpness.n_passes,
      "seconds_all_members": timer.seconds,
      "per_member": phi,
      "pearson_with_test_loss": _pearson(phi, test_loss),
      "spearman_with_test_loss": _pearson(_ranks(phi), _ranks(test_loss)),
      "pearson_with_greedy_weight": _pearson(phi, greedy_weights),
      "selection_by_penalty_weight": comparison,
  }


def _pearson(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.std() == 0 or b.std() == 0:
    return float("nan")
  return float(np.corrcoef(a, b)[0, 1])


def _ranks(values):
  return np.argsort(np.argsort(values)).astype(np.float64)


def _metrics(probs, labels):
  """(log-loss, accuracy) of ``probs`` (..., N, C): the same functions selection optimises."""
  return (np.asarray(losses.log_loss(probs, labels), np.float64),
          np.asarray(losses.accuracy(probs, labels), np.float64))


def _select(val_probs, y_val, test_probs, y_test, loss, max_iter):
  """Greedy selection on validation; every step's weights evaluated on validation and test."""
  selection = select.greedy(val_probs, y_val, loss=loss, init_size=1, replacement=True,
                            max_iter=max_iter)
  weights = np.asarray(selection.weights)
  path = {"weights": weights, "order": np.asarray(selection.order),
          "selection_score": np.asarray(selection.loss)}
  for split, probs, labels in (("val", val_probs, y_val), ("test", test_probs, y_test)):
    ensemble_probs = np.einsum("tm,mnc->tnc", weights, probs)
    path[f"{split}_loss"], path[f"{split}_accuracy"] = _metrics(ensemble_probs, labels)
  return path


def _ensemble_table(members, val_probs, y_val, test_probs, y_test, selection, max_iter,
                    long_max_iter):
  """Best single member, plain average and greedy ensembles on validation and test."""
  best = min(members, key=lambda m: m["val_loss"])
  rows = {f"best single (M{best['member']}, by val loss)": {
      k: best[k] for k in ("val_loss", "val_accuracy", "test_loss", "test_accuracy")}}
  average = {}
  for split, probs, labels in (("val", val_probs, y_val), ("test", test_probs, y_test)):
    average[f"{split}_loss"], average[f"{split}_accuracy"] = map(float, _metrics(probs.mean(0), labels))
  rows["plain average"] = average
  for loss, paths in selection.items():
    for steps in (max_iter, long_max_iter):
      rows[f"greedy on {loss}, {steps} steps"] = {
          k: float(paths[steps][k][-1])
          for k in ("val_loss", "val_accuracy", "test_loss", "test_accuracy")}
  return rows


def _plot_selection_weights(selection, steps, path):
  fig, axes = plt.subplots(1, len(selection), figsize=(6 * len(selection), 4), squeeze=False)
  for ax, (loss, paths) in zip(axes[0], selection.items()):
    weights = paths[steps]["weights"]
    image = ax.imshow(weights.T, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("selection step")
    ax.set_ylabel("member")
    ax.set_yticks(range(weights.shape[1]), [f"M{i}" for i in range(weights.shape[1])])
    ax.set_title(f"greedy weights, selecting on {loss}")
    fig.colorbar(image, ax=ax)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot_selection_metric(table, selection, steps, metric, path):
  fig, axes = plt.subplots(1, len(selection), figsize=(6 * len(selection), 4), squeeze=False)
  best_name = next(name for name in table if name.startswith("best single"))
  for ax, (loss, paths) in zip(axes[0], selection.items()):
    for color, split in (("C0", "val"), ("C1", "test")):
      ax.plot(paths[steps][f"{split}_{metric}"], color=color, label=f"greedy, {split}")
      ax.axhline(table[best_name][f"{split}_{metric}"], color=color, linestyle=":",
                 label=f"best single, {split}")
      ax.axhline(table["plain average"][f"{split}_{metric}"], color=color, linestyle="--",
                 label=f"plain average, {split}")
    ax.set_xlabel("selection step")
    ax.set_ylabel("log-loss" if metric == "loss" else "accuracy")
    ax.set_title(f"ensemble {metric} per step, selecting on {loss}")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot_members(members, path):
  names = [f"M{m['member']}" for m in members]
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  positions = np.arange(len(names))
  for ax, metric in zip(axes, ("loss", "accuracy")):
    for offset, split in ((-0.2, "val"), (0.2, "test")):
      ax.bar(positions + offset, [m[f"{split}_{metric}"] for m in members], width=0.4,
             label=split)
    ax.set_xticks(positions, names)
    ax.set_title(f"best-checkpoint {metric} per member")
    values = [m[f"{s}_{metric}"] for m in members for s in ("val", "test")]
    spread = max(values) - min(values)
    ax.set_ylim(min(values) - spread - 1e-3, max(values) + spread + 1e-3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot_curves(history, path):
  fig, ax = plt.subplots(figsize=(6, 4))
  reporting.plot_members(ax, history["train_loss"], "train (epoch mean)", color="C0")
  reporting.plot_members(ax, history["val_loss"], "validation", color="C1")
  ax.set_xlabel("epoch")
  ax.set_ylabel("log-loss")
  ax.set_xticks(np.arange(1, history["train_loss"].shape[1] + 1))
  ax.legend()
  ax.set_title("loss per epoch, every member")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def print_summary(summary):
  rows = [(f"M{m['member']}", m["best_epoch"] + 1, f"{m['val_loss']:.4f}", f"{m['val_accuracy']:.4f}",
           f"{m['test_loss']:.4f}", f"{m['test_accuracy']:.4f}") for m in summary["members"]]
  print(reporting.markdown_table(
      ("member", "best epoch", "val loss", "val acc", "test loss", "test acc"), rows))
  ensembles = [(name, *(f"{row[k]:.4f}" for k in ("val_loss", "val_accuracy", "test_loss",
                                                   "test_accuracy")))
               for name, row in summary["ensembles"].items()]
  print()
  print(reporting.markdown_table(("ensemble", "val loss", "val acc", "test loss", "test acc"), ensembles))
  study = summary["sharpness"]
  print(f"\nKeskar sharpness (eps {study['epsilon']}, {study['steps']} {study['solver']} steps, "
        f"{study['passes_per_member']} passes per member, {study['seconds_all_members']:.1f} s for "
        f"all members): " + ", ".join(f"M{m['member']} {m['sharpness']:.3f}"
                                      for m in summary["members"]))
  print(f"correlation of sharpness with test loss: Pearson {study['pearson_with_test_loss']:.2f}, "
        f"Spearman {study['spearman_with_test_loss']:.2f}; with the greedy log-loss weight: "
        f"Pearson {study['pearson_with_greedy_weight']:.2f}")
  rows = [(weight, f"{row['mean_sharpness']:.3f}", f"{row['val_loss']:.4f}",
           f"{row['val_accuracy']:.4f}", f"{row['test_loss']:.4f}", f"{row['test_accuracy']:.4f}")
          for weight, row in study["selection_by_penalty_weight"].items()]
  print(reporting.markdown_table(("lambda (0 = plain greedy)", "weighted sharpness", "val loss",
                             "val acc", "test loss", "test acc"), rows))
  print(f"\nbest single test accuracy {summary['best_single_test_accuracy']:.4f}; "
        f"mean {summary['mean_test_accuracy']:.4f}; train() took "
        f"{summary['train_seconds_including_compile']:.1f} s including compilation "
        f"({summary['n_train']} training examples).")


if __name__ == "__main__":
  app.main("ensemble_mnist", Config, run, print_summary)
