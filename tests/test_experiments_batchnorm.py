"""End-to-end runs of the batch-norm experiments (E3) on tiny MNIST-layout data."""

import os

import numpy as np
import pandas as pd
import pytest

from experiments import batchnorm_ioffe
from experiments import batchnorm_landscape
from jaxens import nn


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


def test_movement_is_median_motion_over_spread():
  # One member, 3 probes, 2 units: unit 0's median moves by 1 then 3 with spread 2; unit 1
  # stays with spread 4.
  median = np.array([[0.0, 5.0], [1.0, 5.0], [4.0, 5.0]])[None]
  half = np.array([1.0, 2.0])
  percentiles = np.stack([median - half, median, median + half], axis=2)
  np.testing.assert_allclose(batchnorm_landscape.movement(percentiles), [(2.0 / 2 + 0.0) / 2])


def test_layer_groups_pair_each_dense_with_its_norm():
  config = batchnorm_landscape.Config()
  assert batchnorm_landscape.layer_groups(config.mlp("standard")) == (
      ("dense_0",), ("dense_1",), ("dense_2",), ("dense_3",))
  assert batchnorm_landscape.layer_groups(config.mlp("noisy_batch_norm")) == (
      ("dense_0", "norm_0"), ("dense_1", "norm_1"), ("dense_2", "norm_2"), ("dense_3",))
  assert config.mlp("noisy_batch_norm").bn_noise == nn.BNNoise(0.5, 1.0, 1.25, 0.1)
  with pytest.raises(ValueError, match="layer: expected a hidden layer in"):
    batchnorm_landscape.Config(layer=3)
  with pytest.raises(ValueError, match="arms: expected a subset of"):
    batchnorm_landscape.Config(arms=("standard", "layer_norm"))


def test_landscape_tiny(digits_npz, tmp_path):
  config = batchnorm_landscape.Config(
      data_source="npz", data_dir=str(digits_npz(600, 200)), hidden=(16, 16), batch_size=20,
      architectures=("standard", "batch_norm"), arms=("standard", "batch_norm",
                                                      "noisy_batch_norm"),
      probe_every=5, learning_rates=(0.1, 1e4), sweep_seeds=2, sweep_epochs=1,
      cnn_train=60, cnn_epochs=1, cnn_learning_rates=(0.1,), n_members=2, epochs=1,
      n_fixed=64, n_probe_test=100, layer=1)
  summary = batchnorm_landscape.run(config, str(tmp_path))
  batchnorm_landscape.print_summary(summary)
  sweep = summary["sweep"]["standard"]
  assert sweep["batch_loss"].shape == (2, 2, 6)  # rates, seeds, probes of 30 steps
  # The huge rate blows the standard net up; the usual one trains on this easy task.
  assert not sweep["trains"][1].any()
  np.testing.assert_array_equal(
      summary["sweep"]["standard"]["trains"],
      (sweep["final_batch_loss"] < config.trains_below) & ~sweep["diverged"])
  assert summary["sweep"]["cnn_batch_norm"]["batch_loss"].shape == (1, 1, 1)
  for arm, values in summary["arms"].items():
    assert values["ics_distance"].shape == (2, 6, 3), arm
    # Nothing precedes the first layer: its gradient cannot shift.
    np.testing.assert_allclose(values["ics_distance"][:, :, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(values["ics_cosine"][:, :, 0], 1.0, atol=1e-5)
    assert (values["loss_variation"] >= 0).all() and (values["beta_smoothness"] > 0).all()
    losses_along = values["losses_along"]
    np.testing.assert_allclose(values["loss_variation"],
                               losses_along.max(axis=-1) - losses_along.min(axis=-1), rtol=1e-5)
    assert values["percentiles"].shape == (2, 6, 3, 16)
  # BN standardises the tracked layer's input over the fixed batch; the noise then shifts it.
  bn_start = summary["arms"]["batch_norm"]["percentiles"][:, 0, 1]
  noisy_start = summary["arms"]["noisy_batch_norm"]["percentiles"][:, 0, 1]
  np.testing.assert_allclose(bn_start, 0.0, atol=0.35)
  assert np.abs(noisy_start - bn_start).max() > 0.05
  runs = set(pd.read_csv(tmp_path / "metrics.csv")["run"])
  assert runs == {"sweep_standard", "sweep_batch_norm", "sweep_cnn_standard",
                  "sweep_cnn_batch_norm", "standard", "batch_norm", "noisy_batch_norm"}
  for name in ("learning_rates", "noisy_bn", "ics", "landscape"):
    assert os.path.getsize(tmp_path / f"{name}.png") > 0
