"""End-to-end run of experiments.optimizers_mnist on a tiny config with local fake MNIST."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from experiments import optimizers_mnist


@pytest.mark.filterwarnings("ignore:MNIST from")  # the fake data fails the checksum, as it should
def test_optimizers_mnist_tiny(digits_npz, tmp_path, capsys):
  npz = digits_npz(96, 8)
  workdir = str(tmp_path / "run")
  config = optimizers_mnist.Config(data_source="npz", data_dir=str(npz), sizes=(784, 16, 10),
                                   optimizers=("adam", "momentum"), batch_size=8, eval_every=4)
  optimizers_mnist.print_summary(optimizers_mnist.run(config, workdir))
  assert "| adam |" in capsys.readouterr().out
  for name in ("summary.json", "curves.png", "param_difference.png", "metrics.csv"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)

  assert summary["n_train"] == 72 and summary["n_val"] == 24
  assert summary["steps"] == 9  # ceil(72 / 8)
  assert summary["eval_steps"] == [0, 4, 8, 9]
  assert [row[0] for row in summary["table"]] == ["adam", "momentum"]
  for runs in summary["results"].values():
    assert set(runs) == set(summary["libraries"])
    for library, record in runs.items():
      assert len(record["val_accuracy"]) == 4 and len(record["train_loss"]) == 3
      assert record["step_ms"] > 0
      if library != "jaxens":
        differences = record["max_param_difference"]
        assert differences[0] == 0.0  # the same initial weights
        assert max(differences) < 1e-4  # the same updates, up to float32 rounding
    assert runs["jaxens"]["val_accuracy"] == runs["optax"]["val_accuracy"]
  metrics = pd.read_csv(os.path.join(workdir, "metrics.csv"))
  logged = metrics[metrics.run == "adam/jaxens"]
  assert list(logged.step) == [0, 4, 8, 9]
  np.testing.assert_allclose(logged.val_accuracy,
                             summary["results"]["adam"]["jaxens"]["val_accuracy"])


def test_batch_order_visits_every_example_once_per_epoch():
  order = optimizers_mnist.batch_order(n_train=10, batch_size=4, epochs=2, seed=0)
  assert order.shape == (6, 4)  # ceil(10 / 4) = 3 steps per epoch
  for epoch in order.reshape(2, 12):
    assert sorted(epoch[:10]) == list(range(10))
    np.testing.assert_array_equal(epoch[10:], epoch[:2])  # the last batch wraps around
