"""Snapshots and stochastic weight averages taken inside the compiled epoch."""

import dataclasses

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxens import ensemble
from jaxens import models
from jaxens import nn
from jaxens.ensemble import _inputs
from tests.test_ensemble import _config, _max_diff, _member, _splits

# 256 training examples in batches of 16: 16 updates an epoch.
STEPS_PER_EPOCH = 16


def _stopped_at(cfg, splits, updates):
  """The params of the same run stopped after ``updates`` (a whole number of epochs)."""
  assert updates % STEPS_PER_EPOCH == 0
  return ensemble.train(dataclasses.replace(cfg, epochs=updates // STEPS_PER_EPOCH,
                                            snapshot_every=None, swa_start=None,
                                            swa_every=None),
                        splits, progress=False).params


def test_a_snapshot_after_update_s_equals_the_run_stopped_at_s():
  splits = _splits()
  steps = (5, 16, 32, 48)
  cfg = _config(epochs=3, snapshot_every=steps)
  result = ensemble.train(cfg, splits, progress=False)
  np.testing.assert_array_equal(result.snapshot_steps, steps)
  assert jax.tree.leaves(result.snapshots["params"])[0].shape[:2] == (cfg.n_members, 4)
  snapshot = lambda j: jax.tree.map(lambda a: a[:, j], result.snapshots["params"])
  after_one_epoch = _stopped_at(cfg, splits, 16)
  assert _max_diff(snapshot(1), after_one_epoch) <= 1e-6
  assert _max_diff(snapshot(2), _stopped_at(cfg, splits, 32)) <= 1e-6
  assert _max_diff(snapshot(3), result.params) == 0.0
  # Mid-epoch: it differs from the epoch end after it.
  assert _max_diff(snapshot(0), after_one_epoch) > 1e-4


def test_snapshot_every_k_updates_lists_k_2k_up_to_the_last_update():
  cfg = _config(epochs=3, snapshot_every=STEPS_PER_EPOCH)
  assert cfg.snapshot_steps(STEPS_PER_EPOCH) == (16, 32, 48)
  assert dataclasses.replace(cfg, snapshot_every=20).snapshot_steps(STEPS_PER_EPOCH) == (20, 40)
  assert dataclasses.replace(cfg, swa_start=40, swa_every=3).swa_steps(STEPS_PER_EPOCH) == (
      40, 43, 46)


def test_swa_is_the_mean_of_the_parameters_it_averaged():
  steps = (5, 12, 19, 26, 33, 40, 47)
  cfg = _config(epochs=3, swa_start=5, swa_every=7, snapshot_every=steps)
  result = ensemble.train(cfg, _splits(), progress=False)
  np.testing.assert_array_equal(result.swa_count, [len(steps)] * cfg.n_members)
  mean = jax.tree.map(lambda a: a.mean(axis=1), result.snapshots["params"])
  assert _max_diff(result.swa_params, mean) <= 1e-6
  assert _max_diff(result.swa_params, result.params) > 1e-4  # Not trivially the last weights.
  alone = ensemble.train(cfg, _splits(), members=[1], progress=False)
  assert _max_diff(_member(result.swa_params, 1), _member(alone.swa_params, 0)) <= 1e-5


def test_resumed_run_has_the_snapshots_and_average_of_a_straight_run(tmp_path):
  cfg = _config(epochs=3, snapshot_every=10, swa_start=9, swa_every=4)
  straight = ensemble.train(cfg, _splits(), progress=False)
  ensemble.train(dataclasses.replace(cfg, epochs=1), _splits(), workdir=tmp_path,
                 progress=False)
  resumed = ensemble.train(cfg, _splits(), workdir=tmp_path, resume=True, progress=False)
  np.testing.assert_array_equal(resumed.snapshot_steps, [10, 20, 30, 40])
  assert _max_diff(resumed.snapshots, straight.snapshots) <= 1e-6
  assert _max_diff(resumed.swa_params, straight.swa_params) <= 1e-6
  np.testing.assert_array_equal(resumed.swa_count, straight.swa_count)
  loaded = ensemble.load(tmp_path)
  np.testing.assert_array_equal(loaded.snapshot_steps, straight.snapshot_steps)
  assert _max_diff(loaded.swa_params, straight.swa_params) <= 1e-6


def test_swa_state_is_the_batch_norm_statistics_of_the_averaged_weights():
  model = nn.MLPConfig(sizes=(20, 16, 16, 3), norm="batch")
  cfg = _config(model=model, epochs=2, swa_start=8, swa_every=8)
  splits = _splits()
  result = ensemble.train(cfg, splits, progress=False)
  for i in range(cfg.n_members):
    expected = nn.population_statistics(model, _member(result.swa_params, i),
                                        _member(result.state, i), jnp.asarray(splits.train.x),
                                        cfg.batch_size)
    assert _max_diff(_member(result.swa_state, i), expected) <= 1e-5
  assert _max_diff(result.swa_state, result.state) > 1e-3


class _LinenBN(linen.Module):
  @linen.compact
  def __call__(self, x, train):
    h = linen.Dense(8)(x)
    h = linen.BatchNorm(use_running_average=not train, momentum=0.9)(h)
    return linen.Dense(3)(linen.relu(h))


def test_population_state_of_any_moving_average_model_is_the_mean_batch_statistic():
  model = models.from_linen(_LinenBN())
  x = jax.random.normal(jax.random.PRNGKey(0), (40, 5))
  params, state = model.init(jax.random.PRNGKey(1), x[:8])
  got = models.population_state(model, params, state, x, 8)
  dense = jax.tree.map(np.asarray, params["Dense_0"])
  h = (np.asarray(x) @ dense["kernel"] + dense["bias"]).reshape(5, 8, 8)
  np.testing.assert_allclose(got["batch_stats"]["BatchNorm_0"]["mean"], h.mean(1).mean(0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["batch_stats"]["BatchNorm_0"]["var"], h.var(1).mean(0),
                             rtol=1e-5, atol=1e-6)


def test_swa_state_of_a_linen_batch_norm_model_comes_from_the_generic_estimate():
  model = models.from_linen(_LinenBN())
  cfg = _config(model=model, epochs=1, swa_start=8, swa_every=4)
  splits = _splits()
  result = ensemble.train(cfg, splits, progress=False)
  x = jnp.asarray(splits.train.x)
  for i in (0, 3):
    expected = models.population_state(model, _member(result.swa_params, i),
                                       _member(result.state, i), x, cfg.batch_size)
    assert _max_diff(_member(result.swa_state, i), expected) <= 1e-5
  assert _max_diff(result.swa_state, result.state) > 1e-3


def test_snapshots_that_would_not_fit_are_refused_before_training(monkeypatch):
  # On a CPU the limit is the host's memory; pretend it holds 1000 bytes.
  monkeypatch.setattr(_inputs.os, "sysconf", lambda name: 1 if name == "SC_PAGE_SIZE" else 1000)
  with pytest.raises(ValueError, match=r"snapshot_every: the snapshots need .* GiB"):
    ensemble.train(_config(snapshot_every=1), _splits(), progress=False)


def test_a_diverging_member_has_nan_snapshots_and_spares_the_others():
  lrs = np.array([3e-3, 1e30, 3e-3, 3e-3])
  cfg = _config(optimizer=optax.sgd, overrides={"learning_rate": lrs}, epochs=2,
                snapshot_every=8, swa_start=8, swa_every=8)
  result = ensemble.train(cfg, _splits(), progress=False)
  np.testing.assert_array_equal(result.diverged, [False, True, False, False])
  for leaf in jax.tree.leaves(result.snapshots["params"]):
    assert np.isnan(leaf[1]).all() and np.isfinite(leaf[[0, 2, 3]]).all()
  np.testing.assert_array_equal(result.swa_count, [4, 0, 4, 4])


@pytest.mark.parametrize("kwargs,message", [
    (dict(snapshot_every=0), "snapshot_every: expected an integer in"),
    (dict(snapshot_every=17), r"snapshot_every: expected an integer in \[1, 16\]"),
    (dict(snapshot_every=(3, 3)), "snapshot_every: expected increasing update counts"),
    (dict(snapshot_every=(0, 4)), "snapshot_every: expected increasing update counts"),
    (dict(snapshot_every=(4, 17)), "snapshot_every: expected increasing update counts"),
    (dict(swa_every=2), "swa_every: expected None without swa_start"),
    (dict(swa_start=3), "swa_every: expected an integer >= 1"),
    (dict(swa_start=17, swa_every=1), "swa_start: expected an integer in"),
])
def test_bad_averaging_arguments_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ensemble.train(_config(**kwargs), _splits(), progress=False)
