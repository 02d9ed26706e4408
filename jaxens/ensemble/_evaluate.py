"""Evaluation-mode outputs and metrics of trained members, and ``predict``."""

import functools

import jax
import jax.numpy as jnp

from jaxens import _validation
from jaxens import losses
from jaxens import models
from jaxens.ensemble import _config
from jaxens.ensemble import _tasks

EVAL_BATCH_SIZE = 1000


def outputs_in_batches(model, params, state, x, batch_size):
  """One member's evaluation-mode outputs on ``x`` (N, ...), ``batch_size`` rows at a time so
  memory stays bounded."""
  n = x.shape[0]
  n_batches = -(-n // batch_size)
  padded = jnp.pad(x, ((0, n_batches * batch_size - n),) + ((0, 0),) * (x.ndim - 1))
  out = jax.lax.map(lambda xb: model.apply(params, state, xb, train=False, rng=None)[0],
                    padded.reshape((n_batches, batch_size) + x.shape[1:]))
  return out.reshape((n_batches * batch_size,) + out.shape[2:])[:n]


def metrics(model, task, params, state, x, y, batch_size):
  """One member's evaluation-mode metrics ``{name: mean}`` on ``(x, y)``."""
  return task.finish(task.metrics(outputs_in_batches(model, params, state, x, batch_size), y))


def evaluate(model, params, state, x, y, batch_size=EVAL_BATCH_SIZE, loss="cross_entropy"):
  """Evaluation-mode metrics of one member on ``(x, y)``, in the order of ``loss``'s metrics:
  ``(log-loss, accuracy)`` for cross-entropy, ``(mse, rmse)`` for MSE, ``(loss,)`` for a
  callable. ``model`` is an ``nn.MLPConfig`` or a ``Model``; ``jax.vmap`` it over stacked
  members."""
  task = _tasks.task(loss)
  values = metrics(models.resolve(model), task, params, state, x, y, batch_size)
  return tuple(values[name] for name in task.metric_names)


def eval_loss(model, state, params, x, y):
  """Mean log-loss of one member on ``(x, y)`` in evaluation mode (BN population statistics).

  ``state`` comes before ``params`` so that ``functools.partial(eval_loss, model, state)`` is
  the ``loss_fn(params, x, y)`` that ``jaxens.sharpness`` perturbs. ``loss_fn`` is a static
  argument there: build the partial inside your own jitted (e.g. vmapped over members)
  function, as the experiments do, or reuse one partial; a new partial per eager call compiles
  anew.
  """
  logits, _ = models.resolve(model).apply(params, state, x, train=False, rng=None)
  return losses.log_loss_from_logits(logits, y)


def predict(cfg, params, state, x, batch_size=EVAL_BATCH_SIZE, loss=None):
  """Every member's evaluation-mode prediction, ``(E, N, ...)``: class probabilities for
  cross-entropy, the model's raw output otherwise.

  Args:
    cfg: a ``TrainConfig``, or a model (``nn.MLPConfig``, ``Model``) alone.
    params, state: stacked member parameters and model state (leading axis E).
    x: ``(N, ...)`` inputs, N >= 1.
    batch_size: examples per forward pass, to bound memory.
    loss: the task; default ``cfg.loss`` for a ``TrainConfig``, else ``"cross_entropy"``.
  """
  if isinstance(cfg, _config.TrainConfig):
    model, loss = cfg.network, cfg.loss if loss is None else loss
  else:
    model, loss = models.resolve(cfg), "cross_entropy" if loss is None else loss
  x = jnp.asarray(x)
  if x.ndim < 1 or x.shape[0] < 1:
    raise ValueError(f"x: expected at least one example, got shape {tuple(x.shape)}")
  _validation.check_int("batch_size", batch_size, 1)
  return _predict(model, _tasks.task(loss).predict, params, state, x,
                  min(batch_size, x.shape[0]))


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def _predict(model, output_fn, params, state, x, batch_size):
  return jax.vmap(lambda p, s: output_fn(outputs_in_batches(model, p, s, x, batch_size)))(
      params, state)
