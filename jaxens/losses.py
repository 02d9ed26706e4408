"""Jittable metrics shared by training, evaluation and ensemble selection.

Every function maps a batch of predictions and its targets to a scalar mean, so the
same function scores a training step, a checkpoint and a candidate ensemble.
Predictions carry the class axis last: ``probs_NxC`` or ``logits_NxC``; leading axes (members,
selection steps) broadcast against the ``(N,)`` labels and stay in the result.
"""

import jax
import jax.numpy as jnp

#: The clipping used by the published selection loop (Caruana tutorial): [1e-8, 1 - 1e-8].
PROB_CLIP = 1e-8


def log_loss(probs, labels, *, eps=PROB_CLIP):
  r"""Mean cross-entropy from class probabilities.

  .. math:: -\frac{1}{N}\sum_i \log \mathrm{clip}(p_{i,y_i}, \epsilon, 1-\epsilon)

  Probabilities are clipped, not renormalised, as in the published selection loop.

  Args:
    probs: ``(..., N, C)`` class probabilities.
    labels: ``(N,)`` integer labels.
    eps: clipping bound.
  """
  return log_loss_true_class(_true_class(probs, labels), eps=eps)


def log_loss_true_class(p_true, *, eps=PROB_CLIP):
  """Mean cross-entropy from the probabilities of the true classes alone, ``(..., N)``."""
  return -jnp.mean(jnp.log(jnp.clip(p_true, eps, 1.0 - eps)), axis=-1)


def log_loss_from_logits(logits, labels):
  r"""Mean cross-entropy from logits, :math:`-\frac{1}{N}\sum_i \log\mathrm{softmax}(z_i)_{y_i}`."""
  return -jnp.mean(_true_class(jax.nn.log_softmax(logits, axis=-1), labels), axis=-1)


def accuracy(scores, labels):
  """Fraction of rows whose arg-max (over probabilities or logits) equals the label.

  Ties go to the lowest class index, as ``argmax`` does.
  """
  labels = jnp.broadcast_to(labels, scores.shape[:-1])
  return jnp.mean((jnp.argmax(scores, axis=-1) == labels).astype(jnp.float32), axis=-1)


def mse(preds, targets):
  r"""Mean squared error :math:`\frac{1}{N}\sum_i (\hat y_i - y_i)^2` over the last axis."""
  return jnp.mean(jnp.square(preds - jnp.broadcast_to(targets, preds.shape)), axis=-1)


def _true_class(values, labels):
  """``values[..., n, labels[n]]`` for ``(..., N, C)`` values and ``(N,)`` labels."""
  labels = jnp.broadcast_to(labels, values.shape[:-1])
  return jnp.take_along_axis(values, labels[..., None], axis=-1)[..., 0]


def brier(probs, labels):
  r"""Multi-class Brier score :math:`\frac{1}{N}\sum_i \lVert p_i - e_{y_i} \rVert_2^2`."""
  onehot = jax.nn.one_hot(jnp.broadcast_to(labels, probs.shape[:-1]), probs.shape[-1],
                          dtype=probs.dtype)
  return jnp.mean(jnp.sum(jnp.square(probs - onehot), axis=-1), axis=-1)
