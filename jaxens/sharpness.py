"""Sharpness of a minimum: Keskar et al.'s box sharpness and the Hessian's top eigenvalue.

Both measures look at ``f``, the mean loss over a whole data set, which is evaluated chunk by
chunk inside the jitted computation so that memory stays bounded by one chunk:

.. math:: f(x) = \\frac{1}{N} \\sum_{c} |c| \\, \\ell_c(x),

where ``l_c = loss_fn(params, x_c, y_c)`` is the mean loss on chunk ``c``. The last chunk may be
shorter than the others; it is weighted by its size, so ``f`` is the exact mean for any ``N``.
Batch norm must therefore use population statistics inside ``loss_fn`` (evaluation mode):
with batch statistics ``f`` would depend on ``chunk_size``.

Every function takes a single member's ``params`` and is lifted to an ensemble with
``jax.vmap`` (member axis 0, data shared).

References:
  Keskar et al., 2017, On Large-Batch Training for Deep Learning: Generalization Gap and Sharp
  Minima (https://arxiv.org/abs/1609.04836).
  Frank & Wolfe, 1956, An algorithm for quadratic programming (Naval Res. Logist. Q. 3).
  Mangasarian, 1996, Machine Learning via Polyhedral Concave Minimization (Applied Mathematics
  and Parallel Computing, Physica).
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxens import _validation

#: Examples per chunk when ``f`` is evaluated over the whole data set.
DEFAULT_CHUNK_SIZE = 4096
#: The box-constrained solvers :func:`keskar` knows.
SOLVERS = ("frank_wolfe",)
# Entries of the random matrix A generated at once (rows x subspace_dim), about 16 MiB.
_SUBSPACE_BLOCK_ELEMENTS = 1 << 22


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
    n_passes: full forward-and-backward passes over the data spent (static),
      ``steps + 1``.
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
  ``A y`` and ``A^T g`` (``2 steps + 4`` sweeps over ``A``), and ``A^+ x = (A^T A)^+ A^T x``
  with the ``p x p`` matrix ``A^T A`` accumulated block by block.

  The maximisation is inexact, as in the paper (10 iterations of L-BFGS-B from ``y = 0``).
  ``solver="frank_wolfe"`` is conditional-gradient ascent with a step size ``gamma`` adapted
  without line search, one value-and-gradient pass per step:

  .. math::

     c_k = b \\odot \\mathrm{sign}(\\nabla_y f(y_k)), \\quad
     y' = y_k + \\gamma_k (c_k - y_k), \\quad
     (y_{k+1}, \\gamma_{k+1}) = \\begin{cases}
       (y', \\min(2\\gamma_k, 1)) & f(y') > f(y_k) \\\\
       (y_k, \\gamma_k / 2) & \\text{otherwise,} \\end{cases}

  from ``y_0 = 0`` and ``gamma_0 = 1``, where ``b`` are the box half-widths. The first step goes
  to the corner that maximises the first-order model exactly; for a convex ``f`` every
  full step increases ``f`` (Mangasarian, 1996). Every candidate is a convex combination of
  feasible points, so ``fmax`` is attained at a point of the box and never exceeds the true
  maximum. The cost is ``steps + 1`` forward-and-backward passes over ``data`` (one for
  ``f(x)`` and its gradient, one per step); ``Sharpness.n_passes`` records it.

  Args:
    loss_fn: ``loss_fn(params, x, y) -> scalar``, the mean loss on a chunk (batch norm in
      evaluation mode, see the module docstring). A static argument: pass the same function
      object to reuse the compiled program (a fresh ``functools.partial`` per eager call
      compiles anew; inside an outer ``jit`` it does not matter).
    params: one member's parameters, a pytree of float arrays with ``n`` entries in all.
    data: ``(x, y)``, the whole training set, with a common leading axis.
    epsilon: relative box size, ``> 0`` (the paper uses 1e-3 and 5e-4); may be traced.
    subspace_dim: ``p`` in ``[1, n]`` for a random subspace, or ``None`` for the full space.
    steps: solver steps, ``>= 1``.
    chunk_size: examples per chunk when ``f`` is evaluated.
    key: PRNG key that generates ``A``; required with ``subspace_dim``.
    solver: one of :data:`SOLVERS`.

  Returns:
    A :class:`Sharpness`.

  Example:
    >>> loss = lambda w, x, y: jnp.mean((x @ w - y) ** 2)
    >>> x, y = jnp.ones((8, 3)), jnp.ones(8)
    >>> result = keskar(loss, jnp.zeros(3), (x, y), epsilon=0.1)
    >>> result.solver, result.n_passes
    ('frank_wolfe', 11)
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
  return _keskar(loss_fn, params, data, epsilon, key, subspace_dim=subspace_dim, steps=steps,
                 chunk_size=chunk_size, solver=solver)


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "subspace_dim", "steps", "chunk_size", "solver"))
def _keskar(loss_fn, params, data, epsilon, key, *, subspace_dim, steps, chunk_size, solver):
  x, unravel = ravel_pytree(params)
  value_and_grad_x = _flat_value_and_grad(loss_fn, unravel, data, chunk_size)
  if subspace_dim is None:
    box = epsilon * (jnp.abs(x) + 1.0)
    embed = lambda y: y
    project = lambda g: g
  else:
    subspace = _RandomSubspace(key, x.size, subspace_dim)
    box = epsilon * (jnp.abs(subspace.pinv(x)) + 1.0)
    embed = subspace.matvec
    project = subspace.rmatvec

  def value_and_grad_y(y):
    value, grad = value_and_grad_x(x + embed(y))
    return value, project(grad)

  f0, best = _frank_wolfe(value_and_grad_y, box, steps)
  return Sharpness(
      value=100.0 * (best.value - f0) / (1.0 + f0),
      f0=f0,
      fmax=best.value,
      perturbation=unravel(embed(best.y)),
      solver=solver,
      n_passes=steps + 1,
  )


def _frank_wolfe(value_and_grad, box, steps):
  """Conditional-gradient ascent over ``|y| <= box``; returns ``f(0)`` and the best state."""
  value0, grad0 = value_and_grad(jnp.zeros_like(box))
  init = AscentState(y=jnp.zeros_like(box), value=value0, grad=grad0,
                     step_size=jnp.ones_like(value0))

  def step(state, _):
    corner = box * jnp.sign(state.grad)
    # The clip only removes rounding: the candidate lies on the segment [y, corner].
    candidate = jnp.clip(state.y + state.step_size * (corner - state.y), -box, box)
    value, grad = value_and_grad(candidate)
    better = value > state.value
    return AscentState(
        y=jnp.where(better, candidate, state.y),
        value=jnp.where(better, value, state.value),
        grad=jnp.where(better, grad, state.grad),
        step_size=jnp.where(better, jnp.minimum(2.0 * state.step_size, 1.0),
                            0.5 * state.step_size),
    ), None

  best, _ = lax.scan(step, init, None, length=steps)
  return value0, best


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


def hessian_top_eig(loss_fn, params, data, *, key, iters=100, chunk_size=DEFAULT_CHUNK_SIZE):
  """Top eigenvalue of the Hessian of ``f`` by power iteration on Hessian-vector products.

  .. math:: v_{k+1} = \\frac{H v_k}{\\lVert H v_k \\rVert}, \\qquad
     \\lambda_k = v_k^\\top H v_k,

  from a standard-normal ``v_0`` (normalised), with ``H v = jvp(grad f, (x,), (v,))``. The
  iteration converges to the eigenvalue of largest magnitude (near a minimum, the largest
  positive one), at a rate set by the ratio of the two largest magnitudes. Each iteration
  costs one Hessian-vector product over the whole data, about two forward-and-backward passes.

  Args:
    loss_fn: ``loss_fn(params, x, y) -> scalar``, the mean loss on a chunk.
    params: one member's parameters.
    data: ``(x, y)`` with a common leading axis.
    key: PRNG key of the starting vector.
    iters: power iterations, ``>= 1``; the result is the Rayleigh quotient of the last
      iterate (signed).
    chunk_size: examples per chunk.

  Returns:
    The eigenvalue estimate, a scalar.
  """
  _check_params(params)
  _validation.check_examples(data, "data")
  _validation.check_int("iters", iters, 1)
  _validation.check_int("chunk_size", chunk_size, 1)
  if key is None:
    raise ValueError("key: a PRNG key is required")
  return _hessian_top_eig(loss_fn, params, data, key, iters=iters, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("loss_fn", "iters", "chunk_size"))
def _hessian_top_eig(loss_fn, params, data, key, *, iters, chunk_size):
  x, unravel = ravel_pytree(params)
  grad_chunk = jax.grad(lambda flat, xc, yc: loss_fn(unravel(flat), xc, yc))

  def hvp(v):
    return _chunked_mean(
        lambda xc, yc: jax.jvp(lambda flat: grad_chunk(flat, xc, yc), (x,), (v,))[1],
        data, chunk_size)

  def step(v, _):
    hv = hvp(v)
    norm = jnp.linalg.norm(hv)
    return hv / jnp.maximum(norm, jnp.finfo(hv.dtype).tiny), jnp.vdot(v, hv)

  v0 = jax.random.normal(key, x.shape, x.dtype)
  _, eigenvalues = lax.scan(step, v0 / jnp.linalg.norm(v0), None, length=iters)
  return eigenvalues[-1]


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
