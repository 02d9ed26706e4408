import dataclasses
import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from jaxens import data as data_lib
from jaxens import ensemble
from jaxens import losses
from jaxens import nn
from jaxens.ensemble import _checkpoint
from jaxens.ensemble import _keys
from jaxens.ensemble import _programs
from jaxens.ensemble import _progress

MODEL = nn.MLPConfig(sizes=(20, 16, 16, 3))


def _splits(n_train=256, n_val=96, seed=0):
  """A small learnable problem: the label is the arg-max of three fixed projections."""
  rng = np.random.default_rng(seed)
  projection = np.random.default_rng(99).normal(size=(20, 3))

  def examples(n):
    x = rng.normal(size=(n, 20)).astype(np.float32)
    return data_lib.Examples(x, np.argmax(x @ projection, axis=1).astype(np.int32))

  return data_lib.Splits(examples(n_train), examples(n_val), examples(32))


def _config(**kwargs):
  defaults = dict(model=MODEL, optimizer=optax.adam, optimizer_kwargs={"learning_rate": 3e-3},
                  n_members=4, batch_size=16, epochs=1)
  return ensemble.TrainConfig(**(defaults | kwargs))


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _member(tree, i):
  return jax.tree.map(lambda leaf: leaf[i], tree)


@pytest.mark.parametrize("data_order", ensemble.DATA_ORDERS)
def test_member_of_vmapped_run_equals_single_run(data_order):
  cfg = _config(data_order=data_order, epochs=2)
  splits = _splits()
  full = ensemble.train(cfg, splits, progress=False)
  alone = ensemble.train(cfg, splits, members=[2], progress=False)
  assert _max_diff(_member(full.params, 2), _member(alone.params, 0)) <= 1e-5
  # Members really differ: the comparison above is not trivially true.
  assert _max_diff(_member(full.params, 1), _member(full.params, 2)) > 1e-2


def test_data_orders_differ_as_documented():
  orders = {o: jax.vmap(lambda k: _keys.epoch_order(
      o, 16, k, jax.random.PRNGKey(0), 0, 256, 16))(
          jax.vmap(lambda i: ensemble.member_key(0, i))(np.arange(3))) for o in ensemble.DATA_ORDERS}
  shared, independent, bootstrap = (np.asarray(orders[o]) for o in ensemble.DATA_ORDERS)
  assert (shared[0] == shared[1]).all()
  assert not (independent[0] == independent[1]).all()
  assert sorted(independent[0].ravel()) == list(range(256))
  assert len(set(bootstrap[0].ravel())) < 256  # Resampled with replacement.
  # Over epochs a member keeps its one resample and reshuffles it.
  second_epoch = np.asarray(_keys.epoch_order(
      "bootstrap", 16, ensemble.member_key(0, 0), jax.random.PRNGKey(0), 1, 256, 16))
  assert sorted(second_epoch.ravel()) == sorted(bootstrap[0].ravel())
  assert not (second_epoch == bootstrap[0]).all()


@pytest.mark.parametrize("init, seed", [("torch", 5), ("glorot_uniform", 2**31),
                                        ("he_normal", 2**32 - 1)])
def test_initial_parameters_are_eager_mlp_init_of_the_member_key(init, seed):
  cfg = _config(model=dataclasses.replace(MODEL, init=init), seed=seed)
  members = np.array([0, 3], np.int32)
  _, _, carry = _programs.init_fn(cfg, ("train_loss",))(
      np.uint32(cfg.seed), members, {}, np.zeros((2, 20), np.float32))
  for row, member in enumerate(members):
    expected, _ = nn.mlp_init(
        jax.random.fold_in(ensemble.member_key(cfg.seed, member), _keys.INIT), cfg.model)
    assert _max_diff(_member(carry.params, row), expected) == 0.0


def test_same_config_and_seed_give_the_same_result():
  cfg = _config(seed=3)
  splits = _splits()
  assert _max_diff(ensemble.train(cfg, splits, progress=False).params,
                   ensemble.train(cfg, splits, progress=False).params) == 0.0


def test_every_epoch_reuses_one_compiled_program(caplog):
  # The carry an epoch returns must have the types the first epoch received (a weakly typed
  # initial best loss once made the second epoch compile the program again).
  cfg = _config(epochs=3, seed=11, batch_size=13)  # A batch size no other test compiles.
  with caplog.at_level(logging.WARNING), jax.log_compiles(True):
    ensemble.train(cfg, _splits(), progress=False)
  compiles = [r for r in caplog.records if "Compiling jit(train_epoch)" in r.getMessage()]
  assert len(compiles) == 1


def test_per_member_learning_rates_match_separate_runs():
  lrs = np.array([1e-3, 3e-3, 1e-2, 3e-2])
  splits = _splits()
  sweep = ensemble.train(_config(overrides={"learning_rate": lrs}), splits, progress=False)
  for i in (0, 3):
    single = ensemble.train(_config(optimizer_kwargs={"learning_rate": float(lrs[i])}), splits,
                            members=[i], progress=False)
    assert _max_diff(_member(sweep.params, i), _member(single.params, 0)) <= 1e-5


def test_best_checkpoint_is_the_epoch_with_lowest_validation_loss():
  # A large learning rate makes the validation loss go up and down across epochs.
  cfg = _config(epochs=6, optimizer_kwargs={"learning_rate": 0.05})
  splits = _splits()
  result = ensemble.train(cfg, splits, progress=False)
  val_loss = result.history["val_loss"]
  np.testing.assert_array_equal(result.best_epoch, np.argmin(val_loss, axis=1))
  assert (result.best_epoch < cfg.epochs - 1).any(), "test needs a member whose best epoch is early"
  probs = ensemble.predict(cfg, result.best_params, result.best_state, splits.val.x)
  recomputed = [float(losses.log_loss(p, splits.val.y, eps=1e-30)) for p in probs]
  np.testing.assert_allclose(recomputed, val_loss.min(axis=1), rtol=1e-4)
  last = ensemble.train(dataclasses.replace(cfg, keep="last"), splits, progress=False)
  assert _max_diff(last.best_params, last.params) == 0.0


def test_diverging_member_is_frozen_and_flagged_and_spares_the_others():
  splits = _splits()
  lrs = np.array([3e-3, 1e30, 3e-3, 3e-3])
  cfg = _config(optimizer=optax.sgd, overrides={"learning_rate": lrs}, epochs=2)
  result = ensemble.train(cfg, splits, progress=False)
  np.testing.assert_array_equal(result.diverged, [False, True, False, False])
  for leaf in jax.tree.leaves(result.params) + jax.tree.leaves(result.best_params):
    assert np.isfinite(np.asarray(leaf)).all()
  healthy = ensemble.train(
      _config(optimizer=optax.sgd, overrides={"learning_rate": lrs[[0, 2, 3]]}, n_members=3,
              epochs=2), splits, members=[0, 2], progress=False)
  # Members keep their keys, so members 0 and 2 of both runs must agree.
  for i, j in ((0, 0), (2, 1)):
    assert _max_diff(_member(result.params, i), _member(healthy.params, j)) <= 1e-5


def test_non_finite_optimizer_state_alone_flags_the_member():
  # Losses and parameters stay finite; only member 1's optimizer state turns -inf.
  def sgd_with_a_log(learning_rate, poison):
    sgd = optax.sgd(learning_rate)

    def update(grads, state, params=None):
      updates, sgd_state = sgd.update(grads, state[0], params)
      return updates, (sgd_state, state[1] + jax.numpy.log1p(-poison))

    return optax.GradientTransformation(lambda params: (sgd.init(params), 0.0), update)

  splits = _splits()
  cfg = _config(optimizer=sgd_with_a_log, optimizer_kwargs={"learning_rate": 1e-2},
                overrides={"poison": np.array([0.0, 1.0, 0.0, 0.0])}, epochs=2)
  result = ensemble.train(cfg, splits, progress=False)
  np.testing.assert_array_equal(result.diverged, [False, True, False, False])
  # Frozen at its state before the first epoch, the one it diverged in.
  frozen = ensemble.train(dataclasses.replace(cfg, optimizer_kwargs={"learning_rate": 0.0}),
                          splits, members=[1], progress=False)
  assert _max_diff(_member(result.params, 1), _member(frozen.params, 0)) == 0.0


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
  cfg = _config(epochs=3)
  splits = _splits()
  straight = ensemble.train(cfg, splits, progress=False)

  saves = []
  original_save = _checkpoint.Checkpoints.save

  def save_then_crash(self, epoch, *args):
    original_save(self, epoch, *args)
    saves.append(epoch)
    if epoch == 1:
      raise KeyboardInterrupt("simulated interruption after epoch 1")

  monkeypatch.setattr(_checkpoint.Checkpoints, "save", save_then_crash)
  with pytest.raises(KeyboardInterrupt):
    ensemble.train(cfg, splits, workdir=tmp_path, progress=False)
  monkeypatch.setattr(_checkpoint.Checkpoints, "save", original_save)
  resumed = ensemble.train(cfg, splits, workdir=tmp_path, resume=True, progress=False)
  assert saves == [1]
  assert _max_diff(resumed.params, straight.params) == 0.0
  assert _max_diff(resumed.best_params, straight.best_params) == 0.0
  np.testing.assert_array_equal(resumed.history["val_loss"], straight.history["val_loss"])


def test_partial_checkpoint_is_never_loaded(tmp_path, monkeypatch):
  cfg = _config(epochs=2)
  splits = _splits()
  finished = ensemble.train(cfg, splits, workdir=tmp_path, progress=False)
  directory = tmp_path / "checkpoints"
  # A save interrupted halfway leaves orbax's temporary directory behind, never step "3".
  partial = directory / "3.orbax-checkpoint-tmp-1234"
  (partial / "carry").mkdir(parents=True)
  (partial / "carry" / "garbage").write_bytes(b"\x00" * 10)
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(directory, item_names=("carry", "meta"))
  assert manager.latest_step() == 2
  manager.close()
  saves = []
  monkeypatch.setattr(_checkpoint.Checkpoints, "save", lambda self, epoch, *args: saves.append(epoch))
  resumed = ensemble.train(cfg, splits, workdir=tmp_path, resume=True, progress=False)
  assert saves == []  # Resumed from the complete epoch-2 checkpoint: no epoch left to run.
  assert _max_diff(resumed.params, finished.params) == 0.0


def test_resume_refuses_a_different_config(tmp_path):
  splits = _splits()
  ensemble.train(_config(), splits, workdir=tmp_path, progress=False)
  with pytest.raises(ValueError, match="resume"):
    ensemble.train(_config(seed=1), splits, workdir=tmp_path, resume=True, progress=False)


_SHARDED_SCRIPT = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 4)
import numpy as np
sys.path.insert(0, {tests!r})
import test_ensemble as t
from jaxens import ensemble
out = {{}}
for n_members in (10, 7):
  result = ensemble.train(t._config(n_members=n_members, epochs=2), t._splits(), progress=False)
  out[n_members] = {{"n_devices": result.n_devices,
                    "used": len(jax.tree.leaves(result.params)[0].sharding.device_set),
                    "params": [np.asarray(l).tolist() for l in jax.tree.leaves(result.params)],
                    "history": np.asarray(result.history["val_loss"]).tolist()}}
print(json.dumps(out))
"""


@pytest.mark.parametrize("n_members", [10, 7])
def test_four_cpu_devices_all_train_and_match_one_device(n_members, sharded_runs):
  # Member axes that 4 does not divide are padded, so every device works.
  sharded = sharded_runs[str(n_members)]
  assert sharded["n_devices"] == 4 and sharded["used"] == 4
  single = ensemble.train(_config(n_members=n_members, epochs=2), _splits(), progress=False)
  assert len(jax.devices()) == 1 and single.n_devices == 1
  for got, expected in zip(sharded["params"], jax.tree.leaves(single.params)):
    assert np.shape(got) == expected.shape  # Padded members are cut.
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-6)
  np.testing.assert_allclose(sharded["history"], single.history["val_loss"], atol=1e-6)


@pytest.fixture(scope="module")
def sharded_runs():
  out = subprocess.run(
      [sys.executable, "-c", _SHARDED_SCRIPT.format(tests=os.path.dirname(__file__))],
      env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_predict_gives_member_probabilities():
  cfg = _config(n_members=3)
  splits = _splits()
  result = ensemble.train(cfg, splits, progress=False)
  probs = ensemble.predict(cfg, result.params, result.state, splits.test.x, batch_size=10)
  assert probs.shape == (3, 32, 3)
  np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)
  single = ensemble.predict(cfg.model, jax.tree.map(lambda a: a[1:2], result.params), {},
                            splits.test.x)
  np.testing.assert_allclose(single[0], probs[1], atol=1e-6)


def test_batch_norm_and_dropout_members_train():
  # A short run: a low BN momentum lets the population statistics settle in 32 steps.
  model = nn.MLPConfig(sizes=(20, 16, 16, 3), norm="batch", dropout=0.2, bn_momentum=0.5)
  cfg = _config(model=model, epochs=3, optimizer_kwargs={"learning_rate": 2e-2})
  result = ensemble.train(cfg, _splits(), progress=False)
  assert result.state["norm_0"]["mean"].shape == (4, 16)
  assert not result.diverged.any()
  # Every member learns: validation loss falls well below chance level, log(3).
  assert (result.history["val_loss"][:, -1] < 0.6 * np.log(3)).all()


@pytest.mark.parametrize("kwargs, data_kwargs, argument", [
    ({"n_members": 0}, {}, "n_members"),
    ({"n_members": 2.5}, {}, "n_members"),
    ({"seed": -1}, {}, "seed"),
    ({"seed": 2**32}, {}, "seed"),
    ({"batch_size": 1000}, {}, "batch_size"),
    ({"overrides": {"learning_rate": np.ones(3)}}, {}, "overrides"),
    ({"optimizer": "lion"}, {}, "optimizer"),
    ({"data_order": "sorted"}, {}, "data_order"),
    ({"keep": "best"}, {}, "keep"),
    ({}, {"n_val": 0}, "keep"),
])
def test_bad_input_names_the_argument(kwargs, data_kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    ensemble.train(_config(**kwargs), _splits(**data_kwargs), progress=False)


def test_members_argument_is_validated():
  with pytest.raises(ValueError, match="members"):
    ensemble.train(_config(), _splits(), members=[4], progress=False)


def test_progress_bar_reports_mean_and_worst_member_loss(monkeypatch):
  bars = []

  class RecordingBar:
    """Stands in for tqdm on a terminal, recording what the jitted loop reports."""

    def __init__(self, total, **kwargs):
      self.total, self.disable, self.steps, self.postfixes = total, False, 0, []
      bars.append(self)

    def reset(self):
      self.steps = 0

    def set_description(self, text):
      self.description = text

    def update(self, n):
      self.steps += n

    def set_postfix(self, **values):
      self.postfixes.append(values)

    def close(self):
      pass

  monkeypatch.setattr(_progress.tqdm, "tqdm", RecordingBar)
  result = ensemble.train(_config(epochs=2), _splits(), progress=True)
  (bar,) = bars
  assert bar.total == 256 // 16 and bar.steps == bar.total and bar.description == "epoch 2/2"
  assert len(bar.postfixes) == 2 * bar.total
  last = bar.postfixes[-1]
  assert float(last["worst_loss"]) >= float(last["mean_loss"]) > 0
  assert not result.diverged.any()
