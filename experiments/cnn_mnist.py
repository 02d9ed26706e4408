"""An ensemble of Flax CNNs on MNIST, trained as one vmapped program.

    python -m experiments.cnn_mnist [--config=configs/cnn_mnist.py] [--config.<field>=<value>]

The network is the one of Flax's own ``examples/mnist``: 3x3 convolutions of 32 and 64
channels, each followed by ReLU and 2x2 average pooling, then dense 256 and dense 10, written
as an unmodified ``flax.linen`` module and wrapped by ``jaxens.models.from_linen``. MNIST is
reshaped to (N, 28, 28, 1); 25% of the training set is held out for validation, and every
member keeps its best-validation-loss checkpoint. On a CPU the convolutions run as patches and
one matmul (``from_linen(conv="auto")``), which ``vmap`` over members turns into batched
matmuls instead of a grouped convolution.
"""

import dataclasses
import os

import flax.linen as linen
import numpy as np

from experiments import _mnist
from experiments import app
from experiments import reporting
from experiments import training
from jaxens import data as data_lib
from jaxens import ensemble
from jaxens import losses
from jaxens import models


class CNN(linen.Module):
  """Flax's examples/mnist CNN; ``train`` is unused (no dropout or batch norm)."""

  @linen.compact
  def __call__(self, x, train):
    del train
    x = linen.avg_pool(linen.relu(linen.Conv(32, (3, 3))(x)), (2, 2), strides=(2, 2))
    x = linen.avg_pool(linen.relu(linen.Conv(64, (3, 3))(x)), (2, 2), strides=(2, 2))
    x = linen.relu(linen.Dense(256)(x.reshape(x.shape[0], -1)))
    return linen.Dense(10)(x)


@dataclasses.dataclass
class Config(_mnist.MnistData, training.Training):
  """MNIST as in :class:`_mnist.MnistData`; E=10 CNNs, Adam 1e-3, batch 128, 2 epochs."""
  batch_size: int = 128
  epochs: int = 2

  def train_config(self):
    return super().train_config(models.from_linen(CNN()))


def as_images(splits):
  return data_lib.Splits(*(data_lib.Examples(e.x.reshape(-1, 28, 28, 1), e.y) for e in splits))


def run(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  splits = as_images(_mnist.load(config))
  train_config = config.train_config()
  with reporting.Stopwatch() as train_time:
    result = ensemble.train(train_config, splits)
  test_probs = np.asarray(ensemble.predict(train_config, result.best_params, result.best_state,
                                           splits.test.x))
  test_accuracy = np.asarray(losses.accuracy(test_probs, splits.test.y), np.float64)
  summary = {
      "experiment": "E=10 Flax examples/mnist CNNs trained as one vmapped program",
      "config": config, "n_train": len(splits.train.y),
      "train_seconds_including_compile": train_time.seconds,
      "n_devices": result.n_devices,
      "history": result.history,
      "best_epoch": result.best_epoch,
      "member_test_accuracy": test_accuracy,
      "best_single_test_accuracy": float(test_accuracy.max()),
      "mean_test_accuracy": float(test_accuracy.mean()),
      "average_test_accuracy": float(losses.accuracy(test_probs.mean(0), splits.test.y)),
  }
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, reporting.history_rows(result.history))
  return summary


def print_summary(summary):
  print(reporting.markdown_table(
      ("member", "best epoch", "val loss", "val acc", "test acc"),
      [(f"M{i}", int(epoch) + 1, f"{summary['history']['val_loss'][i][epoch]:.4f}",
        f"{summary['history']['val_accuracy'][i][epoch]:.4f}", f"{acc:.4f}")
       for i, (epoch, acc) in enumerate(zip(summary["best_epoch"],
                                            summary["member_test_accuracy"]))]))
  print(f"best single test accuracy {summary['best_single_test_accuracy']:.4f}; mean "
        f"{summary['mean_test_accuracy']:.4f}; plain average of the members "
        f"{summary['average_test_accuracy']:.4f}; train() took "
        f"{summary['train_seconds_including_compile']:.1f} s including compilation on "
        f"{summary['n_devices']} device(s) ({summary['n_train']} training examples)")


if __name__ == "__main__":
  app.main("cnn_mnist", Config, run, print_summary)
