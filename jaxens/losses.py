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


def expected_calibration_error(probs, labels, n_bins=15):
  r"""Expected calibration error with equal-width confidence bins (Guo et al. 2017).

  .. math:: \mathrm{ECE} = \sum_{b=1}^{B} \frac{|S_b|}{N}
     \left| \mathrm{acc}(S_b) - \mathrm{conf}(S_b) \right|

  where the confidence of example :math:`i` is :math:`\max_c p_{ic}`, :math:`S_b` holds the
  examples whose confidence lies in :math:`((b-1)/B, b/B]` (a confidence of 0 joins the first
  bin), and acc and conf are the bin's accuracy and mean confidence.

  Args:
    probs: ``(..., N, C)`` class probabilities.
    labels: ``(N,)`` integer labels.
    n_bins: B, a static number of bins.
  """
  confidence = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == jnp.broadcast_to(labels, confidence.shape))
  bins = jnp.clip(jnp.ceil(confidence * n_bins).astype(jnp.int32) - 1, 0, n_bins - 1)
  in_bin = jax.nn.one_hot(bins, n_bins, dtype=probs.dtype)  # (..., N, B)
  gap = jnp.sum(in_bin * (correct.astype(probs.dtype) - confidence)[..., None], axis=-2)
  return jnp.sum(jnp.abs(gap), axis=-1) / confidence.shape[-1]


def disagreement(probs_a, probs_b):
  """The fraction of examples on which two models' arg-max classes differ.

  ``probs_a`` and ``probs_b`` are ``(..., N, C)`` probabilities or logits.
  """
  differ = jnp.argmax(probs_a, axis=-1) != jnp.argmax(probs_b, axis=-1)
  return jnp.mean(differ.astype(jnp.float32), axis=-1)


def pairwise_disagreement(pool):
  r"""Mean :func:`disagreement` over the :math:`M(M-1)/2` distinct pairs of a pool.

  ``pool`` is ``(M, N, C)``, M >= 2. Computed from the class counts per example:
  pairs that agree on example :math:`i` are :math:`\sum_c \binom{k_{ic}}{2}`.
  """
  n_models, _, n_classes = pool.shape
  counts = jnp.sum(jax.nn.one_hot(jnp.argmax(pool, axis=-1), n_classes, dtype=jnp.float32),
                   axis=0)  # (N, C)
  pairs = n_models * (n_models - 1) / 2
  agreeing = jnp.sum(counts * (counts - 1) / 2, axis=-1)
  return jnp.mean(1.0 - agreeing / pairs)


def mean_kl_to_ensemble(pool, *, eps=PROB_CLIP):
  r"""Mean over the pool's models and examples of :math:`\mathrm{KL}(p_m \,\|\, \bar p)`.

  .. math:: \frac{1}{MN} \sum_{m,i} \sum_c p_{mic} \log \frac{p_{mic}}{\bar p_{ic}},
     \qquad \bar p = \frac{1}{M} \sum_m p_m,

  the diversity term of the ensemble's log-loss decomposition; probabilities are clipped
  below at ``eps`` inside the logarithms. ``pool`` is ``(M, N, C)`` probabilities.
  """
  mean = jnp.mean(pool, axis=0, keepdims=True)
  log_ratio = jnp.log(jnp.clip(pool, eps, 1.0)) - jnp.log(jnp.clip(mean, eps, 1.0))
  return jnp.mean(jnp.sum(pool * log_ratio, axis=-1))
