"""Sharpness of a minimum: Keskar et al.'s box sharpness and the Hessian's extreme eigenvalues.

All measures look at ``f``, the mean loss over a whole data set, which is evaluated chunk by
chunk inside the jitted computation so that memory stays bounded by one chunk:

.. math:: f(x) = \\frac{1}{N} \\sum_{c} |c| \\, \\ell_c(x),

where ``l_c = loss_fn(params, x_c, y_c)`` is the mean loss on chunk ``c``. The last chunk may be
shorter than the others; it is weighted by its size, so ``f`` is the exact mean for any ``N``.
Batch norm must therefore use population statistics inside ``loss_fn`` (evaluation mode):
with batch statistics ``f`` would depend on ``chunk_size``.

Every function takes a single member's ``params`` and is lifted to an ensemble with
``jax.vmap`` (member axis 0, data shared); the one exception is ``keskar(solver="lbfgsb")``,
which runs scipy on the host and is called once per member.

References:
  Keskar et al., 2017, On Large-Batch Training for Deep Learning: Generalization Gap and Sharp
  Minima (https://arxiv.org/abs/1609.04836).
  Frank & Wolfe, 1956, An algorithm for quadratic programming (Naval Res. Logist. Q. 3).
  Mangasarian, 1996, Machine Learning via Polyhedral Concave Minimization (Applied Mathematics
  and Parallel Computing, Physica).
  Bertsekas, 1976, On the Goldstein-Levitin-Polyak gradient projection method (IEEE Trans.
  Automat. Contr. 21).
  Byrd, Lu, Nocedal & Zhu, 1995, A Limited Memory Algorithm for Bound Constrained
  Optimization (SIAM J. Sci. Comput. 16).
  Lanczos, 1950, An iteration method for the solution of the eigenvalue problem of linear
  differential and integral operators (J. Res. Natl. Bur. Stand. 45).
  Paige, 1980, Accuracy and effectiveness of the Lanczos algorithm for the symmetric
  eigenproblem (Linear Algebra Appl. 34).
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxens import _validation

#: Examples per chunk when ``f`` is evaluated over the whole data set.
DEFAULT_CHUNK_SIZE = 4096
#: The box-constrained solvers :func:`keskar` knows.
SOLVERS = ("frank_wolfe", "lbfgsb")
# Entries of the random matrix A generated at once (rows x subspace_dim), about 16 MiB.
_SUBSPACE_BLOCK_ELEMENTS = 1 << 22
# First step of the projected-gradient path: an eighth of the box, root mean square, in box
# units; of 1/8, 1/4 and 1/2 it lost least to the best value known on 80 tiny-MLP problems.
_GRADIENT_STEP_SIZE = 0.125


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("value", "f0", "fmax", "perturbation"),
    meta_fields=("solver", "n_passes"),
)
@dataclasses.dataclass(frozen=True)
class Sharpness:
  """Result of :func:`keskar`: a pytree whose arrays gain a member axis under ``vmap``.

  Attributes:
    value: ``phi = 100 (fmax - f0) / (1 + f0)``.
    f0: the mean loss at the parameters, ``f(x)``.
    fmax: the largest mean loss found in the box, ``f(x + A y*)``.
    perturbation: ``A y*``, shaped like the parameters: ``f(params + perturbation) = fmax``.
    solver: name of the solver that produced the number (static).
    n_passes: full forward-and-backward passes over the data spent (static): ``2 steps + 1``
      for ``"frank_wolfe"``, the number of evaluations scipy asked for (the one at ``y = 0``
      included) for ``"lbfgsb"``.
  """
  value: jax.Array
  f0: jax.Array
  fmax: jax.Array
  perturbation: Any
  solver: str
  n_passes: int


class AscentState(NamedTuple):
  """Carry of the box-constrained ascent: the best point found so far and its step size."""
  y: jax.Array
  value: jax.Array
  grad: jax.Array
  step_size: jax.Array


class LanczosState(NamedTuple):
  """Carry of the Lanczos recurrence: ``q_k``, ``q_{k-1}``, ``beta_{k-1}`` and whether the
  Krylov space is not exhausted yet."""
  q: jax.Array
  q_prev: jax.Array
  beta: jax.Array
  active: jax.Array


class HessianExtremes(NamedTuple):
  """Result of :func:`hessian_extreme_eigs`: the Hessian's smallest and largest eigenvalues."""
  lambda_min: jax.Array
  lambda_max: jax.Array


def mean_loss(loss_fn, params, data, *, chunk_size=DEFAULT_CHUNK_SIZE):
  """Mean of ``loss_fn`` over the whole of ``data = (x, y)``, evaluated chunk by chunk.

  Args:
    loss_fn: ``loss_fn(params, x, y) -> scalar``, the mean loss on a chunk.
    params: a pytree of parameters.
    data: ``(x, y)`` with a common leading axis of ``N`` examples.
    chunk_size: examples per chunk.
  """
  _validation.check_examples(data, "data")
  _validation.check_int("chunk_size", chunk_size, 1)
  return _chunked_mean(lambda x, y: loss_fn(params, x, y), data, chunk_size)


def keskar(loss_fn, params, data, *, epsilon=1e-3, subspace_dim=None, steps=10,
           chunk_size=DEFAULT_CHUNK_SIZE, key=None, solver="frank_wolfe"):
  """Keskar et al.'s sharpness: the largest relative loss increase in a small box.

  .. math::

     \\phi(\\epsilon, A) = 100 \\, \\frac{\\max_{y \\in C_\\epsilon} f(x + A y) - f(x)}{1 + f(x)},
     \\qquad C_\\epsilon = \\{ y : |y_i| \\le \\epsilon (|(A^+ x)_i| + 1) \\},

  with ``A = I`` (full space, ``subspace_dim=None``) or a random ``n x p`` matrix
  (``p = subspace_dim``). The paper leaves the distribution of ``A`` open; here its entries are
  i.i.d. Rademacher, ``+1`` or ``-1`` with equal probability (zero mean and unit variance, as
  a standard normal), row ``i`` drawn from ``fold_in(key, i)`` (:func:`rademacher_row`). Signs
  take one random bit each, which makes ``A`` about 15 times cheaper to regenerate than
  normal entries. ``A`` is never stored: its rows are regenerated in blocks for every product
  ``A y`` and ``A^T g`` (``2 n_passes + 2`` sweeps over ``A``), and ``A^+ x = (A^T A)^+ A^T x``
  with the ``p x p`` matrix ``A^T A`` accumulated block by block.

  The maximisation is inexact, as in the paper (10 iterations of L-BFGS-B from ``y = 0``).
  Every point either solver evaluates lies in the box, so ``fmax`` is attained there and never
  exceeds the true maximum. ``b`` below are the box half-widths.

  ``solver="frank_wolfe"`` (the default; jittable and vmappable) runs two ascents from
  ``y_0 = 0``, ``steps`` value-and-gradient passes each, and keeps the better end point. Each
  step accepts its candidate ``y'`` if it increases ``f`` and adapts the step size without
  line search: ``(y_{k+1}, s_{k+1}) = (y', \\min(2 s_k, s_{max}))`` if ``f(y') > f(y_k)``,
  else ``(y_k, s_k / 2)``. The first is conditional-gradient (Frank-Wolfe) ascent, from
  ``s_0 = s_{max} = 1``:

  .. math::

     c_k = b \\odot \\mathrm{sign}(\\nabla_y f(y_k)), \\qquad y' = y_k + s_k (c_k - y_k).

  Its first step goes to the corner that maximises the first-order model exactly; for a convex
  ``f`` every full step increases ``f`` (Mangasarian, 1996). But a corner where the gradient
  points out of the box is a fixed point, even when it is only a local maximum. The second is
  projected-gradient ascent (Bertsekas, 1976) in box units ``z = y / b``, from
  ``s_0 = 1/8`` with ``s_{max} = \\infty``:

  .. math::

     d_k = b \\odot \\nabla_y f(y_k), \\qquad
     y' = \\mathrm{clip}\\Big(y_k + s_k \\, b \\odot \\frac{d_k}{\\mathrm{rms}(d_k)}, -b, b\\Big),

  whose first steps are short (``s_k`` is the root-mean-square step in half-widths), so that
  curvature can turn it away from the first-order corner, as L-BFGS-B's first iterations do.
  The cost is ``2 steps + 1`` passes over ``data`` (one for ``f(x)`` and its gradient, shared):
  21 at the default ``steps=10``.

  ``solver="lbfgsb"`` is the paper's protocol (Byrd et al., 1995): scipy's
  ``minimize(method="L-BFGS-B", jac=True, options={"maxiter": steps})`` on ``-f(y)`` from
  ``y = 0``, with the box as bounds and scipy's other defaults (memory ``maxcor=10``). The
  oracle is the same jitted, chunked value and gradient, called from the host and cast to
  float64 for scipy; each point is clipped to the box before it is evaluated (bounds in the
  parameters' dtype, so the cast back cannot leave the box), and ``fmax`` is the best value
  seen. The cost is the number of evaluations scipy asks for: its line search may take several
  per iteration, and its tolerances (among them ``gtol=1e-5`` on the largest entry of the
  projected gradient) may end the run early where ``f`` is flat; ``steps=10`` took 3 to 34 on
  tiny MLPs. It runs on the host: it cannot be traced, so call it once per member in a Python
  loop, not under ``jit`` or ``vmap``. It needs scipy.

  Args:
    loss_fn: ``loss_fn(params, x, y) -> scalar``, the mean loss on a chunk (batch norm in
      evaluation mode, see the module docstring). A static argument: pass the same function
      object to reuse the compiled program (a fresh ``functools.partial`` per eager call
      compiles anew; inside an outer ``jit`` it does not matter).
    params: one member's parameters, a pytree of float arrays with ``n`` entries in all.
    data: ``(x, y)``, the whole training set, with a common leading axis.
    epsilon: relative box size, ``> 0`` (the paper uses 1e-3 and 5e-4); may be traced, except
      with ``"lbfgsb"``.
    subspace_dim: ``p`` in ``[1, n]`` for a random subspace, or ``None`` for the full space.
    steps: solver steps, ``>= 1``: steps of each Frank-Wolfe ascent, or L-BFGS-B iterations.
    chunk_size: examples per chunk when ``f`` is evaluated.
    key: PRNG key that generates ``A``; required with ``subspace_dim``.
    solver: one of :data:`SOLVERS`.

  Returns:
    A :class:`Sharpness`.

  Raises:
    ValueError: on a bad argument, or with ``"lbfgsb"`` on a traced one.
    ImportError: with ``"lbfgsb"`` when scipy is not installed.

  Example:
    >>> loss = lambda w, x, y: jnp.mean((x @ w - y) ** 2)
    >>> x, y = jnp.ones((8, 3)), jnp.ones(8)
    >>> result = keskar(loss, jnp.zeros(3), (x, y), epsilon=0.1)
    >>> result.solver, result.n_passes
    ('frank_wolfe', 21)
  """
  num_params = _check_params(params)
  _validation.check_examples(data, "data")
  _check_positive("epsilon", epsilon)
  _validation.check_int("steps", steps, 1)
  _validation.check_int("chunk_size", chunk_size, 1)
  if solver not in SOLVERS:
    raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}")
  if subspace_dim is not None:
    _validation.check_int("subspace_dim", subspace_dim, 1)
    if subspace_dim > num_params:
      raise ValueError(
          f"subspace_dim: expected at most the number of parameters ({num_params}), "
          f"got {subspace_dim}")
    if key is None:
      raise ValueError("key: a PRNG key is required with subspace_dim")
  static = dict(loss_fn=loss_fn, subspace_dim=subspace_dim, chunk_size=chunk_size)
  if solver == "lbfgsb":
    for name, value in (("params", params), ("data", data), ("epsilon", epsilon),
                        ("key", key)):
      if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value)):
        raise ValueError(
            f'{name}: keskar(solver="lbfgsb") runs scipy on the host and cannot be traced '
            "(jit, vmap); expected concrete arrays, got a tracer. Call it once per member "
            'in a Python loop, or use solver="frank_wolfe"')
    return _keskar_lbfgsb(params, data, epsilon, key, steps=steps, **static)
  return _keskar_frank_wolfe(params, data, epsilon, key, steps=steps, **static)


class _BoxProblem:
  """``y -> f(x + A y)`` over ``C_epsilon`` for one member; ``A = I`` without a subspace.

  Only what a caller uses is traced, so the box's ``A^+ x`` is not recomputed per evaluation.
  """

  def __init__(self, loss_fn, params, data, key, subspace_dim, chunk_size):
    self.x, self.unravel = ravel_pytree(params)
    self._value_and_grad_x = _flat_value_and_grad(loss_fn, self.unravel, data, chunk_size)
    self._subspace = (None if subspace_dim is None
                      else _RandomSubspace(key, self.x.size, subspace_dim))

  def box(self, epsilon):
    """The half-widths ``b = epsilon (|A^+ x| + 1)``."""
    coordinates = self.x if self._subspace is None else self._subspace.pinv(self.x)
    return epsilon * (jnp.abs(coordinates) + 1.0)

  def perturbation(self, y):
    """``A y``, shaped like the parameters."""
    return self.unravel(self._embed(y))

  def value_and_grad(self, y):
    """``f(x + A y)`` and its gradient ``A^T grad f`` with respect to ``y``."""
    value, grad = self._value_and_grad_x(self.x + self._embed(y))
    return value, grad if self._subspace is None else self._subspace.rmatvec(grad)

  def _embed(self, y):
    return y if self._subspace is None else self._subspace.matvec(y)


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "subspace_dim", "steps", "chunk_size"))
def _keskar_frank_wolfe(params, data, epsilon, key, *, loss_fn, subspace_dim, steps,
                        chunk_size):
  problem = _BoxProblem(loss_fn, params, data, key, subspace_dim, chunk_size)
  f0, best = _ascend(problem.value_and_grad, problem.box(epsilon), steps)
  return _sharpness(f0, best.value, problem.perturbation(best.y), "frank_wolfe", 2 * steps + 1)


def _ascend(value_and_grad, box, steps):
  """Frank-Wolfe and projected-gradient ascent from ``y = 0``; ``f(0)`` and the better end."""
  value0, grad0 = value_and_grad(jnp.zeros_like(box))
  start = AscentState(y=jnp.zeros_like(box), value=value0, grad=grad0,
                      step_size=jnp.ones_like(value0))

  def frank_wolfe_step(state, _):
    corner = box * jnp.sign(state.grad)
    # The clip only removes rounding: the candidate lies on the segment [y, corner].
    candidate = jnp.clip(state.y + state.step_size * (corner - state.y), -box, box)
    return _ascent_step(value_and_grad, state, candidate, 1.0), None

  def gradient_step(state, _):
    direction = box * state.grad
    rms = jnp.sqrt(jnp.mean(direction ** 2))
    step = state.step_size * box * direction / jnp.maximum(rms, jnp.finfo(rms.dtype).tiny)
    candidate = jnp.clip(state.y + step, -box, box)
    return _ascent_step(value_and_grad, state, candidate, jnp.inf), None

  frank_wolfe, _ = lax.scan(frank_wolfe_step, start, None, length=steps)
  gradient_start = start._replace(step_size=jnp.full_like(value0, _GRADIENT_STEP_SIZE))
  gradient, _ = lax.scan(gradient_step, gradient_start, None, length=steps)
  better = gradient.value > frank_wolfe.value
  return value0, jax.tree.map(lambda g, w: jnp.where(better, g, w), gradient, frank_wolfe)


def _ascent_step(value_and_grad, state, candidate, max_step_size):
  """Moves to ``candidate`` and doubles the step size if it increases ``f``, else halves it."""
  value, grad = value_and_grad(candidate)
  better = value > state.value
  return AscentState(
      y=jnp.where(better, candidate, state.y),
      value=jnp.where(better, value, state.value),
      grad=jnp.where(better, grad, state.grad),
      step_size=jnp.where(better, jnp.minimum(2.0 * state.step_size, max_step_size),
                          0.5 * state.step_size),
  )


def _keskar_lbfgsb(params, data, epsilon, key, *, loss_fn, subspace_dim, steps, chunk_size):
  """The paper's protocol: scipy's L-BFGS-B on ``-f`` from the host, with a jitted oracle."""
  try:
    import scipy.optimize
  except ImportError as error:
    raise ImportError('keskar(solver="lbfgsb") needs scipy: pip install scipy') from error
  static = dict(loss_fn=loss_fn, subspace_dim=subspace_dim, chunk_size=chunk_size)
  box = np.asarray(_lbfgsb_box(params, data, epsilon, key, **static))
  bounds = box.astype(np.float64)
  oracle = _HostOracle(functools.partial(_lbfgsb_value_and_grad, params, data, key, **static),
                       box)
  start = np.zeros_like(bounds)
  oracle(start)
  f0 = oracle.fmax  # the only value seen yet
  scipy.optimize.minimize(oracle, start, method="L-BFGS-B", jac=True,
                          bounds=scipy.optimize.Bounds(-bounds, bounds),
                          options={"maxiter": steps})
  return _sharpness(f0, oracle.fmax,
                    _lbfgsb_perturbation(params, data, key, oracle.best_y, **static), "lbfgsb",
                    oracle.n_calls)


class _HostOracle:
  """``y -> (-f(y), -grad f(y))`` in float64 for scipy; counts evaluations, keeps the best."""

  def __init__(self, value_and_grad, box):
    self._value_and_grad = value_and_grad
    self._box = box
    self.n_calls = 0
    self.fmax = self.best_y = self._last_y = self._last = None

  def __call__(self, y64):
    # Clipping in float64 to bounds that are box.dtype numbers, then rounding, stays in the box.
    y = np.clip(y64, -self._box, self._box).astype(self._box.dtype)
    if self._last_y is not None and np.array_equal(y, self._last_y):
      return self._last  # scipy starts where the caller evaluated f0, at y = 0
    value, grad = self._value_and_grad(y)
    self.n_calls += 1
    if self.fmax is None or value > self.fmax:
      self.fmax, self.best_y = value, y
    self._last_y, self._last = y, (-float(value), -np.asarray(grad, np.float64))
    return self._last


_LBFGSB_STATIC = ("loss_fn", "subspace_dim", "chunk_size")


@functools.partial(jax.jit, static_argnames=_LBFGSB_STATIC)
def _lbfgsb_box(params, data, epsilon, key, *, loss_fn, subspace_dim, chunk_size):
  return _BoxProblem(loss_fn, params, data, key, subspace_dim, chunk_size).box(epsilon)


@functools.partial(jax.jit, static_argnames=_LBFGSB_STATIC)
def _lbfgsb_value_and_grad(params, data, key, y, *, loss_fn, subspace_dim, chunk_size):
  return _BoxProblem(loss_fn, params, data, key, subspace_dim, chunk_size).value_and_grad(y)


@functools.partial(jax.jit, static_argnames=_LBFGSB_STATIC)
def _lbfgsb_perturbation(params, data, key, y, *, loss_fn, subspace_dim, chunk_size):
  return _BoxProblem(loss_fn, params, data, key, subspace_dim, chunk_size).perturbation(y)


def _sharpness(f0, fmax, perturbation, solver, n_passes):
  return Sharpness(value=100.0 * (fmax - f0) / (1.0 + f0), f0=f0, fmax=fmax,
                   perturbation=perturbation, solver=solver, n_passes=n_passes)


def rademacher_row(key, row, dim):
  """Row ``row`` of the random subspace matrix ``A``: ``dim`` signs in ``{-1, +1}``.

  Entry ``j`` is ``1 - 2 b_j``, where ``b_j`` is bit ``j % 32`` (least significant first) of
  word ``j // 32`` of ``jax.random.bits(fold_in(key, row), (ceil(dim / 32),), uint32)``.
  """
  words = jax.random.bits(jax.random.fold_in(key, row), (-(-dim // 32),), jnp.uint32)
  bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)[None, :]) & 1
  return 1.0 - 2.0 * bits.reshape(-1)[:dim].astype(jnp.float32)


class _RandomSubspace:
  """The ``n x p`` Rademacher matrix ``A`` of a key, applied without being stored.

  Row ``i`` is :func:`rademacher_row`, so ``A`` depends on the key and the shape only, not on
  how it is blocked. Rows are generated ``block`` at a time; the rows past ``n`` of the last
  block are generated too and masked out.
  """

  def __init__(self, key, num_rows, dim):
    self.key = key
    self.num_rows = num_rows
    self.dim = dim
    self.block = max(1, min(num_rows, _SUBSPACE_BLOCK_ELEMENTS // dim))
    self.num_blocks = -(-num_rows // self.block)

  def _rows(self, block_index):
    rows = block_index * self.block + jnp.arange(self.block)
    signs = jax.vmap(lambda i: rademacher_row(self.key, i, self.dim))(rows)
    return jnp.where((rows < self.num_rows)[:, None], signs, 0.0)

  def _blocks(self, v):
    padded = jnp.pad(v, (0, self.num_blocks * self.block - self.num_rows))
    return padded.reshape(self.num_blocks, self.block)

  def matvec(self, y):
    """``A y``, an ``n``-vector."""
    out = lax.map(lambda k: self._rows(k) @ y, jnp.arange(self.num_blocks))
    return out.reshape(-1)[: self.num_rows]

  def rmatvec(self, g):
    """``A^T g``, a ``p``-vector."""
    def accumulate(total, block):
      k, g_block = block
      return total + g_block @ self._rows(k), None
    total, _ = lax.scan(accumulate, jnp.zeros(self.dim, g.dtype),
                        (jnp.arange(self.num_blocks), self._blocks(g)))
    return total

  def pinv(self, x):
    """``A^+ x = (A^T A)^+ A^T x``, the least-norm least-squares solution, ``A^T A`` streamed."""
    def accumulate(totals, block):
      k, x_block = block
      rows = self._rows(k)
      gram, rhs = totals
      return (gram + rows.T @ rows, rhs + x_block @ rows), None
    zeros = (jnp.zeros((self.dim, self.dim), x.dtype), jnp.zeros(self.dim, x.dtype))
    (gram, rhs), _ = lax.scan(accumulate, zeros, (jnp.arange(self.num_blocks), self._blocks(x)))
    return jnp.linalg.pinv(gram, hermitian=True) @ rhs


def hessian_extreme_eigs(loss_fn, params, data, *, key, iters=100,
                        chunk_size=DEFAULT_CHUNK_SIZE):
  """Smallest and largest eigenvalues of the Hessian of ``f``, by the Lanczos recurrence.

  .. math::

     w_k = H q_k - \\beta_{k-1} q_{k-1}, \\quad \\alpha_k = q_k^\\top w_k, \\quad
     \\beta_k = \\lVert w_k - \\alpha_k q_k \\rVert, \\quad
     q_{k+1} = (w_k - \\alpha_k q_k) / \\beta_k,

  from a standard-normal ``q_1`` (normalised) with ``beta_0 q_0 = 0``, where
  ``H v = jvp(grad f, (x,), (v,))``. The extreme eigenvalues of the ``iters x iters``
  tridiagonal matrix ``T`` with diagonal ``alpha`` and off-diagonal ``beta`` (the Ritz values)
  estimate those of ``H`` (Lanczos, 1950). Ritz values lie in ``[lambda_min, lambda_max]`` and
  the extreme ones converge first, from inside, at both ends at once and whatever their signs
  (power iteration instead finds the eigenvalue of largest magnitude, and mixes the two ends
  when they are equal and opposite). The vectors are not reorthogonalised, so memory stays a
  few parameter vectors: in floating point they lose orthogonality as Ritz values converge,
  which only adds copies of converged Ritz values (Paige, 1980). When ``beta_k`` falls to
  rounding level (``beta_k <= eps ||H q_k||``) the Krylov space is exhausted and ``T``'s
  eigenvalues are exact; the recurrence stops, and the remaining rows of ``T`` repeat
  ``alpha_1``, a Rayleigh quotient, decoupled. Each iteration costs one Hessian-vector product
  over the whole data, about two forward-and-backward passes.

  Args:
    loss_fn: ``loss_fn(params, x, y) -> scalar``, the mean loss on a chunk.
    params: one member's parameters.
    data: ``(x, y)`` with a common leading axis.
    key: PRNG key of the starting vector.
    iters: Lanczos iterations (Hessian-vector products), ``>= 1``.
    chunk_size: examples per chunk.

  Returns:
    A :class:`HessianExtremes` ``(lambda_min, lambda_max)`` of scalars.

  Example:
    >>> loss = lambda w, x, y: 0.5 * jnp.sum(jnp.array([3.0, -3.0, 1.0]) * w ** 2)
    >>> data = (jnp.zeros((1, 1)), jnp.zeros(1))
    >>> extremes = hessian_extreme_eigs(loss, jnp.zeros(3), data, key=jax.random.PRNGKey(0),
    ...                                 iters=3)
    >>> print(f"{extremes.lambda_min:.3f} {extremes.lambda_max:.3f}")
    -3.000 3.000
  """
  _check_params(params)
  _validation.check_examples(data, "data")
  _validation.check_int("iters", iters, 1)
  _validation.check_int("chunk_size", chunk_size, 1)
  if key is None:
    raise ValueError("key: a PRNG key is required")
  return _hessian_extreme_eigs(loss_fn, params, data, key, iters=iters, chunk_size=chunk_size)


def hessian_top_eig(loss_fn, params, data, *, key, iters=100, chunk_size=DEFAULT_CHUNK_SIZE):
  """Largest (algebraic, not largest-magnitude) eigenvalue of the Hessian of ``f``.

  ``hessian_extreme_eigs(...).lambda_max``: see :func:`hessian_extreme_eigs` for the Lanczos
  recurrence, its cost (``iters`` Hessian-vector products) and its arguments. Near a minimum it
  is the largest curvature; at a saddle or a maximum it stays the largest eigenvalue even when
  a negative one is larger in magnitude. Up to rounding, it is a lower bound that converges
  from below.
  """
  return hessian_extreme_eigs(loss_fn, params, data, key=key, iters=iters,
                              chunk_size=chunk_size).lambda_max


@functools.partial(jax.jit, static_argnames=("loss_fn", "iters", "chunk_size"))
def _hessian_extreme_eigs(loss_fn, params, data, key, *, iters, chunk_size):
  x, unravel = ravel_pytree(params)
  grad_chunk = jax.grad(lambda flat, xc, yc: loss_fn(unravel(flat), xc, yc))

  def hvp(v):
    return _chunked_mean(
        lambda xc, yc: jax.jvp(lambda flat: grad_chunk(flat, xc, yc), (x,), (v,))[1],
        data, chunk_size)

  def step(state, _):
    hq = hvp(state.q)
    w = hq - state.beta * state.q_prev
    alpha = jnp.vdot(state.q, w)
    w = w - alpha * state.q
    beta = jnp.linalg.norm(w)
    active = state.active & (beta > jnp.finfo(beta.dtype).eps * jnp.linalg.norm(hq))
    beta = jnp.where(active, beta, 0.0)
    q_next = jnp.where(active, w / jnp.where(active, beta, 1.0), state.q)
    return (LanczosState(q=q_next, q_prev=state.q, beta=beta, active=active),
            (alpha, beta, state.active))

  q1 = jax.random.normal(key, x.shape, x.dtype)
  start = LanczosState(q=q1 / jnp.linalg.norm(q1), q_prev=jnp.zeros_like(x),
                       beta=jnp.zeros((), x.dtype), active=jnp.array(True))
  _, (alphas, betas, active) = lax.scan(step, start, None, length=iters)
  alphas = jnp.where(active, alphas, alphas[0])
  off_diagonal = betas[:-1]
  tridiagonal = jnp.diag(alphas) + jnp.diag(off_diagonal, 1) + jnp.diag(off_diagonal, -1)
  ritz_values = jnp.linalg.eigvalsh(tridiagonal)
  return HessianExtremes(lambda_min=ritz_values[0], lambda_max=ritz_values[-1])


def _flat_value_and_grad(loss_fn, unravel, data, chunk_size):
  """``x -> (f(x), grad f(x))`` over the flat parameter vector, chunk by chunk."""
  chunk_value_and_grad = jax.value_and_grad(lambda flat, xc, yc: loss_fn(unravel(flat), xc, yc))
  return lambda flat: _chunked_mean(lambda xc, yc: chunk_value_and_grad(flat, xc, yc), data,
                                    chunk_size)


def _chunked_mean(chunk_mean_fn, data, chunk_size):
  """Example-weighted mean of ``chunk_mean_fn(x_c, y_c)`` (a pytree of chunk means).

  Full chunks run in one ``lax.scan``; a shorter last chunk gets its own call, weighted by its
  size.
  """
  num_examples = jax.tree.leaves(data)[0].shape[0]
  size = min(chunk_size, num_examples)
  num_full, rest = divmod(num_examples, size)
  head = jax.tree.map(
      lambda a: a[: num_full * size].reshape(num_full, size, *a.shape[1:]), data)
  shapes = jax.eval_shape(chunk_mean_fn, *jax.tree.map(lambda a: a[0], head))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def accumulate(total, chunk):
    return jax.tree.map(jnp.add, total, chunk_mean_fn(*chunk)), None

  total, _ = lax.scan(accumulate, zeros, head)
  total = jax.tree.map(lambda t: size * t, total)
  if rest:
    tail = chunk_mean_fn(*jax.tree.map(lambda a: a[num_full * size:], data))
    total = jax.tree.map(lambda t, r: t + rest * r, total, tail)
  return jax.tree.map(lambda t: t / num_examples, total)


def _check_params(params):
  leaves = jax.tree.leaves(params)
  if not leaves or not all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in leaves):
    raise ValueError("params: expected a non-empty pytree of floating-point arrays")
  return sum(leaf.size for leaf in leaves)


def _check_positive(name, value):
  """Checks ``value > 0`` where it is concrete; a traced value (per member) is trusted."""
  if isinstance(value, jax.core.Tracer):
    return
  if jnp.ndim(value) != 0 or not float(value) > 0:
    raise ValueError(f"{name}: expected a positive scalar, got {value!r}")
