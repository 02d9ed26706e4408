"""Greedy ensemble selection (Caruana et al. 2004) as one jitted ``lax.scan``.

Forward selection with replacement from a pool of M models' validation predictions. After
a sorted initialisation, which averages the ``init_size`` best single models, step ``t``
adds the candidate that minimises the loss of the running mean

.. math::

  m_t = \\arg\\min_m \\; L\\Big(\\frac{S_{t-1} + p_m}{k_{t-1} + 1}, y\\Big)
        + \\lambda \\, \\frac{\\Pi_{t-1} + \\pi_m}{k_{t-1} + 1},
  \\qquad S_t = S_{t-1} + p_{m_t}, \\quad k_t = k_{t-1} + 1,

where :math:`S` is the running *sum* of the picked predictions (repeats counted),
:math:`k` the ensemble size, :math:`\\pi` an optional per-model penalty (e.g. Keskar
sharpness) with weight :math:`\\lambda`, and :math:`\\Pi` the running sum of the picked
members' penalties. Ties go to the lowest model index. A model's weight is its pick count
divided by the ensemble size.

The loss of every candidate is evaluated at once in each step. For log-loss only the
true-class probabilities matter, so they are gathered once into an ``(N, M)`` matrix, and a
step takes one logarithm per group of samples: the log of the product of their clipped
probabilities (see :func:`_grouped_log_loss`).

References:
  Caruana, Niculescu-Mizil, Crew & Ksikes, 2004, Ensemble Selection from Libraries of
  Models, ICML (https://doi.org/10.1145/1015330.1015432).
  Perrone & Cooper, 1993, When Networks Disagree: Ensemble Methods for Hybrid Neural
  Networks (the generalised ensemble method, i.e. minimum-variance weights).
  Keskar et al., 2017, On Large-Batch Training for Deep Learning: Generalization Gap and
  Sharp Minima (https://arxiv.org/abs/1609.04836), the penalty of the sharpness-aware option.
"""

import functools
import math
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxens import _validation
from jaxens import losses

LOSSES = ("log_loss", "accuracy", "mse")
#: Allowed deviation of a probability row's sum from 1 (float32 softmax outputs drift ~1e-6).
PROB_SUM_TOL = 1e-3

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


class Selection(NamedTuple):
  """The path of a greedy selection.

  Without bagging (``n_bags=None``), with ``S = n_steps``:

  Attributes:
    weights: ``(S + 1, M)``, each model's pick count divided by the ensemble size; row 0
      is the sorted initialisation, row ``t`` the ensemble after ``t`` steps.
    loss: ``(S + 1,)``, the selection score (loss plus penalty term) of each row's ensemble.
    order: ``(S,)`` int, the model added at each step.
    n_steps: ``S``, the number of steps taken: ``max_iter`` with replacement, else
      ``min(M - init_size, max_iter)``.
    final_weights: ``(M,)``, ``weights[-1]``.
    init: ``(init_size,)`` int, the models of the sorted initialisation, best first.

  With ``n_bags = B`` every array but ``final_weights`` gains a leading bag axis:
  ``weights (B, S + 1, M)`` (mapped back to the full pool, zero outside the bag),
  ``loss (B, S + 1)``, ``order (B, S)`` and ``init (B, init_size)`` (full-pool indices);
  ``n_steps`` is the steps per bag, and ``final_weights (M,)`` is the mean over bags of
  ``weights[:, -1]``.
  """
  weights: jax.Array
  loss: jax.Array
  order: jax.Array
  n_steps: int
  final_weights: jax.Array
  init: jax.Array


class _Carry(NamedTuple):
  running_sum: jax.Array  # sum of the picked members' scoring predictions, (N,) or (N, C)
  penalty_sum: jax.Array  # sum of the picked members' penalties, ()
  available: jax.Array  # (M,) bool: candidates still in the pool


def greedy(preds, y, *, loss: Union[str, LossFn] = "log_loss", init_size: int = 1,
           replacement: bool = True, max_iter: int = 100, n_bags: Optional[int] = None,
           bag_fraction: float = 0.5, seed: int = 0, penalty=None,
           penalty_weight: float = 0.0) -> Selection:
  """Caruana's greedy forward selection with sorted initialisation (see module docstring).

  Args:
    preds: ``(M, N, C)`` class probabilities (``log_loss``, ``accuracy``), ``(M, N)``
      regression outputs (``mse``), or ``(M, N, ...)`` for a custom loss.
    y: ``(N,)`` integer labels, ``(N,)`` targets for ``mse``, or ``(N, ...)`` for a custom
      loss.
    loss: ``"log_loss"`` (probabilities clipped to [1e-8, 1 - 1e-8], not renormalised),
      ``"accuracy"`` (minimises 1 - accuracy; ties between candidates are frequent and go
      to the lowest index), ``"mse"``, or a jittable ``f(mean_pred, y) -> scalar`` called
      on one candidate ensemble's mean prediction ``(N, ...)``; it is a static argument,
      so pass the same function object to reuse the compiled scan. A candidate whose score
      is NaN is never chosen; if every candidate is NaN the step's loss reads ``inf``.
    init_size: number of best single models averaged to start, in [1, M].
    replacement: keep chosen models in the pool; without replacement a model (including
      the initial ones) leaves the pool once chosen.
    max_iter: number of selection steps (>= 0).
    n_bags: if set, run ``n_bags`` independent selections, each on a bag of
      ``min(M, max(init_size, floor(bag_fraction * M + 0.5)))`` models drawn without
      replacement from the pool (ties inside a bag still go to the lowest pool index), as
      one ``vmap``; ``final_weights`` is the mean of the bags' final weights. Each bag's
      predictions are gathered, so this holds ``n_bags`` bag-sized copies of the scoring
      predictions (``(M, N)`` for log-loss and mse, ``(M, N, C)`` otherwise).
    bag_fraction: fraction of the pool in each bag, in (0, 1].
    seed: seed of the bag draws.
    penalty: optional ``(M,)`` per-model penalty :math:`\\pi` (e.g. sharpness); an
      ensemble's score adds ``penalty_weight`` times the weighted mean of its members'
      penalties. The initial ranking uses the same score.
    penalty_weight: :math:`\\lambda \\ge 0`; 0 gives plain greedy selection.

  Returns:
    A :class:`Selection`.

  Example:
    >>> probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (5, 100, 3)))
    >>> labels = jax.random.randint(jax.random.key(1), (100,), 0, 3)
    >>> sel = greedy(probs, labels, max_iter=10)
    >>> sel.weights.shape, sel.order.shape
    ((11, 5), (10,))
  """
  preds, y, penalty, penalty_weight = _validate(
      preds, y, loss=loss, init_size=init_size, replacement=replacement, max_iter=max_iter,
      n_bags=n_bags, bag_fraction=bag_fraction, seed=seed, penalty=penalty,
      penalty_weight=penalty_weight)
  n_models = preds.shape[0]
  # The log-loss clip bound goes in as a runtime scalar: with constant bounds XLA:CPU splits
  # the step's fused pass over (M, N) in two and runs about 5x slower.
  clip_eps = jnp.asarray(losses.PROB_CLIP, preds.dtype)
  static = dict(loss=loss, init_size=init_size, replacement=replacement)
  if n_bags is None:
    n_steps = _n_steps(n_models, init_size, max_iter, replacement)
    weights, path_loss, order, init = _greedy_jit(
        preds, y, penalty, penalty_weight, clip_eps, n_steps=n_steps, **static)
    return Selection(weights, path_loss, order, n_steps, weights[-1], init)
  bag_size = min(n_models, max(init_size, math.floor(bag_fraction * n_models + 0.5)))
  n_steps = _n_steps(bag_size, init_size, max_iter, replacement)
  weights, path_loss, order, init = _bagged_greedy_jit(
      preds, y, penalty, penalty_weight, clip_eps, jax.random.key(seed), n_bags=n_bags,
      bag_size=bag_size, n_steps=n_steps, **static)
  return Selection(weights, path_loss, order, n_steps, jnp.mean(weights[:, -1], axis=0), init)


def min_variance_weights(preds, y):
  """Closed-form minimum-variance ensemble weights for MSE (Perrone & Cooper 1993).

  .. math:: w = \\frac{\\Sigma^{-1}\\mathbf 1}{\\mathbf 1^\\top \\Sigma^{-1} \\mathbf 1},
     \\qquad \\Sigma_{ij} = \\frac{1}{N}\\sum_n e_{i n} e_{j n}, \\quad e = \\hat y - y.

  :math:`\\Sigma` is the *uncentred* error second-moment matrix :math:`E[e_i e_j]`, which
  is what the MSE of a weighted average sees: :math:`\\mathrm{MSE}(w) = w^\\top\\Sigma w` for
  :math:`\\sum_i w_i = 1`. The weights minimise it over the affine set (they can be
  negative). A singular :math:`\\Sigma` (e.g. duplicate models) gets the pseudo-inverse, so
  duplicates share their weight equally.

  Args:
    preds: ``(M, N)`` predictions.
    y: ``(N,)`` targets.

  Returns:
    ``(M,)`` weights summing to 1.
  """
  preds = _as_float(preds, "preds")
  if preds.ndim != 2 or preds.shape[0] == 0 or preds.shape[1] == 0:
    raise ValueError(f"preds: expected a non-empty (M, N) array, got shape {preds.shape}")
  y = _as_float(y, "y")
  if y.shape != preds.shape[1:]:
    raise ValueError(f"y: expected shape {preds.shape[1:]} (N,), got {y.shape}")
  if not bool(jnp.all(jnp.isfinite(preds))):
    raise ValueError("preds: contains non-finite values")
  if not bool(jnp.all(jnp.isfinite(y))):
    raise ValueError("y: contains non-finite values")
  return _min_variance_jit(preds, y)


@jax.jit
def _min_variance_jit(preds, y):
  errors = preds - y[None, :]
  second_moment = errors @ errors.T / errors.shape[1]
  unnormalised = jnp.linalg.pinv(second_moment, hermitian=True) @ jnp.ones(
      preds.shape[0], preds.dtype)
  return unnormalised / jnp.sum(unnormalised)


def _validate(preds, y, *, loss, init_size, replacement, max_iter, n_bags, bag_fraction,
              seed, penalty, penalty_weight):
  """Eager checks of :func:`greedy`'s arguments; returns the converted arrays."""
  if not (callable(loss) or loss in LOSSES):
    raise ValueError(f"loss: expected one of {LOSSES} or a callable f(pred, y), got {loss!r}")
  preds = _as_float(preds, "preds")
  expected_ndim = {"log_loss": 3, "accuracy": 3, "mse": 2}.get(loss) if isinstance(
      loss, str) else None
  if expected_ndim is not None and preds.ndim != expected_ndim:
    layout = "(M, N, C) class probabilities" if expected_ndim == 3 else "(M, N) predictions"
    raise ValueError(f"preds: loss {loss!r} expects {layout}, got shape {preds.shape}")
  if preds.ndim < 2:
    raise ValueError(f"preds: expected (M, N, ...) predictions, got shape {preds.shape}")
  n_models, n_samples = preds.shape[:2]
  if n_models == 0 or n_samples == 0:
    raise ValueError(f"preds: expected at least one model and one sample, got {preds.shape}")
  low, high = jax.device_get(_min_max(preds))
  if not (np.isfinite(low) and np.isfinite(high)):  # min and max propagate NaN
    raise ValueError("preds: contains non-finite values")
  if loss == "log_loss":
    if low < 0 or high > 1:
      raise ValueError(f"preds: probabilities must lie in [0, 1], got range [{low}, {high}]")
    worst_row_sum = float(_worst_row_sum(preds))
    if worst_row_sum > PROB_SUM_TOL:
      raise ValueError(f"preds: probability rows must sum to 1 (tolerance {PROB_SUM_TOL}); "
                       f"the worst is off by {worst_row_sum}")

  y = jnp.asarray(y)
  if loss in ("log_loss", "accuracy"):
    if y.shape != (n_samples,) or not jnp.issubdtype(y.dtype, jnp.integer):
      raise ValueError(f"y: expected ({n_samples},) integer labels, got {y.dtype} {y.shape}")
    n_classes = preds.shape[2]
    if not bool(jnp.all((y >= 0) & (y < n_classes))):
      raise ValueError(f"y: labels must lie in [0, {n_classes}), got range "
                       f"[{int(jnp.min(y))}, {int(jnp.max(y))}]")
  elif loss == "mse":
    y = _as_float(y, "y")
    if y.shape != (n_samples,):
      raise ValueError(f"y: expected ({n_samples},) targets, got shape {y.shape}")
    if not bool(jnp.all(jnp.isfinite(y))):
      raise ValueError("y: contains non-finite values")
  else:
    if y.ndim == 0 or y.shape[0] != n_samples:
      raise ValueError(f"y: expected a leading axis of {n_samples} samples, got {y.shape}")
    out = jax.eval_shape(loss, preds[0], y)
    if getattr(out, "shape", None) != ():
      raise ValueError(f"loss: a custom loss must return a scalar, got {out}")

  _validation.check_int("init_size", init_size, 1, n_models)
  _validation.check_int("max_iter", max_iter, 0)
  if not isinstance(replacement, (bool, np.bool_)):
    raise ValueError(f"replacement: expected a bool, got {replacement!r}")
  if n_bags is not None:
    _validation.check_int("n_bags", n_bags, 1)
  if not isinstance(bag_fraction, (int, float, np.number)) or not 0 < bag_fraction <= 1:
    raise ValueError(f"bag_fraction: expected a number in (0, 1], got {bag_fraction!r}")
  _validation.check_int("seed", seed)
  if (not isinstance(penalty_weight, (int, float, np.number)) or isinstance(penalty_weight, bool)
      or not math.isfinite(penalty_weight) or penalty_weight < 0):
    raise ValueError(f"penalty_weight: expected a finite number >= 0, got {penalty_weight!r}")
  if penalty is None:
    if penalty_weight != 0:
      raise ValueError("penalty_weight: a non-zero weight needs a penalty vector")
    penalty = jnp.zeros(n_models, preds.dtype)
  else:
    penalty = _as_float(penalty, "penalty")
    if penalty.shape != (n_models,):
      raise ValueError(f"penalty: expected shape ({n_models},), one per model, "
                       f"got {penalty.shape}")
    if not bool(jnp.all(jnp.isfinite(penalty))):
      raise ValueError("penalty: contains non-finite values")
  return preds, y, penalty.astype(preds.dtype), jnp.asarray(penalty_weight, preds.dtype)


@jax.jit
def _min_max(x):
  return jnp.min(x), jnp.max(x)


@jax.jit
def _worst_row_sum(probs):
  """Largest deviation of a row sum from 1; a matrix-vector product is XLA:CPU's fast sum."""
  return jnp.max(jnp.abs(probs @ jnp.ones(probs.shape[-1], probs.dtype) - 1))


def _as_float(x, name):
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool:
    return x.astype(jnp.result_type(float))
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: expected a real-valued array, got dtype {x.dtype}")
  return x


def _n_steps(pool_size, init_size, max_iter, replacement):
  return max_iter if replacement else min(pool_size - init_size, max_iter)


def _scoring_pool(loss, preds, y):
  """What a step reads per model: the true-class probabilities for log-loss, the classes and
  the true class for accuracy, else ``preds``.

  The log-loss pool is ``(N, M)``, models last (see :func:`_model_axis`). Gathering from
  swapped axes writes that layout in one pass; transposing the gathered ``(M, N)`` matrix
  would cost XLA:CPU two more copies. The accuracy pool is ``(M, C + 1, N)``: the classes,
  then the true class as row ``C``, samples last, so that a step compares whole rows (see
  :func:`_error_rate`). The others keep ``preds``' ``(M, N, ...)``.
  """
  if loss == "log_loss":
    return jnp.take_along_axis(jnp.swapaxes(preds, 0, 1), y[:, None, None], axis=2)[..., 0]
  if loss == "accuracy":
    true_class = jnp.take_along_axis(preds, y[None, :, None], axis=2)
    return jnp.swapaxes(jnp.concatenate([preds, true_class], axis=2), 1, 2)
  return preds


def _model_axis(loss):
  """The axis of the scoring pool that indexes models.

  Log-loss puts models last: a step's sums over samples then run down the columns, which
  XLA:CPU vectorises along the models, and the grouped products of
  :func:`_grouped_log_loss` multiply whole row blocks; with models first the step is ~1.2x
  slower.
  """
  return 1 if loss == "log_loss" else 0


def _candidate_losses(loss, pool, y, running_sum, size, clip_eps):
  """Loss of every candidate ensemble ``(running_sum + pool[m]) / size``, shape ``(M,)``.

  ``pool[m]`` is model ``m``'s slice along :func:`_model_axis`.
  """
  if loss == "log_loss":
    return _grouped_log_loss(pool, running_sum, size, clip_eps)
  candidate_sums = running_sum[None] + pool
  if loss == "accuracy":
    # The arg-max is scale-free, so the sum stands in for the mean.
    return _error_rate(candidate_sums, y)
  if loss == "mse":
    return losses.mse(candidate_sums / size, y[None, :])
  return jax.vmap(lambda s: loss(s / size, y))(candidate_sums)


def _error_rate(candidate_sums, y):
  """``1 - accuracy`` of every candidate from its ``(C + 1, N)`` class sums (row ``C``: the
  true class's), equal to ``1 - losses.accuracy`` of the ``(N, C)`` sums.

  Sample ``n`` is right when its true class ``y`` wins the arg-max: no class before ``y``
  reaches its sum and none after exceeds it (ties go to the lowest class). Comparing whole
  rows of samples vectorises, unlike an arg-max over the 10 classes of each sample, and the
  true class's sum is read from row ``C`` instead of gathered.
  """
  n_classes = candidate_sums.shape[1] - 1
  class_sums, true_sums = candidate_sums[:, :n_classes], candidate_sums[:, n_classes:]
  before_true = jnp.arange(n_classes)[:, None] < y[None, :]
  beaten = jnp.where(before_true, class_sums >= true_sums, class_sums > true_sums)
  right = ~jnp.any(beaten, axis=1)
  return 1.0 - jnp.mean(right.astype(jnp.float32), axis=-1)


def _grouped_log_loss(pool, running_sum, size, clip_eps):
  """:func:`losses.log_loss_true_class` of every candidate, from an ``(N, M)`` pool.

  The M N logarithms bound a step on XLA:CPU, not its memory traffic. A sum of logs is the
  log of a product, so the clipped probabilities of :func:`_log_group` samples are multiplied
  first, one sample from each of that many contiguous row blocks (element-wise products of
  whole blocks), and one log is taken per product. The rows left over when the group size
  does not divide N get one log each.
  """
  n_samples, n_models = pool.shape
  group = _log_group(pool.dtype)
  n_grouped = n_samples - n_samples % group

  def log_sum(rows, n_blocks):
    # Clipped from sliced inputs rather than sliced after clipping, which would make XLA
    # write the whole clipped matrix out first.
    probs = jnp.clip((running_sum[rows, None] + pool[rows]) / size, clip_eps, 1 - clip_eps)
    products = jnp.prod(probs.reshape(n_blocks, -1, n_models), axis=0)
    return jnp.sum(jnp.log(products), axis=0)

  total = log_sum(slice(0, n_grouped), group)
  if n_grouped < n_samples:
    total += log_sum(slice(n_grouped, n_samples), 1)
  return -total / n_samples


def _log_group(dtype):
  """How many clipped probabilities to multiply before a log, at most 4.

  The product of that many factors in ``[PROB_CLIP, 1]`` stays a normal number of
  ``dtype`` (float32: 1e-32 > 1.2e-38), so no precision is lost to underflow; 1 where even
  two factors could underflow (float16). Groups above 4 measured no faster.
  """
  fits = math.log(jnp.finfo(dtype).tiny) / math.log(losses.PROB_CLIP)
  return max(1, min(4, math.floor(fits)))


def _greedy_path(pool, y, penalty, penalty_weight, clip_eps, *, loss, init_size, replacement,
                 n_steps):
  """One selection on a scoring pool; returns the arrays of :class:`Selection`."""
  axis = _model_axis(loss)
  n_models = pool.shape[axis]
  dtype = pool.dtype

  def scores(running_sum, penalty_sum, size):
    penalty_term = penalty_weight * (penalty_sum + penalty) / size
    return _candidate_losses(loss, pool, y, running_sum, size, clip_eps) + penalty_term

  zero_sum = jnp.zeros(pool.shape[:axis] + pool.shape[axis + 1:], dtype)
  single_scores = scores(zero_sum, jnp.zeros((), dtype), jnp.ones((), dtype))
  init = jnp.argsort(single_scores, stable=True)[:init_size]  # NaN sorts last
  init_size_f = jnp.asarray(init_size, dtype)
  init_sum = jnp.sum(jnp.take(pool, init, axis=axis), axis=axis)
  init_penalty_sum = jnp.sum(penalty[init])
  init_loss = (_candidate_losses(loss, jnp.expand_dims(init_sum, axis), y, zero_sum,
                                 init_size_f, clip_eps)[0]
               + penalty_weight * init_penalty_sum / init_size_f)

  def step(carry, size):
    step_scores = scores(carry.running_sum, carry.penalty_sum, size)
    # A NaN score (a broken custom loss) never wins; argmin would otherwise pick it.
    step_scores = jnp.where(carry.available & ~jnp.isnan(step_scores), step_scores, jnp.inf)
    best = jnp.argmin(step_scores)  # first minimum: ties go to the lowest index
    available = carry.available if replacement else carry.available.at[best].set(False)
    member = jax.lax.dynamic_index_in_dim(pool, best, axis, keepdims=False)
    carry = _Carry(carry.running_sum + member, carry.penalty_sum + penalty[best], available)
    return carry, (best, step_scores[best])

  available = jnp.ones(n_models, bool)
  if not replacement:
    available = available.at[init].set(False)
  sizes = jnp.arange(init_size + 1, init_size + n_steps + 1).astype(dtype)
  _, (order, step_loss) = jax.lax.scan(
      step, _Carry(init_sum, init_penalty_sum, available), sizes)

  init_counts = jnp.zeros(n_models, dtype).at[init].add(1)
  step_counts = jnp.cumsum(jax.nn.one_hot(order, n_models, dtype=dtype), axis=0)
  counts = init_counts[None, :] + jnp.concatenate(
      [jnp.zeros((1, n_models), dtype), step_counts])
  ensemble_sizes = jnp.arange(init_size, init_size + n_steps + 1).astype(dtype)
  weights = counts / ensemble_sizes[:, None]
  path_loss = jnp.concatenate([init_loss[None], step_loss.astype(init_loss.dtype)])
  return weights, path_loss, order, init


_STATIC = ("loss", "init_size", "replacement", "n_steps")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _greedy_jit(preds, y, penalty, penalty_weight, clip_eps, **static):
  pool = _scoring_pool(static["loss"], preds, y)
  return _greedy_path(pool, y, penalty, penalty_weight, clip_eps, **static)


@functools.partial(jax.jit, static_argnames=_STATIC + ("n_bags", "bag_size"))
def _bagged_greedy_jit(preds, y, penalty, penalty_weight, clip_eps, key, *, n_bags, bag_size,
                       **static):
  n_models = preds.shape[0]
  pool = _scoring_pool(static["loss"], preds, y)  # gather the true class once, then bag
  bags = jax.vmap(lambda k: jnp.sort(jax.random.permutation(k, n_models)[:bag_size]))(
      jax.random.split(key, n_bags))
  weights, path_loss, order, init = jax.vmap(
      lambda bag: _greedy_path(jnp.take(pool, bag, axis=_model_axis(static["loss"])), y,
                               penalty[bag], penalty_weight, clip_eps, **static))(bags)
  full_weights = jax.vmap(
      lambda w, bag: jnp.zeros((w.shape[0], n_models), w.dtype).at[:, bag].set(w))(
          weights, bags)
  return (full_weights, path_loss, jnp.take_along_axis(bags, order, axis=1),
          jnp.take_along_axis(bags, init, axis=1))
