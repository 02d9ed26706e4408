"""``TrainConfig.probe``: measurements taken inside the compiled epoch, every k steps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxens import ensemble
from jaxens import losses
from jaxens import nn
from jaxens.ensemble import _keys
from tests.test_ensemble import MODEL, _config, _member, _splits


def _batch_loss(params, state, batch, step):
  del step
  logits, _ = nn.mlp_apply(MODEL, params, state, batch[0], train=False)
  return losses.log_loss_from_logits(logits, batch[1])


def _kernel_norm(params, state, batch, step):
  del state, batch, step
  return optax.global_norm(params)


@pytest.mark.parametrize("batch_size,epochs,every", [(16, 2, 5), (32, 3, 7)])
def test_a_probe_every_k_steps_records_ceil_steps_over_k_values(batch_size, epochs, every):
  cfg = _config(batch_size=batch_size, epochs=epochs, probe=_kernel_norm, probe_every=every)
  result = ensemble.train(cfg, _splits(), progress=False)
  steps = epochs * (256 // batch_size)
  n_probes = -(-steps // every)
  assert result.probes.shape == (cfg.n_members, n_probes)
  np.testing.assert_array_equal(result.probe_steps, np.arange(0, steps, every))
  assert np.isfinite(result.probes).all()


def test_probe_equals_the_function_on_runs_stopped_at_its_steps():
  # One full batch per step, so a run of ``s`` epochs stops after step ``s``.
  splits = _splits()
  cfg = _config(batch_size=256, epochs=5, probe_every=3, data_order="shared",
                probe=lambda p, s, b, t: {"loss": _batch_loss(p, s, b, t),
                                          "norm": _kernel_norm(p, s, b, t)})
  result = ensemble.train(cfg, splits, progress=False)
  np.testing.assert_array_equal(result.probe_steps, [0, 3])
  for index, step in enumerate(result.probe_steps):
    if step == 0:
      params = jax.vmap(lambda i: nn.mlp_init(
          jax.random.fold_in(_keys.member_key(cfg.seed, i), _keys.INIT), MODEL)[0])(
              jnp.arange(cfg.n_members))
    else:
      params = ensemble.train(dataclasses.replace(cfg, epochs=int(step), probe=None,
                                                  probe_every=None),
                              splits, progress=False).params
    by_hand = jax.vmap(lambda p: _batch_loss(p, {}, tuple(splits.train), 0))(params)
    np.testing.assert_allclose(result.probes["loss"][:, index], by_hand, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.probes["norm"][:, index],
                               jax.vmap(optax.global_norm)(params), rtol=1e-6)


def test_probe_sees_each_step_params_and_minibatch():
  # Without dropout or BN the training loss of a step is the eval loss of the params and
  # minibatch that the probe sees, so the epoch means must match the history.
  cfg = _config(epochs=2, probe=_batch_loss, probe_every=1)
  result = ensemble.train(cfg, _splits(), progress=False)
  per_epoch = result.probes.reshape(cfg.n_members, cfg.epochs, -1).mean(axis=-1)
  np.testing.assert_allclose(per_epoch, result.history["train_loss"], rtol=1e-5)


def test_probe_runs_only_on_its_steps_under_vmap():
  # Under vmap a batched predicate would turn lax.cond into a select that evaluates the probe
  # on every step; the host callback counts the evaluations.
  calls = []

  def counted(params, state, batch, step):
    jax.debug.callback(lambda: calls.append(1))
    return _kernel_norm(params, state, batch, step)

  cfg = _config(epochs=2, probe=counted, probe_every=5)
  result = ensemble.train(cfg, _splits(), progress=False)
  # One callback per probe step: vmap batches it into one call for all members.
  assert len(calls) == result.probes.shape[1] == 7


def test_member_probes_equal_a_single_member_run():
  cfg = _config(epochs=2, probe=_batch_loss, probe_every=3)
  full = ensemble.train(cfg, _splits(), progress=False)
  alone = ensemble.train(cfg, _splits(), members=[2], progress=False)
  np.testing.assert_allclose(full.probes[2], alone.probes[0], rtol=1e-5)
  assert np.abs(full.probes[1] - full.probes[2]).max() > 1e-3


def test_resumed_run_has_the_probes_of_a_straight_run(tmp_path):
  cfg = _config(epochs=3, probe=lambda p, s, b, t: {"loss": _batch_loss(p, s, b, t), "step": t},
                probe_every=5)
  straight = ensemble.train(cfg, _splits(), progress=False)
  ensemble.train(dataclasses.replace(cfg, epochs=1), _splits(), workdir=tmp_path, progress=False)
  resumed = ensemble.train(cfg, _splits(), workdir=tmp_path, resume=True, progress=False)
  np.testing.assert_allclose(resumed.probes["loss"], straight.probes["loss"], rtol=1e-6)
  np.testing.assert_array_equal(resumed.probes["step"], straight.probes["step"])
  loaded = ensemble.load(tmp_path)
  np.testing.assert_array_equal(loaded.probe_steps, straight.probe_steps)
  np.testing.assert_allclose(loaded.probes["loss"], straight.probes["loss"], rtol=1e-6)


def test_a_diverging_member_has_nan_probes_and_spares_the_others():
  lrs = np.array([3e-3, 1e30, 3e-3, 3e-3])
  cfg = _config(optimizer=optax.sgd, overrides={"learning_rate": lrs}, epochs=2,
                probe=lambda p, s, b, t: {"norm": _kernel_norm(p, s, b, t), "step": t},
                probe_every=4)
  result = ensemble.train(cfg, _splits(), progress=False)
  np.testing.assert_array_equal(result.diverged, [False, True, False, False])
  assert np.isnan(result.probes["norm"][1]).all()
  np.testing.assert_array_equal(result.probes["step"][1], 0)
  assert np.isfinite(result.probes["norm"][[0, 2, 3]]).all()
  np.testing.assert_array_equal(result.probes["step"][0], result.probe_steps)


@pytest.mark.parametrize("kwargs,message", [
    (dict(probe=_kernel_norm), "probe_every: expected an integer >= 1"),
    (dict(probe=_kernel_norm, probe_every=0), "probe_every: expected an integer >= 1"),
    (dict(probe_every=3), "probe_every: expected None without a probe"),
    (dict(probe="loss", probe_every=3), "probe: expected a callable"),
    (dict(probe=lambda p, s, b, t: p["missing"], probe_every=3), "probe: failed on one member"),
    (dict(probe=lambda p, s, b, t: jax.random.key(0), probe_every=3),
     "probe: expected numeric outputs"),
])
def test_bad_probes_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ensemble.train(_config(**kwargs), _splits(), progress=False)
