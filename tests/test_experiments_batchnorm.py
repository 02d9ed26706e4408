"""End-to-end runs of the batch-norm experiments (E3) on tiny MNIST-layout data."""

import os

import numpy as np
import pandas as pd
import pytest

from experiments import batchnorm_ioffe


def test_drift_measures_median_movement_after_the_first_tenth():
  steps = np.arange(0, 100, 10)
  # Member 0: the median of unit 0 climbs by 1 per probe, unit 1 stays; spread 2 at the end.
  median = np.stack([np.arange(10.0), np.zeros(10)], axis=-1)[None]  # (1, probes, units)
  percentiles = np.stack([median - 1, median, median + 1], axis=2)  # (1, probes, 3, units)
  absolute, relative = batchnorm_ioffe.drift(percentiles, steps)
  # From probe 1 (step 10 = 10% of 90, rounded up) on: unit 0 moves 0..8, unit 1 never.
  np.testing.assert_allclose(absolute, [np.arange(9).mean() / 2])
  np.testing.assert_allclose(relative, [np.arange(9).mean() / 2 / 2])


def test_first_step_reaching_uses_the_seed_mean():
  accuracy = np.array([[0.5, 0.9, 0.99], [0.5, 0.8, 0.97]])
  assert batchnorm_ioffe.first_step_reaching(accuracy, np.array([0, 5, 10]), 0.85) == 5
  assert batchnorm_ioffe.first_step_reaching(accuracy, np.array([0, 5, 10]), 0.99) is None


def test_ioffe_tiny(digits_npz, tmp_path):
  config = batchnorm_ioffe.Config(data_source="npz", data_dir=str(digits_npz(600, 200)),
                                  n_members=2, steps=50, batch_size=20, probe_every=10,
                                  n_probe_test=100, n_percentile_examples=64, unit=3)
  summary = batchnorm_ioffe.run(config, str(tmp_path))
  batchnorm_ioffe.print_summary(summary)
  # 30 steps an epoch, so 2 epochs: 60 steps and probes at 0, 10, ..., 50.
  assert summary["steps_run"] == 60
  np.testing.assert_array_equal(summary["probe_steps"], np.arange(0, 60, 10))
  for name, values in summary["variants"].items():
    quantiles = values["percentiles_of_unit"]
    assert quantiles.shape == (2, 6, 3)
    assert (np.diff(quantiles, axis=-1) >= 0).all(), name
    assert not values["diverged"].any()
    assert values["test_accuracy"].shape == (2, 6)
  # At initialisation, BN before the sigmoid standardises its input over the fixed batch: the
  # 15-85 range of a standard normal is about (-1.04, 1.04); without BN it is not standardised.
  pre_start = summary["variants"]["pre"]["percentiles_of_unit"][:, 0]
  np.testing.assert_allclose(pre_start[:, 1], 0.0, atol=0.3)
  np.testing.assert_allclose(pre_start[:, 2] - pre_start[:, 0], 2.08, rtol=0.25)
  none_start = summary["variants"]["none"]["percentiles_of_unit"][:, 0]
  assert (none_start[:, 2] - none_start[:, 0] < 1.0).all()
  assert set(summary["patterns"]) == {"bn_trains_faster", "bn_ends_higher",
                                      "bn_distribution_stabler"}
  metrics = pd.read_csv(tmp_path / "metrics.csv")
  assert set(metrics["run"]) == {"none", "pre", "post"}
  member = metrics[(metrics["run"] == "post") & (metrics["member"] == 1)]
  np.testing.assert_array_equal(member["step"], summary["probe_steps"])
  np.testing.assert_allclose(member["test_accuracy"],
                             summary["variants"]["post"]["test_accuracy"][1], rtol=1e-6)
  assert os.path.getsize(tmp_path / "figure1.png") > 0
