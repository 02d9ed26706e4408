"""Bad input to ``ensemble.train``/``predict`` raises a ValueError naming the argument, before
anything is compiled; the accepted forms of data and optimizer train."""

import dataclasses

import numpy as np
import optax
import pytest

from jaxens import data as data_lib
from jaxens import ensemble
from jaxens import nn
from test_ensemble import _config
from test_ensemble import _max_diff
from test_ensemble import _splits


def _with(splits, split, x=None, y=None):
  examples = getattr(splits, split)
  replaced = data_lib.Examples(examples.x if x is None else x, examples.y if y is None else y)
  return splits._replace(**{split: replaced})


def _labels(splits, value, index=0, split="train"):
  y = getattr(splits, split).y.copy()
  y[index] = value
  return _with(splits, split, y=y)


def _nan_x(splits):
  x = splits.train.x.copy()
  x[3, 2] = np.nan
  return _with(splits, "train", x=x)


@pytest.mark.parametrize("make_data, kwargs, message", [
    (lambda s: _labels(s, 3), {}, r"data.train: labels must lie in \[0, 3\)"),
    (lambda s: _labels(s, -1, split="val"), {}, r"data.val: labels must lie in \[0, 3\)"),
    (_nan_x, {}, "data.train: x holds 1 non-finite"),
    (lambda s: s, {"model": nn.MLPConfig(sizes=(20, 8, 1))}, "2 outputs"),
    (lambda s: _with(s, "train", s.train.x[:0], s.train.y[:0]), {}, "data.train: expected at "
     "least one example"),
    (lambda s: _with(s, "train", y=s.train.y.astype(np.float32)), {}, "data.train: "
     "'cross_entropy' needs integer labels"),
    (lambda s: s, {"loss": "mse"}, "data.train: 'mse' needs float targets"),
    (lambda s: _with(s, "train", x=s.train.x[:, :10]), {}, r"data.train: the model cannot "
     r"take x of shape \(N,\) \+ \(10,\)"),
    (lambda s: _with(s, "val", x=s.val.x[:, None]), {}, "data.val: expected x of shape"),
    (lambda s: _with(s, "train", x=s.train.x.astype(str)), {}, "data.train: expected float or "
     "integer x"),
    (lambda s: (s.train,), {}, r"data: expected jaxens.data.Splits or a \(train, val"),
    (lambda s: s, {"loss": "hinge"}, "loss: expected one of"),
    (lambda s: s, {"optimizer": "momentum", "overrides": {"learning_rate": -np.ones(4)}},
     "learning_rate: expected a value >= 0"),
    (lambda s: s, {"optimizer": "adam", "overrides": {"b1": np.full(4, 1.5)}},
     r"b1: expected a value in \[0, 1\)"),
    (lambda s: s, {"overrides": {"l2": np.array([0.0, -1.0, 0.0, 0.0])}}, "overrides.'l2'"),
    (lambda s: s, {"l1": -1.0}, "l1: expected a non-negative weight"),
    (lambda s: s, {"overrides": {"max_norm": np.zeros(4)}}, "overrides.'max_norm'"),
    (lambda s: s, {"overrides": {"dropout": np.ones(4)}}, "overrides.'dropout'"),
    (lambda s: s, {"overrides": {"learning_rate": np.array([1, 2, np.nan, 4.0])}},
     "overrides.'learning_rate'.: expected finite"),
    (lambda s: s, {"overrides": {"not_a_kwarg": np.ones(4)}}, "does not accept"),
    (lambda s: s, {"optimizer": optax.adam(1e-3)}, "optimizer_kwargs: expected None"),
    (lambda s: s, {"optimizer": optax.adam(1e-3), "optimizer_kwargs": None,
                   "overrides": {"learning_rate": np.ones(4)}}, "cannot vary per member"),
    (lambda s: s, {"model": "mlp"}, "model: expected"),
])
def test_bad_data_and_config_are_refused_before_training(make_data, kwargs, message):
  with pytest.raises(ValueError, match=message):
    ensemble.train(_config(**kwargs), make_data(_splits()), progress=False)


def test_predict_refuses_an_empty_x():
  cfg = _config()
  result = ensemble.train(cfg, _splits(), progress=False)
  with pytest.raises(ValueError, match="x: expected at least one example"):
    ensemble.predict(cfg, result.params, result.state, np.zeros((0, 20), np.float32))


def test_tuples_of_pairs_and_integer_x_train_like_splits():
  splits = _splits()
  cfg = _config()
  reference = ensemble.train(cfg, splits, progress=False)
  as_tuple = ensemble.train(cfg, ((splits.train.x, splits.train.y),
                                  (splits.val.x, splits.val.y)), progress=False)
  assert _max_diff(reference.params, as_tuple.params) == 0.0
  quantised = tuple(data_lib.Examples(np.round(e.x * 10).astype(np.int8), e.y) for e in splits)
  result = ensemble.train(cfg, quantised, progress=False)
  assert np.isfinite(result.history["val_loss"]).all()


def test_a_ready_gradient_transformation_equals_its_factory():
  splits = _splits()
  factory = ensemble.train(_config(optimizer=optax.adam,
                                   optimizer_kwargs={"learning_rate": 3e-3}), splits,
                           progress=False)
  ready = ensemble.train(_config(optimizer=optax.adam(3e-3), optimizer_kwargs=None), splits,
                         progress=False)
  assert _max_diff(factory.params, ready.params) == 0.0


def test_split_train_val_works_on_user_arrays():
  x = np.arange(100, dtype=np.float32).reshape(50, 2)
  y = np.arange(50) % 3
  train, val = data_lib.split_train_val(x, y, val_fraction=0.2, seed=1)
  assert len(val.y) == 10 and len(train.y) == 40
  np.testing.assert_array_equal(np.sort(np.concatenate([train.x[:, 0], val.x[:, 0]])),
                                x[:, 0])
  assert (np.diff(train.x[:, 0]) > 0).all()  # Original order kept.
  ensemble.train(dataclasses.replace(_config(model=nn.MLPConfig(sizes=(2, 4, 3)), batch_size=8)),
                 (train, val), progress=False)
