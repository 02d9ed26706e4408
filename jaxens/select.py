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
members' penalties. By default ties go to the lowest model index; ``tie_breaker`` and
``tie_tolerance`` give AutoGluon's and auto-sklearn's rules. A model's weight is its pick
count divided by the ensemble size; ``use_best`` keeps the ensemble of the step with the
lowest loss on the path (AutoGluon's ``use_best``).

The loss of every candidate is evaluated at once in each step. For log-loss only the
true-class probabilities matter, so they are gathered once into an ``(N, M)`` matrix (or
given directly, :func:`greedy_from_true_class`), and a step takes one logarithm per group of
samples: the log of the product of their clipped probabilities (see
:func:`_grouped_log_loss`). Half-precision pools (float16, bfloat16) are scored in float32.
A matrix larger than device memory can stay on the host and be read in row chunks
(``greedy_from_true_class(..., chunk_size=...)``, :mod:`jaxens._select_stream`); a pool
sharded over devices on the member or the sample axis is selected where it lies. Accuracy
can skip the samples that no candidate can flip (``margin_skip``).

References:
  Caruana, Niculescu-Mizil, Crew & Ksikes, 2004, Ensemble Selection from Libraries of
  Models, ICML (https://doi.org/10.1145/1015330.1015432).
  Caruana, Munson & Niculescu-Mizil, 2006, Getting the Most Out of Ensemble Selection, ICDM
  (bagged selection, sorted initialisation).
  Feurer et al., 2015, Efficient and Robust Automated Machine Learning, NeurIPS
  (auto-sklearn's ``EnsembleSelection``); Erickson et al., 2020, AutoGluon-Tabular
  (https://arxiv.org/abs/2003.06505), whose ``EnsembleSelection`` has ``use_best``,
  ``subsample_size`` and the used-model tie preference.
  Perrone & Cooper, 1993, When Networks Disagree: Ensemble Methods for Hybrid Neural
  Networks (the generalised ensemble method, i.e. minimum-variance weights).
  Keskar et al., 2017, On Large-Batch Training for Deep Learning: Generalization Gap and
  Sharp Minima (https://arxiv.org/abs/1609.04836), the penalty of the sharpness-aware option.
  Koenker & Bassett, 1978, Regression Quantiles, Econometrica (the pinball loss).
"""

import functools
import math
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxens import _validation
from jaxens import losses

CLASSIFICATION_LOSSES = ("log_loss", "accuracy")
REGRESSION_LOSSES = ("mse", "mae", "pinball")
LOSSES = CLASSIFICATION_LOSSES + REGRESSION_LOSSES
TIE_BREAKERS = ("first", "random", "fewest_models")
#: Allowed deviation of a probability row's sum from 1 (float32 softmax outputs drift ~1e-6);
#: half-precision pools get twice their machine epsilon when that is larger (see
#: :func:`prob_sum_tolerance`).
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
    final_weights: ``(M,)``, ``weights[best_step]``: the last row, or with ``use_best`` the
      first row of lowest loss.
    init: ``(init_size,)`` int, the models of the sorted initialisation, best first.
    best_step: ``()`` int, the row of ``weights`` that ``final_weights`` is: ``S``, or with
      ``use_best`` the first minimum of ``loss``.

  With ``n_bags = B`` every array but ``final_weights`` gains a leading bag axis:
  ``weights (B, S + 1, M)`` (mapped back to the full pool, zero outside the bag),
  ``loss (B, S + 1)``, ``order (B, S)``, ``init (B, init_size)`` (full-pool indices) and
  ``best_step (B,)``; ``n_steps`` is the steps per bag, and ``final_weights (M,)`` is the
  mean over bags of each bag's ``weights[b, best_step[b]]``.
  """
  weights: jax.Array
  loss: jax.Array
  order: jax.Array
  n_steps: int
  final_weights: jax.Array
  init: jax.Array
  best_step: Optional[jax.Array] = None

  def predict(self, preds):
    """The weighted ensemble prediction ``sum_m final_weights[m] * preds[m]``.

    Args:
      preds: ``(M, N, ...)`` predictions of the same M models on new data, e.g. ``(M, N, C)``
        class probabilities, ``(M, N)`` binary positive-class probabilities or regression
        outputs.

    Returns:
      ``(N, ...)``, in the wider of the weights' and ``preds``' float dtypes.
    """
    preds = _as_float(preds, "preds")
    n_models = self.final_weights.shape[-1]
    if preds.ndim < 2 or preds.shape[0] != n_models:
      raise ValueError(f"preds: expected (M, N, ...) predictions with M = {n_models} models, "
                       f"got shape {preds.shape}")
    return _weighted_sum(self.final_weights, preds)


@jax.jit
def _weighted_sum(weights, preds):
  dtype = jnp.promote_types(weights.dtype, preds.dtype)
  return jnp.tensordot(weights.astype(dtype), preds.astype(dtype), axes=1)


class _Static(NamedTuple):
  """The hashable configuration of one compiled selection."""
  loss: Union[str, LossFn]
  init_size: int
  replacement: bool
  n_steps: int
  tie_breaker: str
  renormalise: bool
  weighted: bool
  log_group: int
  true_class: bool  # the pool is already the (N, M) true-class matrix
  sharded_members: bool = False  # the member axis is split over devices: no member gathers
  skip_capacity: int = 0  # accuracy: most undecided samples read alone (0: read all)


class _Scalars(NamedTuple):
  """Traced numbers of one selection, in the compute dtype (new values do not recompile)."""
  penalty_weight: jax.Array
  clip: jax.Array
  tie_tolerance: jax.Array
  quantile: jax.Array


class _Carry(NamedTuple):
  running_sum: jax.Array  # sum of the picked members' scoring predictions, (N,) or (N, C)
  penalty_sum: jax.Array  # sum of the picked members' penalties, ()
  counts: jax.Array  # (M,) int32: how often each model has been picked


_COMMON_ARGS = """    init_size: number of best single models averaged to start, in [1, M]. With
      ``init_size=1`` the first model is chosen by the same tie rule as the steps.
    replacement: keep chosen models in the pool; without replacement a model (including
      the initial ones) leaves the pool once chosen.
    max_iter: number of selection steps (>= 0).
    n_bags: if set, run ``n_bags`` independent selections, each on a bag of
      ``min(M, max(init_size, floor(bag_fraction * M + 0.5)))`` models drawn without
      replacement from the pool (ties inside a bag follow ``tie_breaker``, in pool order),
      as one ``vmap``; ``final_weights`` is the mean of the bags' final weights. Each bag's
      predictions are gathered, so this holds ``n_bags`` bag-sized copies of the scoring
      predictions (``(M, N)`` for log-loss and the regression losses, ``(M, N, C)``
      otherwise).
    bag_fraction: fraction of the pool in each bag, in (0, 1].
    seed: seed of the bag draws, of the ``"random"`` tie breaker and of the subsample.
    penalty: optional ``(M,)`` per-model penalty :math:`\\pi` (e.g. sharpness); an
      ensemble's score adds ``penalty_weight`` times the weighted mean of its members'
      penalties. The initial ranking uses the same score.
    penalty_weight: :math:`\\lambda \\ge 0`; 0 gives plain greedy selection.
    use_best: keep the weights of the first step with the lowest loss on the path instead of
      the last step (AutoGluon's ``use_best``); ``Selection.best_step`` is that step.
    tie_breaker: which of the candidates tied at a step's best score is added:
      ``"first"`` the lowest index (the default, deterministic); ``"random"`` one drawn
      uniformly with ``seed`` (AutoGluon's and auto-sklearn's ``random_state.choice``);
      ``"fewest_models"`` a model already in the ensemble if one is tied, keeping it sparse
      (AutoGluon's used-model preference), then the lowest index.
    tie_tolerance: relative tolerance ``>= 0``: a candidate whose score is at most
      ``best + tie_tolerance * |best|`` counts as tied with the best. 0 (the default) ties
      only equal floats; AutoGluon rounds its scores to 6 decimals, about 1e-6.
    sample_weight: optional ``(N,)`` non-negative weights of the validation samples (not
      all zero); every built-in loss becomes the weighted mean over samples.
    subsample_size: if set and smaller than N, select on ``subsample_size`` validation rows
      drawn without replacement with ``seed`` (AutoGluon's ``subsample_size``): the rows
      ``np.sort(np.random.default_rng(seed).choice(N, subsample_size, replace=False))``.
    clip: log-loss clipping bound ``eps`` in (0, 0.5): probabilities are clipped to
      ``[eps, 1 - eps]`` (default 1e-8, the published loop's; the AutoML libraries use about
      2.2e-16, ``np.finfo(float).eps``). Half-precision pools are clipped in float32."""


def greedy(preds, y, *, loss: Union[str, LossFn] = "log_loss", init_size: int = 1,
           replacement: bool = True, max_iter: int = 100, n_bags: Optional[int] = None,
           bag_fraction: float = 0.5, seed: int = 0, penalty=None,
           penalty_weight: float = 0.0, use_best: bool = False, tie_breaker: str = "first",
           tie_tolerance: float = 0.0, sample_weight=None, subsample_size: Optional[int] = None,
           clip: float = losses.PROB_CLIP, renormalise: bool = False,
           quantile: float = 0.5, margin_skip: bool = False) -> Selection:
  """Caruana's greedy forward selection with sorted initialisation (see module docstring).

  Args:
    preds: ``(M, N, C)`` class probabilities or ``(M, N)`` positive-class probabilities of a
      binary task (``log_loss``, ``accuracy``); ``(M, N)`` or ``(M, N, k)`` regression
      outputs (``mse``, ``mae``, ``pinball``); or ``(M, N, ...)`` for a custom loss. Any
      float dtype; float16 and bfloat16 are scored in float32. A NumPy ``(M, N, C)``
      log-loss pool (without ``renormalise``) is checked and gathered on the host: only its
      ``(N, M)`` true-class matrix is copied to the device.
    y: ``(N,)`` integer labels (``{0, 1}`` for a binary pool), ``(N,)`` or ``(N, k)``
      targets for the regression losses (``preds.shape[1:]``), or ``(N, ...)`` for a custom
      loss.
    loss: ``"log_loss"`` (probabilities clipped to ``[clip, 1 - clip]``, renormalised only
      with ``renormalise``), ``"accuracy"`` (minimises the error rate, counted exactly in
      int32 and divided in the pool's dtype; ties between candidates are frequent),
      ``"mse"``, ``"mae"``, ``"pinball"`` (the quantile loss at ``quantile``; the mean over
      the k outputs, then over samples), or a jittable ``f(mean_pred, y) -> scalar`` called
      on one candidate ensemble's mean prediction ``(N, ...)``; it is a static argument,
      so pass the same function object to reuse the compiled scan. A candidate whose score
      is NaN is never chosen; if every candidate is NaN the step's loss reads ``inf``.
""" + _COMMON_ARGS + """
    renormalise: log-loss only: divide each clipped candidate row by its sum before taking
      the true class's log (AutoGluon and scikit-learn's ``log_loss`` up to 1.4). A step then
      reads all of the ``(M, N, C)`` pool, like accuracy.
    quantile: the pinball loss's :math:`\\tau \\in (0, 1)`:
      :math:`\\tau (y - q)` where :math:`y \\ge q`, else :math:`(1 - \\tau)(q - y)`.
    margin_skip: accuracy without ``sample_weight`` only: a step reads only the samples
      whose arg-max some candidate could still change (their true class neither leads nor
      trails by more than one model's worth), when at most N / 8 are left; the others are
      counted from the running sums. Exact (the same path); it pays once the ensemble has
      settled most samples (see :func:`_error_rate_skipping`).

  Returns:
    A :class:`Selection`.

  Example:
    >>> probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (5, 100, 3)))
    >>> labels = jax.random.randint(jax.random.key(1), (100,), 0, 3)
    >>> sel = greedy(probs, labels, max_iter=10)
    >>> sel.weights.shape, sel.order.shape
    ((11, 5), (10,))
    >>> sel.predict(probs).shape
    (100, 3)
  """
  options = _check_options(
      loss=loss, init_size=init_size, replacement=replacement, max_iter=max_iter,
      n_bags=n_bags, bag_fraction=bag_fraction, seed=seed, penalty_weight=penalty_weight,
      use_best=use_best, tie_breaker=tie_breaker, tie_tolerance=tie_tolerance,
      subsample_size=subsample_size, clip=clip, renormalise=renormalise, quantile=quantile)
  preds, y = _validate_pool(preds, y, loss=loss, renormalise=renormalise)
  if not isinstance(margin_skip, (bool, np.bool_)):
    raise ValueError(f"margin_skip: expected a bool, got {margin_skip!r}")
  if margin_skip and (loss != "accuracy" or sample_weight is not None):
    raise ValueError("margin_skip: applies to loss 'accuracy' without sample_weight only")
  if _gathers_on_host(preds, loss, renormalise):
    # Only the (N, M) true-class matrix goes to the device (a tenth of a 10-class pool),
    # never a device copy of the whole pool.
    true_class = np.take_along_axis(np.swapaxes(preds, 0, 1), np.asarray(y)[:, None, None],
                                    axis=2)[..., 0]
    return _select(jax.device_put(true_class), None, penalty=penalty,
                   sample_weight=sample_weight, true_class=True, **options)
  return _select(preds, y, penalty=penalty, sample_weight=sample_weight, true_class=False,
                 margin_skip=bool(margin_skip), **options)


def _gathers_on_host(preds, loss, renormalise):
  """Whether :func:`greedy` gathers a host ``(M, N, C)`` log-loss pool's true-class matrix
  on the host (NumPy floats; bfloat16 and others take the device route)."""
  return (isinstance(preds, np.ndarray) and preds.ndim == 3 and loss == "log_loss"
          and not renormalise and preds.dtype in (np.float16, np.float32, np.float64))


def greedy_from_true_class(true_class, *, init_size: int = 1, replacement: bool = True,
                           max_iter: int = 100, n_bags: Optional[int] = None,
                           bag_fraction: float = 0.5, seed: int = 0, penalty=None,
                           penalty_weight: float = 0.0, use_best: bool = False,
                           tie_breaker: str = "first", tie_tolerance: float = 0.0,
                           sample_weight=None, subsample_size: Optional[int] = None,
                           clip: float = losses.PROB_CLIP,
                           chunk_size: Optional[int] = None) -> Selection:
  """Log-loss selection from the ``(N, M)`` true-class probabilities alone.

  Log-loss (without renormalisation) reads only each model's probability of the true class,
  so a pool of M models on N samples and C classes never has to exist as ``(M, N, C)``:
  ``greedy_from_true_class(tc)`` equals ``greedy(preds, y)`` for
  ``tc[n, m] = preds[m, n, y[n]]``. The matrix is models last, the layout a step reads.

  Args:
    true_class: ``(N, M)`` probabilities in [0, 1], any float dtype (half precision is
      scored in float32); a NumPy array or memory map is copied to the device once, unless
      ``chunk_size`` is set.
""" + _COMMON_ARGS + """
    chunk_size: if set, ``true_class`` (a NumPy array or ``np.load(path, mmap_mode="r")``)
      stays on the host and every pass over it hands ``chunk_size`` rows at a time to one
      jitted call (:mod:`jaxens._select_stream`; on the CPU backend an aligned float32 chunk
      is not even copied): the device holds one chunk and the ``(N,)`` running sum. Not
      with ``n_bags``, ``sample_weight`` or ``subsample_size``.
      The path equals the in-memory one up to the rounding of the chunked sums.

  Returns:
    A :class:`Selection`, as from :func:`greedy` with ``loss="log_loss"``.
  """
  options = _check_options(
      loss="log_loss", init_size=init_size, replacement=replacement, max_iter=max_iter,
      n_bags=n_bags, bag_fraction=bag_fraction, seed=seed, penalty_weight=penalty_weight,
      use_best=use_best, tie_breaker=tie_breaker, tie_tolerance=tie_tolerance,
      subsample_size=subsample_size, clip=clip, renormalise=False, quantile=0.5)
  if chunk_size is None:
    true_class = _as_float(true_class, "true_class")
  else:
    _validation.check_int("chunk_size", chunk_size, 1)
    if n_bags is not None or sample_weight is not None or subsample_size is not None:
      raise ValueError("chunk_size: a chunked selection takes no n_bags, sample_weight or "
                       "subsample_size")
    if not (isinstance(true_class, np.ndarray) and np.issubdtype(true_class.dtype,
                                                                   np.floating)):
      raise ValueError(f"true_class: a chunked selection reads a float NumPy array or memory "
                       f"map, got {type(true_class).__name__}")
  if true_class.ndim != 2 or 0 in true_class.shape:
    raise ValueError(f"true_class: expected a non-empty (N, M) array, got shape "
                     f"{true_class.shape}")
  _check_probability_range(true_class, "true_class")
  return _select(true_class, None, penalty=penalty, sample_weight=sample_weight,
                 true_class=True, chunk_size=chunk_size, **options)


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


def prob_sum_tolerance(dtype):
  """How far a probability row of ``dtype`` may sum from 1: ``PROB_SUM_TOL``, or twice the
  machine epsilon where that is larger (bfloat16: 0.0156; a softmax row rounded to bfloat16
  is off by up to half an epsilon, and its sum is taken in float32)."""
  return max(PROB_SUM_TOL, 2 * float(jnp.finfo(dtype).eps))


def _is_number(value):
  return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _check_options(*, loss, init_size, replacement, max_iter, n_bags, bag_fraction, seed,
                   penalty_weight, use_best, tie_breaker, tie_tolerance, subsample_size, clip,
                   renormalise, quantile):
  """Eager checks of the scalar options; returns them for :func:`_select`."""
  if not (callable(loss) or loss in LOSSES):
    raise ValueError(f"loss: expected one of {LOSSES} or a callable f(pred, y), got {loss!r}")
  _validation.check_int("init_size", init_size, 1)
  _validation.check_int("max_iter", max_iter, 0)
  for name, value in (("replacement", replacement), ("use_best", use_best),
                      ("renormalise", renormalise)):
    if not isinstance(value, (bool, np.bool_)):
      raise ValueError(f"{name}: expected a bool, got {value!r}")
  if n_bags is not None:
    _validation.check_int("n_bags", n_bags, 1)
  if not _is_number(bag_fraction) or not 0 < bag_fraction <= 1:
    raise ValueError(f"bag_fraction: expected a number in (0, 1], got {bag_fraction!r}")
  _validation.check_int("seed", seed)
  if not _is_number(penalty_weight) or not math.isfinite(penalty_weight) or penalty_weight < 0:
    raise ValueError(f"penalty_weight: expected a finite number >= 0, got {penalty_weight!r}")
  if tie_breaker not in TIE_BREAKERS:
    raise ValueError(f"tie_breaker: expected one of {TIE_BREAKERS}, got {tie_breaker!r}")
  if not _is_number(tie_tolerance) or not 0 <= tie_tolerance < math.inf:
    raise ValueError(f"tie_tolerance: expected a finite number >= 0, got {tie_tolerance!r}")
  if subsample_size is not None:
    _validation.check_int("subsample_size", subsample_size, 1)
  if not _is_number(clip) or not 0 < clip < 0.5:
    raise ValueError(f"clip: expected a number in (0, 0.5), got {clip!r}")
  if renormalise and loss != "log_loss":
    raise ValueError(f"renormalise: applies to loss 'log_loss' only, got loss {loss!r}")
  if not _is_number(quantile) or not 0 < quantile < 1:
    raise ValueError(f"quantile: expected a number in (0, 1), got {quantile!r}")
  return dict(loss=loss, init_size=init_size, replacement=bool(replacement),
              max_iter=max_iter, n_bags=n_bags, bag_fraction=bag_fraction, seed=seed,
              penalty_weight=penalty_weight, use_best=bool(use_best), tie_breaker=tie_breaker,
              tie_tolerance=tie_tolerance, subsample_size=subsample_size, clip=clip,
              renormalise=bool(renormalise), quantile=quantile)


def _validate_pool(preds, y, *, loss, renormalise):
  """Eager checks of :func:`greedy`'s predictions and targets; returns the arrays (a host
  pool that :func:`greedy` gathers on the host stays there)."""
  if not _gathers_on_host(preds, loss, renormalise):
    preds = _as_float(preds, "preds")
  if loss in CLASSIFICATION_LOSSES:
    if preds.ndim not in (2, 3):
      raise ValueError(f"preds: loss {loss!r} expects (M, N, C) class probabilities or (M, N) "
                       f"binary positive-class probabilities, got shape {preds.shape}")
    if renormalise and preds.ndim == 2:
      raise ValueError("renormalise: a binary (M, N) pool has nothing to renormalise")
  elif loss in REGRESSION_LOSSES:
    if preds.ndim not in (2, 3):
      raise ValueError(f"preds: loss {loss!r} expects (M, N) or (M, N, k) predictions, got "
                       f"shape {preds.shape}")
  elif preds.ndim < 2:
    raise ValueError(f"preds: expected (M, N, ...) predictions, got shape {preds.shape}")
  n_models, n_samples = preds.shape[:2]
  if n_models == 0 or n_samples == 0 or 0 in preds.shape:
    raise ValueError(f"preds: expected at least one model and one sample, got {preds.shape}")
  if loss in CLASSIFICATION_LOSSES:
    _check_probability_range(preds, "preds")
    if preds.ndim == 3 and loss == "log_loss":
      tolerance = prob_sum_tolerance(preds.dtype)
      if isinstance(preds, np.ndarray):  # summed in place: an (M, N) temporary
        row_sums = np.sum(preds, axis=-1, dtype=_compute_dtype(preds.dtype))
        worst_row_sum = float(np.max(np.abs(row_sums - 1)))
      else:
        worst_row_sum = float(_worst_row_sum(preds))
      if worst_row_sum > tolerance:
        raise ValueError(f"preds: probability rows must sum to 1 (tolerance {tolerance} for "
                         f"{preds.dtype}); the worst is off by {worst_row_sum}")
  else:
    low, high = jax.device_get(_min_max(preds))
    if not (np.isfinite(low) and np.isfinite(high)):  # min and max propagate NaN
      raise ValueError("preds: contains non-finite values")

  y = jnp.asarray(y)
  if loss in CLASSIFICATION_LOSSES:
    if y.shape != (n_samples,) or not jnp.issubdtype(y.dtype, jnp.integer):
      raise ValueError(f"y: expected ({n_samples},) integer labels, got {y.dtype} {y.shape}")
    n_classes = preds.shape[2] if preds.ndim == 3 else 2
    if not bool(jnp.all((y >= 0) & (y < n_classes))):
      raise ValueError(f"y: labels must lie in [0, {n_classes}), got range "
                       f"[{int(jnp.min(y))}, {int(jnp.max(y))}]")
  elif loss in REGRESSION_LOSSES:
    y = _as_float(y, "y")
    if y.shape != preds.shape[1:]:
      raise ValueError(f"y: expected targets of shape {preds.shape[1:]}, got {y.shape}")
    if not bool(jnp.all(jnp.isfinite(y))):
      raise ValueError("y: contains non-finite values")
  else:
    if y.ndim == 0 or y.shape[0] != n_samples:
      raise ValueError(f"y: expected a leading axis of {n_samples} samples, got {y.shape}")
    out = jax.eval_shape(loss, preds[0], y)
    if getattr(out, "shape", None) != ():
      raise ValueError(f"loss: a custom loss must return a scalar, got {out}")
  return preds, y


def _check_probability_range(probs, name):
  # NumPy reduces a host array (or memory map) in place, without a device copy.
  is_host = isinstance(probs, np.ndarray)
  low, high = (np.min(probs), np.max(probs)) if is_host else jax.device_get(_min_max(probs))
  if not (np.isfinite(low) and np.isfinite(high)):  # min and max propagate NaN
    raise ValueError(f"{name}: contains non-finite values")
  if low < 0 or high > 1:
    raise ValueError(f"{name}: probabilities must lie in [0, 1], got range [{low}, {high}]")


def _select(preds, y, *, penalty, sample_weight, true_class, loss, chunk_size=None,
            margin_skip=False, init_size, replacement,
            max_iter, n_bags, bag_fraction, seed, penalty_weight, use_best, tie_breaker,
            tie_tolerance, subsample_size, clip, renormalise, quantile):
  """Checks the per-model and per-sample arrays, subsamples, and runs the compiled path."""
  model_axis = 1 if true_class else 0
  n_models, n_samples = preds.shape[model_axis], preds.shape[1 - model_axis]
  _validation.check_int("init_size", init_size, 1, n_models)
  if penalty is None:
    if penalty_weight != 0:
      raise ValueError("penalty_weight: a non-zero weight needs a penalty vector")
  else:
    penalty = _as_float(penalty, "penalty")
    if penalty.shape != (n_models,):
      raise ValueError(f"penalty: expected shape ({n_models},), one per model, "
                       f"got {penalty.shape}")
    if not bool(jnp.all(jnp.isfinite(penalty))):
      raise ValueError("penalty: contains non-finite values")
  if sample_weight is not None:
    if callable(loss):
      raise ValueError("sample_weight: supported by the built-in losses only; weight the "
                       "samples inside a custom loss")
    sample_weight = _as_float(sample_weight, "sample_weight")
    if sample_weight.shape != (n_samples,):
      raise ValueError(f"sample_weight: expected shape ({n_samples},), one per sample, got "
                       f"{sample_weight.shape}")
    if not bool(jnp.all(jnp.isfinite(sample_weight) & (sample_weight >= 0))):
      raise ValueError("sample_weight: expected finite weights >= 0")
    if not float(jnp.sum(sample_weight)) > 0:
      raise ValueError("sample_weight: expected at least one positive weight")

  if subsample_size is not None and subsample_size < n_samples:
    rows = np.sort(np.random.default_rng(seed).choice(n_samples, subsample_size, replace=False))
    preds = preds[rows] if true_class else preds[:, rows]
    y = None if y is None else y[rows]
    sample_weight = None if sample_weight is None else sample_weight[rows]

  dtype = _compute_dtype(preds.dtype)
  if sample_weight is not None:
    sample_weight = sample_weight.astype(dtype) / jnp.sum(sample_weight.astype(dtype))
  penalty = (jnp.zeros(n_models, dtype) if penalty is None else penalty.astype(dtype))
  scalars = _Scalars(*(jnp.asarray(value, dtype) for value in (
      penalty_weight, clip, tie_tolerance, quantile)))
  key = jax.random.key(seed)
  use_best = jnp.asarray(use_best)

  def static(pool_size):
    return _Static(loss=loss, init_size=init_size, replacement=replacement,
                   n_steps=_n_steps(pool_size, init_size, max_iter, replacement),
                   tie_breaker=tie_breaker, renormalise=renormalise,
                   weighted=sample_weight is not None, log_group=_log_group(dtype, clip),
                   true_class=true_class,
                   sharded_members=_members_are_split(preds, 1 if true_class else 0),
                   skip_capacity=max(1, preds.shape[1] // 8) if margin_skip else 0)

  if chunk_size is not None:
    from jaxens import _select_stream  # pylint: disable=import-outside-toplevel
    cfg = static(n_models)
    weights, path_loss, order, init, best_step = _select_stream.greedy_chunked(
        preds, penalty, scalars, key, cfg=cfg, use_best=use_best, chunk_size=chunk_size)
    return Selection(weights, path_loss, order, cfg.n_steps, weights[best_step], init,
                     best_step)
  if n_bags is None:
    cfg = static(n_models)
    weights, path_loss, order, init, best_step = _greedy_jit(
        preds, y, penalty, sample_weight, scalars, key, cfg=cfg, use_best=use_best)
    return Selection(weights, path_loss, order, cfg.n_steps, weights[best_step], init,
                     best_step)
  bag_size = min(n_models, max(init_size, math.floor(bag_fraction * n_models + 0.5)))
  cfg = static(bag_size)
  weights, path_loss, order, init, best_step = _bagged_greedy_jit(
      preds, y, penalty, sample_weight, scalars, key, cfg=cfg, use_best=use_best,
      n_bags=n_bags, bag_size=bag_size)
  final = jnp.mean(jax.vmap(lambda w, b: w[b])(weights, best_step), axis=0)
  return Selection(weights, path_loss, order, cfg.n_steps, final, init, best_step)


def _members_are_split(array, axis):
  """Whether a device array's member axis is split over devices (each holds a part)."""
  sharding = getattr(array, "sharding", None)
  if not isinstance(array, jax.Array) or sharding is None or len(sharding.device_set) < 2:
    return False
  return sharding.shard_shape(array.shape)[axis] < array.shape[axis]


def _compute_dtype(dtype):
  """The dtype a pool is scored in: float32 for half precision, else the pool's own."""
  return jnp.promote_types(dtype, jnp.float32)


@jax.jit
def _min_max(x):
  return jnp.min(x), jnp.max(x)


@jax.jit
def _worst_row_sum(probs):
  """Largest deviation of a row sum from 1, summed in at least float32; a matrix-vector
  product is XLA:CPU's fast sum."""
  probs = probs.astype(_compute_dtype(probs.dtype))
  return jnp.max(jnp.abs(probs @ jnp.ones(probs.shape[-1], probs.dtype) - 1))


def _as_float(x, name):
  # ``jnp.asarray`` of a NumPy array (or memory map) makes a host copy before the device one
  # (2x the array at peak on CPU); ``device_put`` makes only the device copy.
  x = jax.device_put(x) if isinstance(x, np.ndarray) else jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool:
    return x.astype(jnp.result_type(float))
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: expected a real-valued array, got dtype {x.dtype}")
  return x


def _n_steps(pool_size, init_size, max_iter, replacement):
  return max_iter if replacement else min(pool_size - init_size, max_iter)


def _scoring_pool(loss, preds, y, renormalise=False):
  """What a step reads per model, in the compute dtype: the true-class probabilities for
  log-loss, the classes and the true class for accuracy and renormalised log-loss, else
  ``preds``. A binary ``(M, N)`` pool is read as the classes ``(1 - p, p)``.

  The log-loss pool is ``(N, M)``, models last (see :func:`_model_axis`). Gathering from
  swapped axes writes that layout in one pass; transposing the gathered ``(M, N)`` matrix
  would cost XLA:CPU two more copies. The class-row pool is ``(M, C + 1, N)``: the classes,
  then the true class as row ``C``, samples last, so that a step compares whole rows (see
  :func:`_error_rate`). The others keep ``preds``' ``(M, N, ...)``.
  """
  preds = preds.astype(_compute_dtype(preds.dtype))
  if loss not in CLASSIFICATION_LOSSES:
    return preds
  if loss == "log_loss" and not renormalise:
    if preds.ndim == 2:
      return jnp.where(y[:, None] == 1, preds.T, 1 - preds.T)
    return jnp.take_along_axis(jnp.swapaxes(preds, 0, 1), y[:, None, None], axis=2)[..., 0]
  if preds.ndim == 2:
    preds = jnp.stack([1 - preds, preds], axis=-1)
  true_class = jnp.take_along_axis(preds, y[None, :, None], axis=2)
  return jnp.swapaxes(jnp.concatenate([preds, true_class], axis=2), 1, 2)


def _model_axis(loss, renormalise=False):
  """The axis of the scoring pool that indexes models.

  Log-loss puts models last: a step's sums over samples then run down the columns, which
  XLA:CPU vectorises along the models, and the grouped products of
  :func:`_grouped_log_loss` multiply whole row blocks; with models first the step is ~1.2x
  slower.
  """
  return 1 if loss == "log_loss" and not renormalise else 0


def _candidate_losses(cfg, pool, y, running_sum, size, scalars, sample_weight):
  """Loss of every candidate ensemble ``(running_sum + pool[m]) / size``, shape ``(M,)``.

  ``pool[m]`` is model ``m``'s slice along :func:`_model_axis`.
  """
  loss = cfg.loss
  if loss == "log_loss" and not cfg.renormalise:
    if sample_weight is None:
      return _grouped_log_loss(pool, running_sum, size, scalars.clip, group=cfg.log_group)
    probs = jnp.clip((running_sum[:, None] + pool) / size, scalars.clip, 1 - scalars.clip)
    return -(sample_weight @ jnp.log(probs))
  if loss == "accuracy" and cfg.skip_capacity and sample_weight is None:
    return _error_rate_skipping(pool, y, running_sum, cfg.skip_capacity)
  candidate_sums = running_sum[None] + pool
  if loss == "accuracy":
    # The arg-max is scale-free, so the sum stands in for the mean.
    return _error_rate(candidate_sums, y, sample_weight)
  if loss == "log_loss":
    return _sample_mean(_renormalised_nll(candidate_sums / size, scalars.clip), sample_weight)
  if loss in REGRESSION_LOSSES:
    error = candidate_sums / size - y[None]
    if loss == "mse":
      per_value = jnp.square(error)
    elif loss == "mae":
      per_value = jnp.abs(error)
    else:  # pinball at tau, error = q - y: tau (y - q) where y >= q, else (1 - tau)(q - y)
      per_value = jnp.maximum((1 - scalars.quantile) * error, -scalars.quantile * error)
    per_sample = jnp.mean(per_value.reshape(per_value.shape[:2] + (-1,)), axis=2)
    return _sample_mean(per_sample, sample_weight)
  return jax.vmap(lambda s: loss(s / size, y))(candidate_sums)


def _sample_mean(per_sample, sample_weight):
  """``(M, N)`` per-sample losses to ``(M,)``: the mean, or the normalised weights' sum."""
  if sample_weight is None:
    return jnp.mean(per_sample, axis=1)
  return per_sample @ sample_weight


def _renormalised_nll(candidate_means, clip):
  """Per-sample log-loss ``(M, N)`` of ``(M, C + 1, N)`` class rows (row ``C``: the true
  class), each row clipped to ``[clip, 1 - clip]`` and divided by its sum (AutoGluon;
  scikit-learn's ``log_loss`` up to 1.4)."""
  clipped = jnp.clip(candidate_means, clip, 1 - clip)
  n_classes = clipped.shape[1] - 1
  return jnp.log(jnp.sum(clipped[:, :n_classes], axis=1)) - jnp.log(clipped[:, n_classes])


def _error_rate(candidate_sums, y, sample_weight=None):
  """The error rate ``1 - accuracy`` of every candidate from its ``(C + 1, N)`` class sums
  (row ``C``: the true class's), for the arg-max of the ``(N, C)`` sums.

  Sample ``n`` is right when its true class ``y`` wins the arg-max: no class before ``y``
  reaches its sum and none after exceeds it (ties go to the lowest class). Comparing whole
  rows of samples vectorises, unlike an arg-max over the 10 classes of each sample, and the
  true class's sum is read from row ``C`` instead of gathered. The wrong samples are counted
  in int32 and the count divided by N in the sums' dtype, so the rate is the exact fraction
  rounded once (a float32 mean would round 0.659 to 0.65899998 even under x64).
  """
  wrong = _wrong(candidate_sums, y)
  if sample_weight is not None:
    return wrong.astype(candidate_sums.dtype) @ sample_weight
  return _exact_rate(jnp.sum(wrong, axis=-1, dtype=jnp.int32), wrong.shape[-1],
                     candidate_sums.dtype)


def _wrong(candidate_sums, y):
  """``(..., N)`` bool: the arg-max of the class sums ``(..., C + 1, N)`` is not ``y``."""
  n_classes = candidate_sums.shape[-2] - 1
  class_sums = candidate_sums[..., :n_classes, :]
  true_sums = candidate_sums[..., n_classes:, :]
  before_true = jnp.arange(n_classes)[:, None] < y[None, :]
  beaten = jnp.where(before_true, class_sums >= true_sums, class_sums > true_sums)
  return jnp.any(beaten, axis=-2)


def _exact_rate(n_wrong, n_samples, dtype):
  """``n_wrong / n_samples`` rounded once in ``dtype``."""
  # XLA:CPU multiplies by a rounded 1 / N when N is a constant or a broadcast scalar; behind
  # the barrier it is a full array, and the division is correctly rounded.
  divisor = jax.lax.optimization_barrier(jnp.full(n_wrong.shape, n_samples, dtype))
  return n_wrong.astype(dtype) / divisor


def _error_rate_skipping(pool, y, running_sum, capacity):
  """:func:`_error_rate` of every candidate, reading only the samples a candidate can flip.

  Adding one model's probabilities (each in [0, 1]) to the running class sums moves any
  class's lead over another by at most 1. A sample whose true class leads every other class
  by more than 1 (plus a rounding slack) is right for every candidate, one that some class
  leads by more than 1 is wrong for every candidate: both are counted once from the running
  sums. When at most ``capacity`` samples are left undecided, only their ``(M, C + 1)``
  columns of the pool are gathered and compared; otherwise the whole pool is. Exact: the
  counts equal :func:`_error_rate`'s.
  """
  n_classes = pool.shape[1] - 1
  others = jnp.where(jnp.arange(n_classes)[:, None] == y[None, :], -jnp.inf,
                     running_sum[:n_classes])
  lead = running_sum[n_classes] - jnp.max(others, axis=0)
  # The sums carry rounding errors of a few ulps of their largest value.
  slack = 1 + 16 * jnp.finfo(pool.dtype).eps * (1 + jnp.max(running_sum))
  right, wrong = lead > slack, lead < -slack
  undecided = ~(right | wrong)
  n_undecided = jnp.sum(undecided, dtype=jnp.int32)

  def few(capacity):
    def count(_):
      samples = jnp.nonzero(undecided, size=capacity, fill_value=0)[0]
      sums = running_sum[:, samples][None] + jnp.take(pool, samples, axis=2)
      counted = jnp.arange(capacity) < n_undecided
      return jnp.sum(wrong) + jnp.sum(_wrong(sums, y[samples]) & counted[None], axis=-1,
                                      dtype=jnp.int32)
    return count

  def many(_):
    return jnp.sum(_wrong(running_sum[None] + pool, y), axis=-1, dtype=jnp.int32)

  # Gathers cost per gathered sample, so the undecided samples are read at the smallest of
  # a few capacities that holds them: capacity / 64, capacity / 8, capacity.
  capacities = sorted({max(1, capacity // 64), max(1, capacity // 8), capacity})
  tier = jnp.sum(n_undecided > jnp.asarray(capacities), dtype=jnp.int32)
  n_wrong = jax.lax.switch(tier, [few(c) for c in capacities] + [many], None)
  return _exact_rate(n_wrong, pool.shape[2], pool.dtype)


def _grouped_log_loss(pool, running_sum, size, clip_eps, *, group=None):
  """:func:`losses.log_loss_true_class` of every candidate, from an ``(N, M)`` pool: minus
  :func:`_grouped_log_sum` over N."""
  return -_grouped_log_sum(pool, running_sum, size, clip_eps, group=group) / pool.shape[0]


def _grouped_log_sum(pool, running_sum, size, clip_eps, *, group=None):
  """Every candidate's sum over the ``(N, M)`` pool's rows of the log of its clipped mean
  ``(running_sum + pool[:, m]) / size``.

  The M N logarithms bound a step on XLA:CPU, not its memory traffic. A sum of logs is the
  log of a product, so the clipped probabilities of ``group`` samples (default
  :func:`_log_group` of the pool's dtype) are multiplied first, one sample from each of that
  many contiguous row blocks (element-wise products of whole blocks), and one log is taken
  per product. The rows left over when the group size does not divide N get one log each.
  """
  n_samples, n_models = pool.shape
  group = _log_group(pool.dtype) if group is None else group
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
  return total


def _log_group(dtype, clip=losses.PROB_CLIP):
  """How many clipped probabilities to multiply before a log, at most 4.

  The product of that many factors in ``[clip, 1]`` stays a normal number of ``dtype``
  (float32 at the default 1e-8: 1e-32 > 1.2e-38; at 2.2e-16 only 2), so no precision is
  lost to underflow; 1 where even two factors could underflow (float16). Groups above 4
  measured no faster.
  """
  fits = math.log(jnp.finfo(dtype).tiny) / math.log(clip)
  return max(1, min(4, math.floor(fits)))


def _pick(scores, usable, used, key, tie_tolerance, tie_breaker):
  """The candidate a step adds and its score.

  NaN and unusable candidates score ``inf``. Candidates within ``tie_tolerance * |best|`` of
  the best score are tied; ``"fewest_models"`` narrows the tie to models already ``used``
  when any is tied, ``"random"`` draws one of the tied uniformly, the others take the lowest
  index.
  """
  scores = jnp.where(usable & ~jnp.isnan(scores), scores, jnp.inf)
  best_score = jnp.min(scores)
  slack = jnp.where(jnp.isfinite(best_score), tie_tolerance * jnp.abs(best_score), 0)
  tied = scores <= best_score + slack
  if tie_breaker == "fewest_models":
    tied_used = tied & used
    tied = jnp.where(jnp.any(tied_used), tied_used, tied)
  if tie_breaker == "random":
    best = jnp.argmax(jnp.where(tied, jax.random.uniform(key, scores.shape), -1.0))
  else:
    best = jnp.argmax(tied)  # the first True
  return best, scores[best]


def _greedy_path(pool, y, penalty, sample_weight, scalars, key, *, cfg, use_best):
  """One selection on a scoring pool; returns the arrays of :class:`Selection`."""
  axis = 1 if cfg.true_class else _model_axis(cfg.loss, cfg.renormalise)
  n_models = pool.shape[axis]
  dtype = pool.dtype
  init_size, n_steps = cfg.init_size, cfg.n_steps

  def scores(running_sum, penalty_sum, size):
    penalty_term = scalars.penalty_weight * (penalty_sum + penalty) / size
    return _candidate_losses(cfg, pool, y, running_sum, size, scalars,
                             sample_weight) + penalty_term

  def pick(step_scores, counts, step_key):
    usable = (counts == 0) | cfg.replacement
    return _pick(step_scores, usable, counts > 0, step_key, scalars.tie_tolerance,
                 cfg.tie_breaker)

  def members_sum(counts):
    """``sum_m counts[m] * pool[m]``, for a pool split over devices on the member axis: it
    is contracted in place (local sums, then one all-reduce of a member-sized result),
    where a gather would copy the whole pool to every device."""
    shape = [1] * pool.ndim
    shape[axis] = n_models
    return jnp.sum(pool * counts.astype(dtype).reshape(shape), axis=axis)

  keys = jax.random.split(jax.random.fold_in(key, 1), n_steps + 1)
  zero_sum = jnp.zeros(pool.shape[:axis] + pool.shape[axis + 1:], dtype)
  no_counts = jnp.zeros(n_models, jnp.int32)
  single_scores = scores(zero_sum, jnp.zeros((), dtype), jnp.ones((), dtype))
  if init_size == 1:  # the same rule as a step, on an empty ensemble
    init = pick(single_scores, no_counts, keys[0])[0][None]
  else:
    init = jnp.argsort(single_scores, stable=True)[:init_size]  # NaN sorts last
  init_size_f = jnp.asarray(init_size, dtype)
  if cfg.sharded_members:
    init_sum = members_sum(no_counts.at[init].add(1))
  else:
    init_sum = jnp.sum(jnp.take(pool, init, axis=axis), axis=axis)
  init_penalty_sum = jnp.sum(penalty[init])
  init_loss = (_candidate_losses(cfg, jnp.expand_dims(init_sum, axis), y, zero_sum,
                                 init_size_f, scalars, sample_weight)[0]
               + scalars.penalty_weight * init_penalty_sum / init_size_f)

  def step(carry, inputs):
    size, step_key = inputs
    best, best_score = pick(scores(carry.running_sum, carry.penalty_sum, size), carry.counts,
                            step_key)
    if cfg.sharded_members:
      member = members_sum(jnp.arange(n_models) == best)
    else:
      member = jax.lax.dynamic_index_in_dim(pool, best, axis, keepdims=False)
    carry = _Carry(carry.running_sum + member, carry.penalty_sum + penalty[best],
                   carry.counts.at[best].add(1))
    return carry, (best, best_score)

  sizes = jnp.arange(init_size + 1, init_size + n_steps + 1).astype(dtype)
  _, (order, step_loss) = jax.lax.scan(
      step, _Carry(init_sum, init_penalty_sum, no_counts.at[init].add(1)), (sizes, keys[1:]))

  return _path_arrays(init, order, init_loss, step_loss, n_models, init_size, n_steps,
                      use_best, dtype)


def _path_arrays(init, order, init_loss, step_loss, n_models, init_size, n_steps, use_best,
                 dtype):
  """``(weights, loss, order, init, best_step)`` of a path from its picks and losses."""
  init_counts = jnp.zeros(n_models, dtype).at[init].add(1)
  step_counts = jnp.cumsum(jax.nn.one_hot(order, n_models, dtype=dtype), axis=0)
  counts = init_counts[None, :] + jnp.concatenate(
      [jnp.zeros((1, n_models), dtype), step_counts])
  ensemble_sizes = jnp.arange(init_size, init_size + n_steps + 1).astype(dtype)
  weights = counts / ensemble_sizes[:, None]
  path_loss = jnp.concatenate([init_loss[None], step_loss.astype(init_loss.dtype)])
  # ``use_best`` is traced, so both settings share one program. The first minimum; a NaN
  # initial loss never counts as best.
  lowest = jnp.argmin(jnp.where(jnp.isnan(path_loss), jnp.inf, path_loss))
  best_step = jnp.where(use_best, lowest, n_steps)
  return weights, path_loss, order, init, best_step


def _scoring_pool_of(preds, y, cfg):
  if cfg.true_class:
    return preds.astype(_compute_dtype(preds.dtype))
  return _scoring_pool(cfg.loss, preds, y, cfg.renormalise)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _greedy_jit(preds, y, penalty, sample_weight, scalars, key, *, cfg, use_best):
  pool = _scoring_pool_of(preds, y, cfg)
  return _greedy_path(pool, y, penalty, sample_weight, scalars, key, cfg=cfg,
                      use_best=use_best)


@functools.partial(jax.jit, static_argnames=("cfg", "n_bags", "bag_size"))
def _bagged_greedy_jit(preds, y, penalty, sample_weight, scalars, key, *, cfg, use_best,
                       n_bags, bag_size):
  pool = _scoring_pool_of(preds, y, cfg)  # gather the true class once, then bag
  axis = 1 if cfg.true_class else _model_axis(cfg.loss, cfg.renormalise)
  n_models = pool.shape[axis]
  bags = jax.vmap(lambda k: jnp.sort(jax.random.permutation(k, n_models)[:bag_size]))(
      jax.random.split(key, n_bags))
  tie_keys = jax.random.split(jax.random.fold_in(key, 2), n_bags)
  weights, path_loss, order, init, best_step = jax.vmap(
      lambda bag, bag_key: _greedy_path(
          jnp.take(pool, bag, axis=axis), y, penalty[bag], sample_weight, scalars, bag_key,
          cfg=cfg, use_best=use_best))(bags, tie_keys)
  full_weights = jax.vmap(
      lambda w, bag: jnp.zeros((w.shape[0], n_models), w.dtype).at[:, bag].set(w))(
          weights, bags)
  return (full_weights, path_loss, jnp.take_along_axis(bags, order, axis=1),
          jnp.take_along_axis(bags, init, axis=1), best_step)
