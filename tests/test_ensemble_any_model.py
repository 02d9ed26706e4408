"""Any model, any loss: flax.linen and flax.nnx modules, regression and callable losses, and
per-member regularisation train through the same vectorised trainer."""

import dataclasses

import flax.linen as linen
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxens import data as data_lib
from jaxens import ensemble
from jaxens import models
from jaxens import nn
from jaxens import optim
from test_ensemble import _config
from test_ensemble import _max_diff
from test_ensemble import _member
from test_ensemble import _splits


class TinyCNN(linen.Module):
  """The layout of flax's examples/mnist CNN, shrunk: conv, average pool, dense."""

  @linen.compact
  def __call__(self, x, train):
    x = linen.relu(linen.Conv(4, (3, 3))(x))
    x = linen.avg_pool(x, (2, 2), strides=(2, 2))
    return linen.Dense(3)(x.reshape(x.shape[0], -1))


class NnxMLP(nnx.Module):
  def __init__(self, rngs):
    # No bias before BN: its true gradient is 0, and Adam would turn the rounding noise in it
    # into steps of size lr whose signs differ between programs of different sizes.
    self.hidden = nnx.Linear(20, 16, use_bias=False, rngs=rngs)
    self.norm = nnx.BatchNorm(16, momentum=0.5, rngs=rngs)
    self.drop = nnx.Dropout(0.2, rngs=rngs)
    self.out = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(self.drop(nnx.relu(self.norm(self.hidden(x)))))


def _images(splits):
  """The 20 features of each example laid out as a 5x4 one-channel image."""
  return data_lib.Splits(*(data_lib.Examples(e.x.reshape(-1, 5, 4, 1), e.y) for e in splits))


def test_linen_cnn_member_equals_its_single_run():
  cfg = _config(model=models.from_linen(TinyCNN()), n_members=3, epochs=3,
                optimizer_kwargs={"learning_rate": 1e-2})
  splits = _images(_splits())
  full = ensemble.train(cfg, splits, progress=False)
  alone = ensemble.train(cfg, splits, members=[1], progress=False)
  assert _max_diff(_member(full.params, 1), _member(alone.params, 0)) <= 1e-5
  assert _max_diff(_member(full.params, 0), _member(full.params, 1)) > 1e-2
  assert (full.history["val_loss"][:, -1] < 0.9 * np.log(3)).all()  # Below chance level.


def test_nnx_batch_norm_and_dropout_ensemble_evaluates_with_population_statistics():
  cfg = _config(model=models.from_nnx(NnxMLP), n_members=3, epochs=3,
                optimizer_kwargs={"learning_rate": 1e-2})
  splits = _splits()
  result = ensemble.train(cfg, splits, progress=False)
  assert not result.diverged.any()
  assert (result.history["val_loss"][:, -1] < 0.6 * np.log(3)).all()
  means = np.asarray(result.best_state["norm"]["mean"][...])
  assert means.shape == (3, 16) and np.abs(means).max() > 1e-2  # Statistics were learned.
  x = splits.test.x
  batch = ensemble.predict(cfg, result.best_params, result.best_state, x)
  one = ensemble.predict(cfg, result.best_params, result.best_state, x[:1])
  np.testing.assert_allclose(one[:, 0], batch[:, 0], rtol=1e-5, atol=1e-6)
  alone = ensemble.train(cfg, splits, members=[2], progress=False)
  assert _max_diff(_member(result.params, 2), _member(alone.params, 0)) <= 1e-5


def _regression(k=None):
  rng = np.random.default_rng(0)
  w = rng.normal(size=(20,) if k is None else (20, k))
  def examples(n):
    x = rng.normal(size=(n, 20)).astype(np.float32)
    return data_lib.Examples(x, (x @ w + 0.1 * rng.normal(size=(n,) + w.shape[1:])).astype(
        np.float32))
  return data_lib.Splits(examples(256), examples(96), examples(32))


@pytest.mark.parametrize("k", [None, 2])
def test_mse_regression_reports_rmse_and_predicts_raw_outputs(k):
  out = 1 if k is None else k
  cfg = _config(model=nn.MLPConfig(sizes=(20, 32, out)), loss="mse", epochs=4,
                optimizer_kwargs={"learning_rate": 1e-2})
  splits = _regression(k)
  result = ensemble.train(cfg, splits, progress=False)
  assert set(result.history) == {"train_loss", "train_rmse", "val_loss", "val_rmse"}
  np.testing.assert_allclose(result.history["val_rmse"], np.sqrt(result.history["val_loss"]),
                             rtol=1e-6)
  preds = np.asarray(ensemble.predict(cfg, result.best_params, result.best_state, splits.val.x))
  assert preds.shape == (4, 96, out)
  errors = (preds.reshape(4, 96, -1) - splits.val.y.reshape(96, -1)) ** 2
  np.testing.assert_allclose(errors.mean(axis=(1, 2)), result.history["val_loss"].min(axis=1),
                             rtol=1e-4)
  assert (result.history["val_rmse"][:, -1] < 0.5 * np.std(splits.val.y)).all()


def test_callable_loss_is_the_only_metric():
  absolute = lambda out, y: jnp.mean(jnp.abs(out - y[:, None]), axis=-1)
  cfg = _config(model=nn.MLPConfig(sizes=(20, 16, 1)), loss=absolute, epochs=3,
                optimizer_kwargs={"learning_rate": 1e-2})
  result = ensemble.train(cfg, _regression(), progress=False)
  assert set(result.history) == {"train_loss", "val_loss"}
  assert (result.history["val_loss"][:, -1] < result.history["val_loss"][:, 0]).all()
  with pytest.raises(ValueError, match="one value per example"):
    ensemble.train(dataclasses.replace(cfg, loss=lambda out, y: jnp.mean(out)), _regression(),
                   progress=False)


@pytest.mark.parametrize("name, values, scalar_config", [
    ("l1", [0.0, 1e-4, 1e-3, 1e-2], lambda v: {"l1": v}),
    ("l2", [0.0, 1e-3, 1e-2, 0.1], lambda v: {"l2": v}),
    ("max_norm", [2.0, 1.0, 0.5, 0.3], lambda v: {"max_norm": v}),
    ("dropout", [0.0, 0.1, 0.3, 0.5], lambda v: {"model": dataclasses.replace(
        _config().model, dropout=v)}),
])
def test_per_member_regularisation_matches_separate_runs(name, values, scalar_config):
  splits = _splits()
  sweep = ensemble.train(_config(overrides={name: np.array(values)}, epochs=2), splits,
                         progress=False)
  unregularised = ensemble.train(_config(epochs=2), splits, members=[3], progress=False)
  for i in (1, 3):
    single = ensemble.train(_config(epochs=2, **scalar_config(values[i])), splits,
                            members=[i], progress=False)
    assert _max_diff(_member(sweep.params, i), _member(single.params, 0)) <= 1e-5
  # The value acts: member 3 with it differs from member 3 without it.
  assert _max_diff(_member(sweep.params, 3), _member(unregularised.params, 0)) > 1e-3


@pytest.mark.parametrize("noise", [
    lambda: optax.chain(optim.add_gradient_noise(eta=0.01, seed=1), optax.sgd(1e-2)),
    lambda: optax.chain(optax.add_noise(0.01, 0.55, 1), optax.sgd(1e-2)),
])
def test_optimizers_whose_state_holds_a_prng_key_train(noise):
  cfg = _config(optimizer=noise(), optimizer_kwargs=None, epochs=2)
  result = ensemble.train(cfg, _splits(), progress=False)
  assert not result.diverged.any()
  assert (result.history["val_loss"][:, -1] < result.history["val_loss"][:, 0]).all()


def test_without_a_terminal_progress_is_one_log_line_per_epoch(caplog):
  # pytest captures stderr, so the bar is silent and the epoch log takes its place.
  caplog.set_level("INFO", logger="absl")
  result = ensemble.train(_config(epochs=2), _splits(), progress=True)
  lines = [r.getMessage() for r in caplog.records if "jaxens: epoch" in r.getMessage()]
  assert [line.split(" in ")[0] for line in lines] == ["jaxens: epoch 1/2", "jaxens: epoch 2/2"]
  val_loss = float(lines[1].split("val_loss ")[1])
  np.testing.assert_allclose(val_loss, result.history["val_loss"][:, 1].mean(), atol=1e-4)
