"""Which regulariser helps E1's MLP, with error bars over seeds (a study, not a reproduction).

    python -m experiments.regularisers_mnist [--config=configs/regularisers_mnist.py]
        [--config.<field>=<value> ...] [--workdir=runs/regularisers_mnist]

E1's network (784-100-100-100-10 ReLU, PyTorch's initialisation, Adam at ``lr``, batch
``batch_size``) on E1's split (25% of the training set held out for validation, the test set
apart), trained for ``epochs`` epochs, with each regulariser one vmapped ensemble of
``n_seeds`` seeds:

- **none**;
- **l2** and **l1**: a sweep of ``l2_weights`` / ``l1_weights`` as per-member overrides, so the
  sweep and its seeds are one ensemble (member ``s * n_weights + w`` is weight ``w``, seed
  ``s``);
- **max_norm**: the radius ``max_norm`` after every step;
- **dropout**, **gaussian_dropout**, **dropconnect**: at the same rate ``dropout_rate`` after
  every hidden layer (DropConnect: on the weights of every layer after the first);
- **selu_alpha_dropout**: the self-normalising net, SELU with LeCun-normal weights and alpha
  dropout at ``alpha_dropout_rate`` (Klambauer et al. use 0.05 to 0.1);
- **batchnorm_pre**, **batchnorm_post**: BN before or after every hidden activation;
- **layernorm**: LN before every hidden activation.

Every member keeps its last epoch's parameters (a best-epoch checkpoint would hide the
overfitting the study looks for). Reported per regulariser and setting, mean +- std over
seeds: test accuracy and NLL, the train-minus-validation accuracy and validation-minus-train
NLL gaps (both sets in evaluation mode, the training set through its first ``n_gap``
images), the difference from **none** in test accuracy and whether it lies outside twice its
standard error (sqrt(s1^2/n + s2^2/n), population std), and the wall time of the ensemble
(compilation included). Writes ``summary.json``, ``metrics.csv`` (run = regulariser/setting,
step = epoch), ``tensorboard/`` and ``val_loss.png`` (validation loss against epoch, one band
per regulariser).

References:
  Srivastava et al., 2014, Dropout (https://jmlr.org/papers/v15/srivastava14a.html).
  Wan et al., 2013, Regularization of Neural Networks using DropConnect (ICML).
  Klambauer et al., 2017, Self-Normalizing Neural Networks (https://arxiv.org/abs/1706.02515).
  Ioffe & Szegedy, 2015, Batch Normalization (https://arxiv.org/abs/1502.03167).
  Ba et al., 2016, Layer Normalization (https://arxiv.org/abs/1607.06450).
"""

import dataclasses
import os

import jax.numpy as jnp
import matplotlib
import numpy as np

from experiments import _mnist
from experiments import app
from experiments import reporting
from jaxens import _validation
from jaxens import ensemble
from jaxens import losses
from jaxens import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REGULARISERS = ("none", "l2", "l1", "max_norm", "dropout", "gaussian_dropout", "dropconnect",
                "selu_alpha_dropout", "batchnorm_pre", "batchnorm_post", "layernorm")
#: Regularisers swept over a weight, one per-member override each.
SWEPT = {"l2": "l2_weights", "l1": "l1_weights"}


@dataclasses.dataclass
class Config(_mnist.MnistData):
  """MNIST as in :class:`_mnist.MnistData` (E1's split).

  Attributes:
    regularisers: which of ``REGULARISERS`` to run.
    n_seeds: seeds per regulariser (and per swept weight).
    epochs, batch_size, lr: the training run (Adam).
    seed: member ``i`` of every ensemble starts from ``fold_in(PRNGKey(seed), i)``.
    l2_weights, l1_weights: the swept penalty weights (``nn.l2_penalty``: sum of squares;
      ``nn.l1_penalty``: sum of absolute values, over the kernels).
    max_norm: the radius of the max-norm projection.
    dropout_rate: the rate of dropout, Gaussian dropout and DropConnect.
    alpha_dropout_rate: alpha dropout's rate in the SELU net.
    n_gap: training images evaluated for the train-validation gaps.
  """
  regularisers: tuple = REGULARISERS
  n_seeds: int = 5
  epochs: int = 10
  batch_size: int = 32
  lr: float = 1e-3
  seed: int = 0
  l2_weights: tuple = (1e-5, 1e-4, 1e-3)
  l1_weights: tuple = (1e-6, 1e-5, 1e-4)
  max_norm: float = 2.0
  dropout_rate: float = 0.2
  alpha_dropout_rate: float = 0.05
  n_gap: int = 15000

  def __post_init__(self):
    unknown = set(self.regularisers) - set(REGULARISERS)
    if unknown or not self.regularisers:
      raise ValueError(f"regularisers: expected a non-empty subset of {REGULARISERS}, got "
                       f"{self.regularisers}")
    for name in ("n_seeds", "epochs", "batch_size", "n_gap"):
      _validation.check_int(name, getattr(self, name), 1)
    for name in SWEPT.values():
      if not getattr(self, name) or min(getattr(self, name)) < 0:
        raise ValueError(f"{name}: expected non-negative weights, got {getattr(self, name)}")

  def settings(self, regulariser):
    """The labels of the members' settings, one per swept weight (else one)."""
    if regulariser in SWEPT:
      return [f"{regulariser}={w:g}" for w in getattr(self, SWEPT[regulariser])]
    return [regulariser]

  def train_config(self, regulariser):
    """The ``TrainConfig`` of one regulariser's ensemble."""
    model = nn.MLPConfig(sizes=(784, 100, 100, 100, 10), init="torch")
    kwargs = {}
    if regulariser in SWEPT:
      weights = np.asarray(getattr(self, SWEPT[regulariser]), np.float32)
      kwargs["overrides"] = {regulariser: np.tile(weights, self.n_seeds)}
    elif regulariser == "max_norm":
      kwargs["max_norm"] = self.max_norm
    else:
      model = dataclasses.replace(model, **self._model_changes(regulariser))
    return ensemble.TrainConfig(
        model, optimizer="adam", optimizer_kwargs={"learning_rate": self.lr},
        n_members=self.n_seeds * len(self.settings(regulariser)),
        batch_size=self.batch_size, epochs=self.epochs, seed=self.seed, keep="last", **kwargs)

  def _model_changes(self, regulariser):
    dropout = lambda kind: dict(dropout=self.dropout_rate, dropout_kind=kind)
    return {
        "none": {},
        "dropout": dropout("standard"),
        "gaussian_dropout": dropout("gaussian"),
        "dropconnect": dropout("dropconnect"),
        "selu_alpha_dropout": dict(activation="selu", init="lecun_normal",
                                   dropout=self.alpha_dropout_rate, dropout_kind="alpha"),
        "batchnorm_pre": dict(norm="batch", norm_position="pre"),
        "batchnorm_post": dict(norm="batch", norm_position="post"),
        "layernorm": dict(norm="layer"),
    }[regulariser]


def run(config, workdir):
  """Trains every regulariser's ensemble; returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  splits = _mnist.load(config)
  gap_x, gap_y = splits.train.x[:config.n_gap], splits.train.y[:config.n_gap]
  results, histories = {}, {}
  for regulariser in config.regularisers:
    train_config = config.train_config(regulariser)
    with reporting.Stopwatch() as watch:
      result = ensemble.train(train_config, splits)
    settings = config.settings(regulariser)
    # Members are seed-major: member s * n_settings + w is setting w of seed s.
    by_setting = lambda values: np.asarray(values).reshape(
        (config.n_seeds, len(settings)) + np.shape(values)[1:]).swapaxes(0, 1)
    evaluations = {split: _evaluate(train_config, result, x, y) for split, (x, y) in
                   (("train", (gap_x, gap_y)), ("val", splits.val), ("test", splits.test))}
    for w, setting in enumerate(settings):
      results[setting] = {
          "regulariser": regulariser, "seconds": watch.seconds,
          "members_in_ensemble": train_config.n_members,
          "diverged": by_setting(result.diverged)[w],
          **{f"{split}_{metric}": by_setting(values)[w]
             for split, metrics in evaluations.items() for metric, values in metrics.items()}}
      histories[setting] = {name: by_setting(values)[w]
                            for name, values in result.history.items()}
  summary = {"experiment": "Regularisers on E1's MLP, seeds as error bars", "config": config,
             "n_train": len(splits.train.y), "n_val": len(splits.val.y),
             "n_test": len(splits.test.y), "results": results,
             "table": table_rows(results, config.n_seeds)}
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, [row for setting, history in histories.items()
                                    for row in reporting.history_rows(history, run=setting)])
  plot_val_loss(histories, os.path.join(workdir, "val_loss.png"))
  return summary


def _evaluate(train_config, result, x, y):
  """Per-member accuracy and NLL of the last parameters on ``(x, y)`` in evaluation mode."""
  probs = ensemble.predict(train_config, result.params, result.state, x)
  labels = jnp.asarray(y)
  return {"accuracy": np.asarray(losses.accuracy(probs, labels)),
          "nll": np.asarray(losses.log_loss(probs, labels))}


def table_rows(results, n_seeds):
  """One row per setting; the difference from ``none`` is flagged when it exceeds twice its
  standard error."""
  baseline = results.get("none")
  rows = []
  for setting, r in results.items():
    row = [setting, reporting.mean_std(r["test_accuracy"]), reporting.mean_std(r["test_nll"]),
           reporting.mean_std(r["train_accuracy"] - r["val_accuracy"]),
           reporting.mean_std(r["val_nll"] - r["train_nll"])]
    if baseline is None:
      row.append("n/a")
    else:
      difference = r["test_accuracy"].mean() - baseline["test_accuracy"].mean()
      error = np.sqrt((r["test_accuracy"].var() + baseline["test_accuracy"].var()) / n_seeds)
      outside = abs(difference) > 2 * error
      row.append(f"{difference:+.4f} ({'outside' if outside else 'inside'} 2 s.e.)")
    row.append(f"{r['seconds']:.0f} ({r['members_in_ensemble']} members)")
    rows.append(row)
  return rows


TABLE_HEADERS = ("regulariser", "test acc", "test NLL", "train − val acc", "val − train NLL",
                 "Δ test acc vs none", "wall s (ensemble)")


def plot_val_loss(histories, path):
  fig, ax = plt.subplots(figsize=(8, 5))
  colors = plt.get_cmap("tab20").colors  # 15 settings: one colour each.
  for k, (setting, history) in enumerate(histories.items()):
    epochs = np.arange(1, history["val_loss"].shape[1] + 1)
    reporting.plot_band(ax, epochs, history["val_loss"], setting, color=colors[k % len(colors)],
                        ls="-" if k < len(colors) else "--")
  ax.set_xlabel("epoch")
  ax.set_ylabel("validation loss (last parameters of each epoch)")
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def print_summary(summary):
  print(reporting.markdown_table(TABLE_HEADERS, summary["table"]))
  config = summary["config"]
  print(f"\nMean ± std over {config.n_seeds} seeds after {config.epochs} epochs (last "
        f"parameters); {summary['n_train']} training, {summary['n_val']} validation and "
        f"{summary['n_test']} test images; gaps on the first {config.n_gap} training images.")


if __name__ == "__main__":
  app.main("regularisers_mnist", Config, run, print_summary)
