"""A regression ensemble (MSE) on a real tabular data set, then greedy selection on ``mse``.

    python -m experiments.regression_diabetes [--config=configs/regression_diabetes.py] \\
        [--config.<field>=<value>]

The diabetes data set that ships inside scikit-learn (442 patients, 10 features, a disease
progression score; the ``examples`` extra) is split 60/20/20 into train, validation and test
with ``jaxens.data.split_train_val``; features and target are standardised with the training
statistics. E MLPs (10-64-64-1 ReLU, Adam) train as one vmapped run with ``loss="mse"``, each
keeping its best-validation-loss checkpoint. Greedy selection (Caruana et al. 2004, with
replacement) runs on the validation predictions with ``loss="mse"``; the best single member,
the plain average and the greedy ensemble are then scored on the held-out test set. Errors
are reported on the original target scale.
"""

import dataclasses
import os

import numpy as np

from experiments import app
from experiments import reporting
from experiments import training
from jaxens import data as data_lib
from jaxens import ensemble
from jaxens import nn
from jaxens import select


@dataclasses.dataclass
class Config(training.Training):
  """E=10 MLPs of ``hidden`` ReLU units, Adam 1e-3, batch 32, 200 epochs, MSE."""
  epochs: int = 200
  hidden: tuple = (64, 64)
  test_fraction: float = 0.2
  val_fraction: float = 0.25  # Of what the test split leaves: 20% of the whole.
  split_seed: int = 0
  max_iter: int = 25

  def train_config(self, n_features):
    return super().train_config(nn.MLPConfig(sizes=(n_features, *self.hidden, 1)), loss="mse")


def load_diabetes(config):
  """Standardised train/val/test splits and the target's training scale."""
  from sklearn import datasets  # The `examples` extra.
  x, y = datasets.load_diabetes(return_X_y=True)
  rest, test = data_lib.split_train_val(x, y, config.test_fraction, config.split_seed)
  train, val = data_lib.split_train_val(*rest, config.val_fraction, config.split_seed)
  x_mean, x_std = train.x.mean(0), train.x.std(0)
  y_mean, y_std = train.y.mean(), train.y.std()
  scale = lambda e: data_lib.Examples(((e.x - x_mean) / x_std).astype(np.float32),
                                      ((e.y - y_mean) / y_std).astype(np.float32))
  return data_lib.Splits(scale(train), scale(val), scale(test)), float(y_std)


def run(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  splits, y_scale = load_diabetes(config)
  train_config = config.train_config(splits.train.x.shape[1])
  with reporting.Stopwatch() as train_time:
    result = ensemble.train(train_config, splits, progress=False)
  val_preds, test_preds = (np.asarray(ensemble.predict(
      train_config, result.best_params, result.best_state, x))[..., 0]
                           for x in (splits.val.x, splits.test.x))
  rmse = lambda preds, y: float(np.sqrt(np.mean((preds - y) ** 2, axis=-1)) * y_scale)
  best = int(np.argmin(np.mean((val_preds - splits.val.y) ** 2, axis=1)))
  chosen = select.greedy(val_preds, splits.val.y, loss="mse", max_iter=config.max_iter)
  weights = np.asarray(chosen.final_weights)
  rows = {f"best single (M{best}, by val MSE)": (val_preds[best], test_preds[best]),
          "plain average": (val_preds.mean(0), test_preds.mean(0)),
          f"greedy on mse, {config.max_iter} steps": (weights @ val_preds, weights @ test_preds)}
  summary = {
      "experiment": "regression ensemble on sklearn's diabetes data, greedy selection on mse",
      "config": config, "n_train": len(splits.train.y), "n_val": len(splits.val.y),
      "n_test": len(splits.test.y), "train_seconds_including_compile": train_time.seconds,
      "member_test_rmse": [rmse(p, splits.test.y) for p in test_preds],
      "greedy_weights": weights,
      "ensembles": {name: {"val_rmse": rmse(v, splits.val.y), "test_rmse": rmse(t, splits.test.y)}
                    for name, (v, t) in rows.items()},
  }
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, reporting.history_rows(result.history))
  return summary


def print_summary(summary):
  print(f"{summary['n_train']} train / {summary['n_val']} val / {summary['n_test']} test rows; "
        f"RMSE on the original target scale")
  print(reporting.markdown_table(("ensemble", "val RMSE", "test RMSE"), [
      (name, f"{row['val_rmse']:.2f}", f"{row['test_rmse']:.2f}")
      for name, row in summary["ensembles"].items()]))
  print("members' test RMSE: " + ", ".join(f"{v:.2f}" for v in summary["member_test_rmse"]))
  print(f"train() took {summary['train_seconds_including_compile']:.1f} s including compilation")


if __name__ == "__main__":
  app.main("regression_diabetes", Config, run, print_summary)
