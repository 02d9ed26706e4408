"""Tests of jaxens.sharpness against closed forms, scipy's L-BFGS-B and dense linear algebra."""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

from jaxens import sharpness

SIZES = (6, 12, 12, 3)  # 267 parameters


def mlp_init(key, sizes):
  params = {}
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, sub = jax.random.split(key)
    params[f"dense_{i}"] = {
        "kernel": jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in),
        "bias": jnp.zeros(fan_out),
    }
  return params


def mlp_loss(params, x, y):
  h = x
  for i in range(len(params)):
    layer = params[f"dense_{i}"]
    h = h @ layer["kernel"] + layer["bias"][None, :]
    if i < len(params) - 1:
      h = jnp.tanh(h)
  log_probs = jax.nn.log_softmax(h)
  return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


@functools.lru_cache(maxsize=None)
def tiny_problem(seed=0, train_steps=30, num_examples=90):
  """A briefly trained tiny MLP and its data (mean loss about 0.13)."""
  kx, ky, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.normal(kx, (num_examples, SIZES[0]))
  y = jax.random.randint(ky, (num_examples,), 0, SIZES[-1])
  params = mlp_init(kp, SIZES)
  opt = optax.adam(0.05)

  def train_step(carry, _):
    params, state = carry
    updates, state = opt.update(jax.grad(mlp_loss)(params, x, y), state)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(train_step, (params, opt.init(params)), None, length=train_steps)
  return params, (x, y)


def flat_value_and_grad(params, data, loss=mlp_loss):
  """``y -> (f(x + y), grad)`` on the whole data at once, in float64 for scipy."""
  flat, unravel = ravel_pytree(params)
  value_and_grad = jax.jit(jax.value_and_grad(lambda w: loss(unravel(w), *data)))

  def fn(y):
    value, grad = value_and_grad(flat + jnp.asarray(y, flat.dtype))
    return float(value), np.asarray(grad, np.float64)
  return flat, fn


def lbfgsb_max(fn, box, maxiter, y0):
  """The paper's solver: scipy L-BFGS-B on ``-f`` over ``|y| <= box``."""
  def negated(y):
    value, grad = fn(y)
    return -value, -grad
  result = scipy.optimize.minimize(negated, y0, method="L-BFGS-B", jac=True,
                                   bounds=list(zip(-box, box)), options={"maxiter": maxiter})
  return -result.fun


def lbfgsb_reference(fn, box, maxiter):
  """A direct scipy call as the paper makes it: ``(f(0), best value seen, its y, evaluations)``."""
  seen = []

  def negated(y):
    value, grad = fn(y)
    seen.append((value, y.copy()))
    return -value, -grad
  scipy.optimize.minimize(negated, np.zeros_like(box), method="L-BFGS-B", jac=True,
                          bounds=list(zip(-box, box)), options={"maxiter": maxiter})
  fmax, y = max(seen, key=lambda pair: pair[0])
  return seen[0][0], fmax, y, len(seen)


def ascent_reference(value_and_grad, box, steps, frank_wolfe=True, gradient=True):
  """The documented ascents, written as loops: ``(f(0), fmax, y)`` of the better end point.

  Frank-Wolfe steps towards the corner ``b sign(g)``, projected gradient by a root-mean-square
  step ``s`` (in half-widths) along ``b g``; each doubles its step size (Frank-Wolfe's capped at
  1) when ``f`` increases and halves it otherwise.
  """
  f0, grad0 = value_and_grad(jnp.zeros_like(box))
  ends = []
  for use, step_size, max_step_size, candidate_fn in (
      (frank_wolfe, 1.0, 1.0, lambda y, g, s: y + s * (box * jnp.sign(g) - y)),
      (gradient, 0.125, np.inf,
       lambda y, g, s: y + s * box * (box * g) / jnp.sqrt(jnp.mean((box * g) ** 2)))):
    if not use:
      continue
    y, best, grad = jnp.zeros_like(box), f0, grad0
    for _ in range(steps):
      candidate = jnp.clip(candidate_fn(y, grad, step_size), -box, box)
      value, candidate_grad = value_and_grad(candidate)
      if value > best:
        y, best, grad = candidate, value, candidate_grad
        step_size = min(2 * step_size, max_step_size)
      else:
        step_size /= 2
    ends.append((best, y))
  fmax, y = max(ends, key=lambda end: float(end[0]))
  return f0, fmax, y


def as_float64(tree):
  return jax.tree.map(
      lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a,
      tree)


def test_mean_loss_weights_a_short_last_chunk():
  params, (x, y) = tiny_problem(num_examples=23)
  expected = mlp_loss(params, x, y)
  for chunk_size in (1, 5, 23, 100):
    np.testing.assert_allclose(
        sharpness.mean_loss(mlp_loss, params, (x, y), chunk_size=chunk_size), expected,
        rtol=1e-5)
  result = sharpness.keskar(mlp_loss, params, (x, y), chunk_size=5, steps=1)
  np.testing.assert_allclose(result.f0, expected, rtol=1e-5)


@pytest.mark.parametrize("solver", sharpness.SOLVERS)
@pytest.mark.parametrize("subspace_dim", [None, 3])
def test_keskar_evaluates_the_loss_n_passes_times_per_chunk(subspace_dim, solver):
  params, data = tiny_problem(num_examples=23)
  chunk_sizes = []

  def counting_loss(p, x, y):
    jax.debug.callback(lambda: chunk_sizes.append(x.shape[0]))
    return mlp_loss(p, x, y)

  result = sharpness.keskar(counting_loss, params, data, steps=7, chunk_size=10,
                            subspace_dim=subspace_dim, key=jax.random.PRNGKey(0), solver=solver)
  jax.block_until_ready(result.value)
  jax.effects_barrier()
  if solver == "frank_wolfe":
    assert result.n_passes == 2 * 7 + 1
  else:  # f(0) and at least one L-BFGS-B step
    assert result.n_passes >= 2
  # Chunks of 10, 10 and 3 examples: every pass covers the data exactly once.
  assert sorted(chunk_sizes) == sorted([10, 10, 3] * result.n_passes)


def test_separable_convex_quadratic_reaches_closed_form_maximum():
  rng = np.random.default_rng(0)
  dims = (7, 5)
  curvature = [rng.uniform(0.1, 3.0, d) for d in dims]
  centres = rng.normal(size=(11, sum(dims)))
  params = {"a": jnp.asarray(rng.normal(size=dims[0]), jnp.float32),
            "b": jnp.asarray(rng.normal(size=dims[1]), jnp.float32)}
  data = (jnp.asarray(centres, jnp.float32), jnp.zeros(len(centres)))
  weights = jnp.asarray(np.concatenate(curvature), jnp.float32)

  def loss(p, c, unused_y):
    w = jnp.concatenate([p["a"], p["b"]])
    return jnp.mean(jnp.sum(weights[None, :] * (w[None, :] - c) ** 2, axis=1))

  epsilon = 0.05
  w = np.concatenate([np.asarray(params["a"]), np.asarray(params["b"])]).astype(np.float64)
  box = epsilon * (np.abs(w) + 1.0)
  per_coordinate = lambda v: np.concatenate(curvature) * np.mean((v[None, :] - centres) ** 2, 0)
  f0 = per_coordinate(w).sum()
  # Convex in each coordinate: the maximum over an interval is at one of its ends.
  fmax = np.maximum(per_coordinate(w - box), per_coordinate(w + box)).sum()

  result = sharpness.keskar(loss, params, data, epsilon=epsilon, steps=10, chunk_size=4)
  np.testing.assert_allclose(result.f0, f0, rtol=1e-5)
  assert float(result.fmax) - f0 >= 0.99 * (fmax - f0)
  assert float(result.fmax) <= fmax * (1 + 1e-5)
  np.testing.assert_allclose(result.value, 100 * (result.fmax - result.f0) / (1 + result.f0),
                             rtol=1e-6)


@pytest.mark.parametrize("epsilon", [5e-4, 1e-3, 1e-2])
def test_tiny_mlp_matches_lbfgsb_and_stays_feasible(epsilon):
  params, data = tiny_problem()
  flat, fn = flat_value_and_grad(params, data)
  box = epsilon * (np.abs(np.asarray(flat, np.float64)) + 1.0)
  f0 = fn(np.zeros_like(box))[0]

  result = sharpness.keskar(mlp_loss, params, data, epsilon=epsilon, steps=10, chunk_size=32)
  assert result.solver == "frank_wolfe" and result.n_passes == 21
  gain = float(result.fmax) - f0
  oracle_gain = lbfgsb_max(fn, box, 10, np.zeros_like(box)) - f0
  assert oracle_gain > 0
  assert gain >= 0.95 * oracle_gain

  # fmax is attained at a point of the box, so it cannot exceed the true maximum ...
  perturbation, _ = ravel_pytree(result.perturbation)
  assert np.all(np.abs(np.asarray(perturbation, np.float64)) <= box * (1 + 1e-6))
  np.testing.assert_allclose(fn(perturbation)[0], result.fmax, rtol=1e-5)
  # ... nor the best of long runs from several starts.
  rng = np.random.default_rng(1)
  starts = [np.zeros_like(box)] + [rng.uniform(-box, box) for _ in range(3)]
  long_run = max(lbfgsb_max(fn, box, 1000, y0) for y0 in starts)
  long_run = max(long_run, float(sharpness.keskar(mlp_loss, params, data, epsilon=epsilon,
                                                  steps=200, chunk_size=32).fmax))
  assert float(result.fmax) <= long_run + 1e-6 * abs(long_run)


def dense_rademacher(key, num_rows, dim):
  """``A`` materialised from its documented rows."""
  words = np.stack([np.asarray(jax.random.bits(jax.random.fold_in(key, i), (-(-dim // 32),),
                                               jnp.uint32)) for i in range(num_rows)])
  bits = (words[:, :, None] >> np.arange(32, dtype=np.uint32)[None, None, :]) & 1
  return jnp.asarray(np.where(bits.reshape(num_rows, -1)[:, :dim] == 1, -1.0, 1.0), jnp.float32)


def dense_subspace_keskar(params, data, epsilon, dim, key, steps):
  """The same ascents with A materialised and A+ from numpy."""
  flat, unravel = ravel_pytree(params)
  a = dense_rademacher(key, flat.size, dim)
  a_pinv = np.linalg.pinv(np.asarray(a, np.float64))
  box = jnp.asarray(epsilon * (np.abs(a_pinv @ np.asarray(flat, np.float64)) + 1.0), jnp.float32)
  value_and_grad = jax.jit(jax.value_and_grad(lambda y: mlp_loss(unravel(flat + a @ y), *data)))
  f0, fmax, y = ascent_reference(value_and_grad, box, steps)
  return f0, fmax, a @ y


@pytest.mark.parametrize("block_elements", [1 << 22, 40 * 50])
def test_random_subspace_equals_dense_computation(monkeypatch, block_elements):
  # 40 * 50 elements: blocks of 50 rows, the last one partly masked.
  monkeypatch.setattr(sharpness, "_SUBSPACE_BLOCK_ELEMENTS", block_elements)
  params, data = tiny_problem()
  key = jax.random.PRNGKey(3)
  epsilon, dim, steps = 0.05, 40, 6  # 40 signs: two random words per row
  f0, fmax, displacement = dense_subspace_keskar(params, data, epsilon, dim, key, steps)
  # A fresh loss function, so that this block size gets its own compilation.
  result = sharpness.keskar(lambda p, x, y: mlp_loss(p, x, y), params, data, epsilon=epsilon,
                            subspace_dim=dim, steps=steps, key=key, chunk_size=32)
  np.testing.assert_allclose(result.f0, f0, rtol=1e-5)
  np.testing.assert_allclose(result.fmax, fmax, rtol=1e-4)
  assert float(fmax) > float(f0)
  np.testing.assert_allclose(ravel_pytree(result.perturbation)[0], displacement, rtol=1e-3,
                             atol=1e-5)


@pytest.mark.parametrize("subspace_dim", [None, 4])
def test_vmap_over_members_equals_per_member_calls(subspace_dim):
  members = [tiny_problem(seed=0, train_steps=t)[0] for t in (20, 40, 60)]
  _, data = tiny_problem()
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
  epsilons = jnp.array([1e-3, 5e-3, 1e-2])
  key = jax.random.PRNGKey(7)

  def member_sharpness(params, epsilon):
    return sharpness.keskar(mlp_loss, params, data, epsilon=epsilon, subspace_dim=subspace_dim,
                            key=key, steps=4, chunk_size=40)

  batched = jax.vmap(member_sharpness)(stacked, epsilons)
  assert batched.value.shape == (3,) and batched.solver == "frank_wolfe"
  for i, params in enumerate(members):
    single = member_sharpness(params, float(epsilons[i]))
    np.testing.assert_allclose(batched.value[i], single.value, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(batched.f0[i], single.f0, rtol=1e-5)


def corner_trap(w, unused_x, unused_y):
  """``f(w) = 0.1 w_1 + 0.02 w_2 + 0.02 (w_1 - w_2)^2``: at ``w = 0`` with ``epsilon = 1`` the
  box is ``[-1, 1]^2``. ``f`` is convex, so its maximum is at a corner. The gradient at 0
  points to ``(1, 1)``, a strict local maximum worth 0.12 (the gradient there, ``(0.1, 0.02)``,
  points out of the box); the global maximum is ``(1, -1)``, worth 0.16."""
  return 0.1 * w[0] + 0.02 * w[1] + 0.02 * (w[0] - w[1]) ** 2


def test_default_solver_leaves_a_corner_where_frank_wolfe_stalls():
  data = (jnp.zeros((1, 1)), jnp.zeros(1))
  grid = np.stack(np.meshgrid(np.linspace(-1, 1, 201), np.linspace(-1, 1, 201)), -1)
  values = np.asarray(jax.vmap(lambda w: corner_trap(w, *data))(
      jnp.asarray(grid.reshape(-1, 2), jnp.float32)))
  np.testing.assert_allclose(values.max(), 0.16, rtol=1e-6)
  np.testing.assert_array_equal(grid.reshape(-1, 2)[values.argmax()], [1.0, -1.0])
  value_and_grad = jax.jit(jax.value_and_grad(lambda w: corner_trap(w, *data)))
  assert np.all(np.asarray(value_and_grad(jnp.ones(2))[1]) > 0)  # (1, 1) is a KKT point

  # Frank-Wolfe alone (the old solver) stops at (1, 1), however many steps it takes.
  for steps in (10, 100):
    _, fmax, y = ascent_reference(value_and_grad, jnp.ones(2), steps, gradient=False)
    np.testing.assert_allclose(fmax, 0.12, rtol=1e-6)
    np.testing.assert_array_equal(y, [1.0, 1.0])

  result = sharpness.keskar(corner_trap, jnp.zeros(2), data, epsilon=1.0)
  assert result.solver == "frank_wolfe" and result.n_passes == 21
  np.testing.assert_allclose(result.fmax, 0.16, rtol=1e-6)
  np.testing.assert_allclose(result.perturbation, [1.0, -1.0], rtol=1e-6)
  # L-BFGS-B, whose first steps are short too, gets there as well.
  lbfgsb = sharpness.keskar(corner_trap, jnp.zeros(2), data, epsilon=1.0, solver="lbfgsb")
  np.testing.assert_allclose(lbfgsb.fmax, 0.16, rtol=1e-6)


def least_squares_loss(p, x, y):
  return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


@functools.lru_cache(maxsize=None)
def least_squares_problem():
  """Linear least squares near its solution, where the gradient is small."""
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(40, 5)), rng.normal(size=40)
  solution = np.linalg.lstsq(np.c_[x, np.ones(40)], y, rcond=None)[0] + 0.01 * rng.normal(size=6)
  params = {"w": jnp.asarray(solution[:5], jnp.float32),
            "b": jnp.asarray(solution[5:], jnp.float32)}
  return params, (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("problem, subspace_dim, epsilon", [
    ("mlp", None, 1e-2), ("least_squares", None, 0.5), ("mlp", 20, 5e-2)])
def test_lbfgsb_matches_a_direct_scipy_call(problem, subspace_dim, epsilon, x64):
  # Settings where L-BFGS-B takes 6 to 12 evaluations, not one step to a corner.
  loss = {"mlp": mlp_loss, "least_squares": least_squares_loss}[problem]
  params, data = tiny_problem() if problem == "mlp" else least_squares_problem()
  key = jax.random.PRNGKey(4)
  with jax.enable_x64(x64):
    if x64:
      params, data = as_float64(params), as_float64(data)
    flat, unravel = ravel_pytree(params)
    if subspace_dim is None:
      a = jnp.eye(flat.size, dtype=flat.dtype)
      # The box in the parameters' dtype, as keskar computes it.
      box = np.asarray(epsilon * (jnp.abs(flat) + 1.0), np.float64)
    else:
      a = dense_rademacher(key, flat.size, subspace_dim).astype(flat.dtype)
      coordinates = np.linalg.pinv(np.asarray(a, np.float64)) @ np.asarray(flat, np.float64)
      box = np.asarray(jnp.asarray(epsilon * (np.abs(coordinates) + 1.0), flat.dtype),
                       np.float64)
    value_and_grad = jax.jit(jax.value_and_grad(lambda y: loss(unravel(flat + a @ y), *data)))

    def fn(y):
      value, grad = value_and_grad(jnp.asarray(y, flat.dtype))
      return float(value), np.asarray(grad, np.float64)

    f0, fmax, y, evaluations = lbfgsb_reference(fn, box, 10)
    result = sharpness.keskar(loss, params, data, epsilon=epsilon, subspace_dim=subspace_dim,
                              key=key, steps=10, chunk_size=16, solver="lbfgsb")
    perturbation = ravel_pytree(result.perturbation)[0]
    at_perturbation = flat_value_and_grad(params, data, loss)[1](perturbation)[0]
  assert fmax > f0 and evaluations >= 6
  assert result.solver == "lbfgsb" and result.n_passes == evaluations
  assert result.fmax.dtype == perturbation.dtype == flat.dtype
  # Chunked float32 sums round differently from the reference's one-shot ones.
  rtol = 1e-12 if x64 else 1e-6
  np.testing.assert_allclose(result.f0, f0, rtol=rtol)
  np.testing.assert_allclose(result.fmax, fmax, rtol=rtol)
  np.testing.assert_allclose(result.value, 100 * (fmax - f0) / (1 + f0), rtol=10 * rtol)
  np.testing.assert_allclose(perturbation, np.asarray(a, np.float64) @ y, rtol=0,
                             atol=100 * rtol * np.max(box))
  # The maximiser is in the box and attains fmax.
  if subspace_dim is None:
    assert np.all(np.abs(np.asarray(perturbation, np.float64)) <= box)
  np.testing.assert_allclose(at_perturbation, result.fmax, rtol=rtol)


def test_lbfgsb_rejects_traced_arguments():
  params, data = tiny_problem()

  def lbfgsb(p, epsilon):
    return sharpness.keskar(mlp_loss, p, data, epsilon=epsilon, solver="lbfgsb")

  with pytest.raises(ValueError, match="params: .*cannot be traced"):
    jax.jit(lbfgsb)(params, 1e-3)
  with pytest.raises(ValueError, match="epsilon: .*cannot be traced"):
    jax.vmap(lambda epsilon: lbfgsb(params, epsilon))(jnp.array([1e-3, 2e-3]))


def test_lbfgsb_without_scipy_names_the_missing_dependency(monkeypatch):
  monkeypatch.setitem(sys.modules, "scipy.optimize", None)
  params, data = tiny_problem()
  with pytest.raises(ImportError, match=r'keskar\(solver="lbfgsb"\) needs scipy'):
    sharpness.keskar(mlp_loss, params, data, solver="lbfgsb")


def dense_hessian(loss, params, data):
  flat, unravel = ravel_pytree(params)
  return np.asarray(jax.hessian(lambda w: loss(unravel(w), *data))(flat), np.float64)


def test_hessian_top_eig_matches_eigvalsh_on_least_squares():
  rng = np.random.default_rng(0)
  # Scaled columns give a well separated, positive top eigenvalue.
  x = jnp.asarray(rng.normal(size=(50, 6)) * np.array([3.0, 1.5, 1, 1, 0.5, 0.2])[None, :],
                  jnp.float32)
  y = jnp.asarray(rng.normal(size=50), jnp.float32)
  params = {"w": jnp.zeros(4), "v": jnp.zeros(2)}
  loss = lambda p, xb, yb: jnp.mean((xb @ jnp.concatenate([p["w"], p["v"]]) - yb) ** 2)
  expected = np.linalg.eigvalsh(dense_hessian(loss, params, (x, y)))[-1]
  estimate = sharpness.hessian_top_eig(loss, params, (x, y), key=jax.random.PRNGKey(0),
                                       iters=100, chunk_size=16)
  np.testing.assert_allclose(estimate, expected, rtol=1e-4)


def test_hessian_top_eig_matches_eigvalsh_on_tiny_mlp():
  params, data = tiny_problem()
  eigenvalues = np.linalg.eigvalsh(dense_hessian(mlp_loss, params, data))
  estimate = sharpness.hessian_top_eig(mlp_loss, params, data, key=jax.random.PRNGKey(1),
                                       chunk_size=32)
  np.testing.assert_allclose(estimate, eigenvalues[-1], rtol=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_hessian_extreme_eigs_match_eigvalsh_in_float64(sign):
  # sign -1 negates the loss: its most negative eigenvalue dominates in magnitude, and the
  # largest eigenvalue is small and positive.
  params, data = tiny_problem()
  loss = lambda p, x, y: sign * mlp_loss(p, x, y)
  with jax.enable_x64(True):
    params, data = as_float64(params), as_float64(data)
    eigenvalues = np.linalg.eigvalsh(dense_hessian(loss, params, data))
    key = jax.random.PRNGKey(1)
    extremes = sharpness.hessian_extreme_eigs(loss, params, data, key=key, chunk_size=32)
    top = sharpness.hessian_top_eig(loss, params, data, key=key, chunk_size=32)
  scale = np.max(np.abs(eigenvalues))
  assert eigenvalues[0] < 0 < eigenvalues[-1]
  assert (scale == eigenvalues[-1]) == (sign > 0)
  assert extremes.lambda_max.dtype == jnp.float64
  np.testing.assert_allclose(extremes.lambda_min, eigenvalues[0], rtol=0, atol=1e-8 * scale)
  np.testing.assert_allclose(extremes.lambda_max, eigenvalues[-1], rtol=0, atol=1e-8 * scale)
  np.testing.assert_array_equal(top, extremes.lambda_max)


@pytest.mark.parametrize("iters", [5, 30])
def test_hessian_extremes_of_equal_magnitude_do_not_depend_on_the_key(iters):
  # H = Q diag(3, -3, 1, 0.5, -2) Q^T. Power iteration would return a key-dependent mix of +3
  # and -3; 5 Lanczos steps span the space, 30 go on past the exhausted Krylov space.
  rng = np.random.default_rng(0)
  rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  hessian = jnp.asarray(rotation @ np.diag([3.0, -3.0, 1.0, 0.5, -2.0]) @ rotation.T,
                        jnp.float32)
  loss = lambda w, x, y: 0.5 * w @ hessian @ w + jnp.mean(x) + jnp.mean(y)
  params = jnp.asarray(rng.normal(size=5), jnp.float32)
  data = (jnp.zeros((4, 1)), jnp.zeros(4))
  keys = jax.random.split(jax.random.PRNGKey(0), 8)
  extremes = jax.vmap(lambda key: sharpness.hessian_extreme_eigs(
      loss, params, data, key=key, iters=iters))(keys)
  np.testing.assert_allclose(extremes.lambda_max, np.full(8, 3.0), rtol=1e-5)
  np.testing.assert_allclose(extremes.lambda_min, np.full(8, -3.0), rtol=1e-5)
  for key in keys[:3]:
    np.testing.assert_allclose(
        sharpness.hessian_top_eig(loss, params, data, key=key, iters=iters), 3.0, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"epsilon": 0.0}, "epsilon"),
    ({"epsilon": -1e-3}, "epsilon"),
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"subspace_dim": 0, "key": jax.random.PRNGKey(0)}, "subspace_dim"),
    ({"subspace_dim": 10_000, "key": jax.random.PRNGKey(0)}, "subspace_dim"),
    ({"subspace_dim": 3}, "key"),
    ({"solver": "bfgs"}, "solver"),
])
def test_keskar_rejects_bad_arguments(kwargs, match):
  params, data = tiny_problem()
  with pytest.raises(ValueError, match=match):
    sharpness.keskar(mlp_loss, params, data, **kwargs)


@pytest.mark.parametrize("data", [
    (jnp.zeros((5, 6)), jnp.zeros(4, jnp.int32)),
    (jnp.zeros((5, 6)),),
    (jnp.zeros((0, 6)), jnp.zeros(0, jnp.int32)),
])
def test_sharpness_functions_reject_mismatched_data(data):
  params, _ = tiny_problem()
  with pytest.raises(ValueError, match="data"):
    sharpness.keskar(mlp_loss, params, data)
  for hessian_fn in (sharpness.hessian_top_eig, sharpness.hessian_extreme_eigs):
    with pytest.raises(ValueError, match="data"):
      hessian_fn(mlp_loss, params, data, key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("kwargs, match", [
    ({"iters": 0, "key": jax.random.PRNGKey(0)}, "iters"),
    ({"chunk_size": -1, "key": jax.random.PRNGKey(0)}, "chunk_size"),
    ({"key": None}, "key"),
])
@pytest.mark.parametrize("hessian_fn", [sharpness.hessian_top_eig,
                                        sharpness.hessian_extreme_eigs])
def test_hessian_functions_reject_bad_arguments(hessian_fn, kwargs, match):
  params, data = tiny_problem()
  with pytest.raises(ValueError, match=match):
    hessian_fn(mlp_loss, params, data, **kwargs)
