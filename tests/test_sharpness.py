"""Tests of jaxens.sharpness against closed forms, scipy's L-BFGS-B and dense linear algebra."""

import functools

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


def flat_value_and_grad(params, data):
  """``y -> (f(x + y), grad)`` on the whole data at once, in float64 for scipy."""
  flat, unravel = ravel_pytree(params)
  value_and_grad = jax.jit(jax.value_and_grad(lambda w: mlp_loss(unravel(w), *data)))

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


def test_mean_loss_weights_a_short_last_chunk():
  params, (x, y) = tiny_problem(num_examples=23)
  expected = mlp_loss(params, x, y)
  for chunk_size in (1, 5, 23, 100):
    np.testing.assert_allclose(
        sharpness.mean_loss(mlp_loss, params, (x, y), chunk_size=chunk_size), expected,
        rtol=1e-5)
  result = sharpness.keskar(mlp_loss, params, (x, y), chunk_size=5, steps=1)
  np.testing.assert_allclose(result.f0, expected, rtol=1e-5)


@pytest.mark.parametrize("subspace_dim", [None, 3])
def test_keskar_evaluates_the_loss_n_passes_times_per_chunk(subspace_dim):
  params, data = tiny_problem(num_examples=23)
  chunk_sizes = []

  def counting_loss(p, x, y):
    jax.debug.callback(lambda: chunk_sizes.append(x.shape[0]))
    return mlp_loss(p, x, y)

  result = sharpness.keskar(counting_loss, params, data, steps=7, chunk_size=10,
                            subspace_dim=subspace_dim, key=jax.random.PRNGKey(0))
  jax.block_until_ready(result.value)
  jax.effects_barrier()
  assert result.n_passes == 7 + 1
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
  assert result.solver == "frank_wolfe" and result.n_passes == 11
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


def dense_subspace_keskar(params, data, epsilon, dim, key, steps):
  """The same ascent with A materialised from its documented rows and A+ from numpy."""
  flat, unravel = ravel_pytree(params)
  words = np.stack([np.asarray(jax.random.bits(jax.random.fold_in(key, i), (-(-dim // 32),),
                                               jnp.uint32)) for i in range(flat.size)])
  bits = (words[:, :, None] >> np.arange(32, dtype=np.uint32)[None, None, :]) & 1
  a = jnp.asarray(np.where(bits.reshape(flat.size, -1)[:, :dim] == 1, -1.0, 1.0), jnp.float32)
  a_pinv = np.linalg.pinv(np.asarray(a, np.float64))
  box = jnp.asarray(epsilon * (np.abs(a_pinv @ np.asarray(flat, np.float64)) + 1.0), jnp.float32)
  value_and_grad = jax.jit(jax.value_and_grad(lambda y: mlp_loss(unravel(flat + a @ y), *data)))

  y = jnp.zeros(dim)
  f0, grad = value_and_grad(y)
  best, step_size = f0, 1.0
  for _ in range(steps):
    candidate = jnp.clip(y + step_size * (box * jnp.sign(grad) - y), -box, box)
    value, candidate_grad = value_and_grad(candidate)
    if value > best:
      y, best, grad, step_size = candidate, value, candidate_grad, min(2 * step_size, 1.0)
    else:
      step_size /= 2
  return f0, best, a @ y


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
  largest = eigenvalues[np.argmax(np.abs(eigenvalues))]
  estimate = sharpness.hessian_top_eig(mlp_loss, params, data, key=jax.random.PRNGKey(1),
                                       iters=300, chunk_size=32)
  np.testing.assert_allclose(estimate, largest, rtol=1e-2)


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
  with pytest.raises(ValueError, match="data"):
    sharpness.hessian_top_eig(mlp_loss, params, data, key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("kwargs, match", [
    ({"iters": 0, "key": jax.random.PRNGKey(0)}, "iters"),
    ({"chunk_size": -1, "key": jax.random.PRNGKey(0)}, "chunk_size"),
    ({"key": None}, "key"),
])
def test_hessian_top_eig_rejects_bad_arguments(kwargs, match):
  params, data = tiny_problem()
  with pytest.raises(ValueError, match=match):
    sharpness.hessian_top_eig(mlp_loss, params, data, **kwargs)
