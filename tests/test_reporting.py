"""experiments.reporting: metric logs that pandas and TensorBoard read back, tables, timers."""

import time

import numpy as np
import pandas as pd
import pytest

from experiments import reporting

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def test_metrics_csv_and_tensorboard_events_read_back(tmp_path):
  history = {"train_loss": np.array([[0.9, 0.5, 0.25], [1.1, 0.7, 0.3]]),
             "val_accuracy": np.array([[0.5, 0.75, 0.875], [0.25, 0.5, 0.625]])}
  rows = (reporting.history_rows(history, run="adam")
          + reporting.history_rows({"train_loss": history["train_loss"][:1] * 2}, run="sgd"))
  reporting.write_metrics(str(tmp_path), rows)

  metrics = pd.read_csv(tmp_path / "metrics.csv")
  assert list(metrics.columns) == ["run", "member", "step", "train_loss", "val_accuracy"]
  adam = metrics[metrics.run == "adam"]
  for name, values in history.items():
    np.testing.assert_allclose(adam.pivot(index="member", columns="step", values=name), values)
  sgd = metrics[metrics.run == "sgd"]
  np.testing.assert_allclose(sgd.train_loss, 2 * history["train_loss"][0])
  assert sgd.val_accuracy.isna().all()  # a metric the run did not log stays empty

  for member in range(2):
    events = event_accumulator.EventAccumulator(
        str(tmp_path / "tensorboard" / "adam" / f"member_{member}"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train_loss", "val_accuracy"]
    for name, values in history.items():
      scalars = events.Scalars(name)
      assert [s.step for s in scalars] == [1, 2, 3]
      np.testing.assert_allclose([s.value for s in scalars], values[member], rtol=1e-6)
  sgd_events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard" / "sgd" /
                                                      "member_0"))
  sgd_events.Reload()
  assert sgd_events.Tags()["scalars"] == ["train_loss"]


def test_stopwatch_measures_the_block():
  with reporting.Stopwatch() as watch:
    time.sleep(0.05)
    inside = watch.elapsed()
    time.sleep(0.05)
  assert 0.05 <= inside < watch.seconds and watch.seconds >= 0.1
