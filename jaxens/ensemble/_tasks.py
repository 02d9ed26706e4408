"""The loss a member trains on, the metrics it reports, and what ``predict`` returns.

A task turns ``TrainConfig.loss`` into:
- ``metrics(out, y)``: the batch means that the history records (``loss`` first);
- ``finish(means)``: metrics derived from those means (RMSE from the mean squared error);
- ``predict(out)``: what ``ensemble.predict`` returns (probabilities for cross-entropy);
- ``check_targets(y, out_shape, name)``: the eager check of ``y`` against the model's output.
"""

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxens import losses

LOSSES = ("cross_entropy", "mse")


def _identity(out):
  return out


class Task(NamedTuple):
  metric_names: tuple
  metrics: Callable
  finish: Callable
  predict: Callable
  check_targets: Callable


def _cross_entropy_metrics(logits, y):
  return {"loss": losses.log_loss_from_logits(logits, y),
          "accuracy": losses.accuracy(logits, y)}


def _check_labels(y, out_shape, name):
  if len(out_shape) != 2 or out_shape[-1] < 2:
    raise ValueError(
        f"loss: 'cross_entropy' needs a model output of shape (batch, C) with C >= 2 classes, "
        f"got {out_shape}; for a binary task give the model 2 outputs")
  n_classes = out_shape[-1]
  if not np.issubdtype(np.asarray(y).dtype, np.integer) or np.ndim(y) != 1:
    raise ValueError(f"{name}: 'cross_entropy' needs integer labels y of shape (N,), got "
                     f"dtype {np.asarray(y).dtype} and shape {np.shape(y)}")
  if len(y) and not 0 <= np.min(y) <= np.max(y) < n_classes:
    raise ValueError(f"{name}: labels must lie in [0, {n_classes}) for a model with "
                     f"{n_classes} outputs, got values in [{np.min(y)}, {np.max(y)}]")


def _squared_errors(out, y):
  """Per-example mean squared error; a model output (B, 1) meets targets (B,)."""
  if out.ndim == y.ndim + 1 and out.shape[-1] == 1:
    out = out[..., 0]
  return jnp.mean(jnp.square(out - y).reshape(y.shape[0], -1), axis=-1)


def _check_regression_targets(y, out_shape, name):
  y = np.asarray(y)
  if not np.issubdtype(y.dtype, np.floating):
    raise ValueError(f"{name}: 'mse' needs float targets y, got dtype {y.dtype}; for class "
                     "labels use loss='cross_entropy'")
  if not np.isfinite(y).all():
    raise ValueError(f"{name}: y holds non-finite values")
  per_example = tuple(out_shape[1:])
  if per_example not in (y.shape[1:], y.shape[1:] + (1,)):
    raise ValueError(f"{name}: targets of shape {y.shape} do not match the model's output "
                     f"{tuple(out_shape)} (expected y of shape (N,) + {per_example})")


def _finish_regression(means):
  return {**means, "rmse": jnp.sqrt(means["loss"])}


def _custom(loss_fn):
  def mean_loss(out, y):
    return jnp.mean(loss_fn(out, y))

  def check_targets(y, out_shape, name):
    n = min(2, len(y))
    out = jax.ShapeDtypeStruct((n,) + tuple(out_shape[1:]), jnp.float32)
    try:
      per_example = jax.eval_shape(loss_fn, out, jnp.asarray(np.asarray(y)[:n]))
    except Exception as error:  # The user's loss: any failure is reported with its cause.
      raise ValueError(
          f"loss: the callable failed on the model's output and {name}.y: {error}") from error
    if per_example.shape != (n,):
      raise ValueError(f"loss: expected loss(out, y) to return one value per example, "
                       f"got shape {per_example.shape} for a batch of {n}")

  return Task(("loss",), lambda out, y: {"loss": mean_loss(out, y)},
              _identity, _identity, check_targets)


_CROSS_ENTROPY = Task(("loss", "accuracy"), _cross_entropy_metrics,
                      _identity, functools.partial(jax.nn.softmax, axis=-1), _check_labels)
_MSE = Task(("loss", "rmse"), lambda out, y: {"loss": jnp.mean(_squared_errors(out, y))},
            _finish_regression,
            _identity, _check_regression_targets)


def task(loss) -> Task:
  """The :class:`Task` of ``TrainConfig.loss``."""
  if callable(loss):
    return _custom(loss)
  if loss == "cross_entropy":
    return _CROSS_ENTROPY
  if loss == "mse":
    return _MSE
  raise ValueError(f"loss: expected one of {LOSSES} or a callable loss(out, y) -> "
                   f"per-example loss, got {loss!r}")


def history_keys(task_):
  return tuple(f"{split}_{name}" for split in ("train", "val") for name in task_.metric_names)
