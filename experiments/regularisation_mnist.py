"""E2 regularisation: the textbook chapter's three runs of a wide MLP on MNIST.

    python -m experiments.regularisation_mnist [--config=configs/regularisation_mnist.py[:gpu]]
        [--config.<field>=<value> ...] [--workdir=runs/regularisation_mnist]

The chapter's network, 784 -> 2048 -> 1024 -> 1024 -> 10 (ReLU, softmax), trains on the 60,000
training images at batch 256, with the 10,000 test images as its validation set, as published,
in three regimes:

- **none**: Glorot-uniform weights (Keras' default), Adam at ``none_lr`` with the legacy Keras
  ``decay`` (``optim.inverse_time_decay``);
- **dropout**: dropout ``input_dropout`` on the inputs and ``hidden_dropout`` after every hidden
  layer, weights uniform in [-``uniform_init``, ``uniform_init``], max-norm ``max_norm`` on
  every unit's incoming weights after each step, SGD at ``dropout_lr`` with Keras' momentum
  ``momentum`` (the rate inside the buffer);
- **batchnorm**: BN after every hidden Dense layer except the first, before its ReLU, and before
  the softmax (Keras' BN: momentum 0.99, epsilon 1e-3), Adam at ``batchnorm_lr`` with ``decay``.

Each regime trains its ``n_seeds`` seeds as one vmapped ensemble (member ``i`` of every regime
starts from ``fold_in(PRNGKey(seed), i)`` and shuffles with it). Per epoch, the history holds
the training loss and accuracy (means over the epoch's minibatches in training mode, as Keras
logs them) and the validation loss and accuracy (evaluation mode). Writes ``summary.json``,
``metrics.csv`` (run = regime, step = epoch), ``tensorboard/``, ``loss_curves.png`` and
``accuracy_curves.png`` (the chapter's curves, one panel per regime, mean +- std over seeds).

The default is this machine's size: 30 epochs of one seed (the three regimes take about 31 min
on 2 cores, half again the 20 min the budget allows; three seeds would take about an hour).
``gpu`` is the published 200 epochs, with three seeds.

Choices the chapter leaves open: the max-norm constraint also holds the output layer's kernel
(``nn.max_norm`` constrains every kernel); biases start at zero.

Reference:
  Srivastava et al., 2014, Dropout (https://jmlr.org/papers/v15/srivastava14a.html).
  Ioffe & Szegedy, 2015, Batch Normalization (https://arxiv.org/abs/1502.03167).
"""

import dataclasses
import os

from absl import logging
import matplotlib
import numpy as np

from experiments import _mnist
from experiments import app
from experiments import reporting
from jaxens import _validation
from jaxens import data as data_lib
from jaxens import ensemble
from jaxens import nn
from jaxens import optim

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REGIMES = ("none", "dropout", "batchnorm")
#: The chapter's final validation accuracy and loss after 200 epochs.
PUBLISHED = {"none": (0.9845, 0.138), "dropout": (0.9875, 0.051), "batchnorm": (0.989, 0.072)}


@dataclasses.dataclass
class Config(_mnist.MnistData):
  """The chapter's runs; MNIST as in :class:`_mnist.MnistData` with ``val_fraction=0``: the
  whole training set trains and the test set validates.

  Attributes:
    hidden: the hidden widths.
    regimes: which of ``REGIMES`` to run.
    n_seeds: seeds per regime, one vmapped ensemble each.
    epochs, batch_size: the training run.
    seed: member ``i`` starts from ``fold_in(PRNGKey(seed), i)``.
    decay: the Keras ``decay`` of both Adam runs.
    none_lr: Adam's rate without regularisation.
    dropout_lr, momentum: SGD with momentum in the dropout run.
    input_dropout, hidden_dropout: the dropout run's rates.
    uniform_init: the dropout run's weights are uniform in [-uniform_init, uniform_init].
    max_norm: the dropout run's max-norm radius.
    batchnorm_lr: Adam's rate in the BN run.
  """
  val_fraction: float = 0.0
  hidden: tuple = (2048, 1024, 1024)
  regimes: tuple = REGIMES
  n_seeds: int = 1
  epochs: int = 30
  batch_size: int = 256
  seed: int = 0
  decay: float = 1e-6
  none_lr: float = 1e-4
  dropout_lr: float = 0.1
  momentum: float = 0.9
  input_dropout: float = 0.25
  hidden_dropout: float = 0.5
  uniform_init: float = 0.05
  max_norm: float = 2.0
  batchnorm_lr: float = 1e-3

  def __post_init__(self):
    unknown = set(self.regimes) - set(REGIMES)
    if unknown or not self.regimes:
      raise ValueError(f"regimes: expected a non-empty subset of {REGIMES}, got {self.regimes}")
    for name in ("n_seeds", "epochs", "batch_size"):
      _validation.check_int(name, getattr(self, name), 1)

  def train_config(self, regime):
    """The ``TrainConfig`` of one regime."""
    sizes = (784, *self.hidden, 10)
    common = dict(n_members=self.n_seeds, batch_size=self.batch_size, epochs=self.epochs,
                  seed=self.seed, keep="last", optimizer_kwargs=None)
    if regime == "none":
      return ensemble.TrainConfig(
          nn.MLPConfig(sizes=sizes), optimizer=optim.adam(
              optim.inverse_time_decay(self.none_lr, self.decay)), **common)
    if regime == "dropout":
      return ensemble.TrainConfig(
          nn.MLPConfig(sizes=sizes, dropout=self.hidden_dropout,
                       input_dropout=self.input_dropout, init=f"uniform:{self.uniform_init}"),
          optimizer=optim.momentum(self.dropout_lr, mu=self.momentum, lr_in_buffer=True),
          max_norm=self.max_norm, **common)
    return ensemble.TrainConfig(
        nn.MLPConfig(sizes=sizes, norm="batch", norm_position="pre",
                     norm_layers=tuple(range(1, len(self.hidden))), norm_logits=True),
        optimizer=optim.adam(optim.inverse_time_decay(self.batchnorm_lr, self.decay)), **common)


def gpu():
  """The published 200 epochs, three seeds per regime."""
  return Config(n_seeds=3, epochs=200)


def splits_for(config):
  """The whole training set to train, the test set to validate (and test)."""
  splits = _mnist.load(config)
  return data_lib.Splits(splits.train, splits.test, splits.test)


def run(config, workdir):
  """Trains the regimes one after another; returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  splits = splits_for(config)
  histories, seconds, diverged = {}, {}, {}
  for regime in config.regimes:
    with reporting.Stopwatch() as watch:
      result = ensemble.train(config.train_config(regime), splits)
    seconds[regime] = watch.seconds
    histories[regime] = {name: np.asarray(values) for name, values in result.history.items()}
    diverged[regime] = np.asarray(result.diverged)
    if diverged[regime].any():
      logging.warning("%s: members %s diverged and were frozen at their last finite epoch",
                      regime, np.flatnonzero(diverged[regime]))
  summary = {
      "experiment": "E2 regularisation: the chapter's 784-2048-1024-1024-10 MLP on MNIST",
      "config": config, "n_train": len(splits.train.y), "n_val": len(splits.val.y),
      "train_seconds_including_compile": seconds, "diverged": diverged, "history": histories,
      "patterns": {regime: patterns(history) for regime, history in histories.items()},
      "table": table_rows(histories, seconds)}
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, [row for regime, history in histories.items()
                                    for row in reporting.history_rows(history, run=regime)])
  for metric in ("loss", "accuracy"):
    plot_curves(histories, metric, os.path.join(workdir, f"{metric}_curves.png"))
  return summary


def patterns(history):
  """The curve shapes the chapter describes, from the mean over seeds: the epoch (1-based) of
  the lowest validation loss, how far the last epoch's loss has risen above it, the trend of
  the validation loss over the last third of the epochs (least-squares slope per 10 epochs:
  positive for the rising arm of a U, near zero for a loss that only fluctuates), and the last
  epoch's train-minus-validation accuracy gap."""
  val_loss = history["val_loss"].mean(axis=0)
  lowest = int(np.argmin(val_loss))
  last_third = val_loss[-max(2, len(val_loss) // 3):]
  slope = np.polyfit(np.arange(len(last_third)), last_third, 1)[0]
  return {"lowest_val_loss_epoch": lowest + 1,
          "lowest_val_loss": float(val_loss[lowest]),
          "val_loss_rise_after_lowest": float(val_loss[-1] - val_loss[lowest]),
          "val_loss_trend_last_third_per_10_epochs": float(10 * slope),
          "final_train_minus_val_accuracy": float(
              np.mean(history["train_accuracy"][:, -1] - history["val_accuracy"][:, -1]))}


def table_rows(histories, seconds):
  rows = []
  for regime, history in histories.items():
    shape = patterns(history)
    rows.append([regime, f"{PUBLISHED[regime][0]:.4f}",
                 reporting.mean_std(history["val_accuracy"][:, -1]),
                 f"{PUBLISHED[regime][1]:.3f}",
                 reporting.mean_std(history["val_loss"][:, -1], 3),
                 reporting.mean_std(history["train_accuracy"][:, -1]),
                 f"{shape['lowest_val_loss_epoch']} ({shape['lowest_val_loss']:.3f})",
                 f"{shape['val_loss_rise_after_lowest']:+.3f}",
                 f"{shape['val_loss_trend_last_third_per_10_epochs']:+.4f}",
                 f"{seconds[regime]:.0f}"])
  return rows


TABLE_HEADERS = ("regime", "published val acc (200 ep.)", "val acc", "published val loss",
                 "val loss", "train acc", "lowest val loss: epoch (value)",
                 "val loss rise after it", "val loss trend, last third (per 10 epochs)",
                 "train s")


def plot_curves(histories, metric, path):
  """One panel per regime: training and validation ``metric`` against epochs."""
  fig, axes = plt.subplots(1, len(histories), figsize=(4.5 * len(histories), 3.6),
                           squeeze=False, sharey=metric == "accuracy")
  for ax, (regime, history) in zip(axes[0], histories.items()):
    epochs = np.arange(1, history["val_loss"].shape[1] + 1)
    for split in ("train", "val"):
      reporting.plot_band(ax, epochs, history[f"{split}_{metric}"], split)
    ax.set_title(regime)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def print_summary(summary):
  print(reporting.markdown_table(TABLE_HEADERS, summary["table"]))
  config = summary["config"]
  print(f"\n{config.epochs} epochs, {config.n_seeds} seed(s) per regime (mean ± std over "
        f"seeds), batch {config.batch_size}, {summary['n_train']} training images, the "
        f"{summary['n_val']} test images as validation; the published values are after 200 "
        "epochs.")


if __name__ == "__main__":
  app.main("regularisation_mnist", Config, run, print_summary)
