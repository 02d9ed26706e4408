"""Tests of jaxens.landscape against closed forms and explicit per-layer gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxens import landscape


def least_squares_problem(seed=0):
  """``L(w) = 1/(2N) |X w - y|^2``: Hessian ``H = X^T X / N``, gradient ``H w - X^T y / N``."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(20, 5)) * np.array([2.0, 1.0, 1.0, 0.5, 0.3])[None, :]
  y = rng.normal(size=20)
  w = rng.normal(size=5)
  return w, x, y


def least_squares_loss(params, x, y):
  w = jnp.concatenate([params["a"], params["b"]])
  return 0.5 * jnp.mean((x @ w - y) ** 2)


def test_along_gradient_matches_closed_form_on_a_quadratic():
  w, x, y = least_squares_problem()
  params = {"a": jnp.asarray(w[:3], jnp.float32), "b": jnp.asarray(w[3:], jnp.float32)}
  etas = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
  result = landscape.along_gradient(least_squares_loss, params,
                                    (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)),
                                    jnp.asarray(etas, jnp.float32))

  hessian = x.T @ x / len(x)
  g = hessian @ w - x.T @ y / len(x)
  loss = lambda v: 0.5 * np.mean((x @ v - y) ** 2)
  losses = np.array([loss(w - eta * g) for eta in etas])
  # grad L(w) - grad L(w - eta g) = eta H g.
  distances = etas * np.linalg.norm(hessian @ g)
  np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
  np.testing.assert_allclose(result.grad_distances, distances, rtol=1e-4)
  np.testing.assert_allclose(result.loss_variation, losses.max() - losses.min(), rtol=1e-4)
  np.testing.assert_allclose(result.gradient_predictiveness, distances.max() - distances.min(),
                             rtol=1e-4)
  np.testing.assert_allclose(result.beta_smoothness,
                             np.linalg.norm(hessian @ g) / np.linalg.norm(g), rtol=1e-4)
  np.testing.assert_allclose(result.loss, loss(w), rtol=1e-5)
  np.testing.assert_allclose(result.grad_norm, np.linalg.norm(g), rtol=1e-5)


def test_along_gradient_vmaps_over_members_with_their_own_grids():
  w, x, y = least_squares_problem()
  batch = (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
  members = [{"a": jnp.asarray(w[:3] * s, jnp.float32), "b": jnp.asarray(w[3:], jnp.float32)}
             for s in (1.0, -0.5)]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
  grids = jnp.array([[0.1, 0.2, 0.4], [0.05, 0.3, 0.6]])
  batched = jax.vmap(lambda p, etas: landscape.along_gradient(least_squares_loss, p, batch,
                                                              etas))(stacked, grids)
  for i, params in enumerate(members):
    single = landscape.along_gradient(least_squares_loss, params, batch, grids[i])
    for got, expected in zip(batched, single):
      np.testing.assert_allclose(got[i], expected, rtol=1e-5)


def small_net_loss(params, x, y):
  h = x @ params["dense_0"]["kernel"]
  h = h * params["scale_0"]["scale"][None, :]
  h = h @ params["dense_1"]["kernel"] + params["dense_1"]["bias"][None, :]
  h = jnp.tanh(h) @ params["dense_2"]["kernel"]
  return jnp.mean((h - y) ** 2)


def small_net():
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  params = {
      "dense_0": {"kernel": jax.random.normal(keys[0], (4, 3))},
      "scale_0": {"scale": 1.0 + 0.1 * jax.random.normal(keys[1], (3,))},
      "dense_1": {"kernel": jax.random.normal(keys[2], (3, 3)),
                  "bias": 0.1 * jax.random.normal(keys[3], (3,))},
      "dense_2": {"kernel": jax.random.normal(keys[4], (3, 2))},
  }
  x = jax.random.normal(keys[5], (8, 4))
  y = jnp.ones((8, 2))
  return params, (x, y)


def hand_ics(params, batch, groups, lr):
  """ICS layer by layer with explicit gradient calls."""
  grads = jax.grad(small_net_loss)(params, *batch)
  distances, cosines = [], []
  for i, group in enumerate(groups):
    shifted = dict(params)
    for earlier in groups[:i]:
      for k in earlier:
        shifted[k] = jax.tree.map(lambda p, g: p - lr * g, params[k], grads[k])
    shifted_grads = jax.grad(small_net_loss)(shifted, *batch)
    before = np.concatenate([np.ravel(leaf) for k in group for leaf in jax.tree.leaves(grads[k])])
    after = np.concatenate(
        [np.ravel(leaf) for k in group for leaf in jax.tree.leaves(shifted_grads[k])])
    distances.append(np.linalg.norm(before - after))
    cosines.append(before @ after / (np.linalg.norm(before) * np.linalg.norm(after)))
  return np.array(distances), np.array(cosines)


@pytest.mark.parametrize("layer_keys", [
    ["dense_0", "dense_1", "dense_2"],
    [("dense_0", "scale_0"), "dense_1", "dense_2"],
])
def test_ics_matches_explicit_per_layer_gradients(layer_keys):
  params, batch = small_net()
  lr = 0.3
  groups = [k if isinstance(k, tuple) else (k,) for k in layer_keys]
  distances, cosines = hand_ics(params, batch, groups, lr)
  result = landscape.ics(small_net_loss, params, batch, layer_keys, lr=lr)
  np.testing.assert_allclose(result.distance, distances, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(result.cosine, cosines, rtol=1e-5)
  # Nothing precedes the first layer; the others do shift.
  assert result.distance[0] < 1e-6 and np.all(result.distance[1:] > 1e-3)


def test_ics_update_fn_equals_lr():
  params, batch = small_net()
  keys = ["dense_0", "dense_1", "dense_2"]
  by_lr = landscape.ics(small_net_loss, params, batch, keys, lr=0.2)
  by_update = landscape.ics(small_net_loss, params, batch, keys,
                            update_fn=lambda p, g: jax.tree.map(lambda a, b: a - 0.2 * b, p, g))
  np.testing.assert_allclose(by_update.distance, by_lr.distance, rtol=1e-6)
  np.testing.assert_allclose(by_update.cosine, by_lr.cosine, rtol=1e-6)


@pytest.mark.parametrize("etas, match", [
    (jnp.array([0.1, 0.0]), "etas"),
    (jnp.array([[0.1]]), "etas"),
    (jnp.array([]), "etas"),
])
def test_along_gradient_rejects_bad_etas(etas, match):
  w, x, y = least_squares_problem()
  params = {"a": jnp.asarray(w[:3]), "b": jnp.asarray(w[3:])}
  with pytest.raises(ValueError, match=match):
    landscape.along_gradient(least_squares_loss, params, (x, y), etas)


def test_landscape_rejects_mismatched_batch():
  params, (x, y) = small_net()
  with pytest.raises(ValueError, match="batch"):
    landscape.along_gradient(small_net_loss, params, (x, y[:3]), jnp.array([0.1]))
  with pytest.raises(ValueError, match="batch"):
    landscape.ics(small_net_loss, params, (x,), ["dense_0"], lr=0.1)


@pytest.mark.parametrize("kwargs, match", [
    ({"layer_keys": [], "lr": 0.1}, "layer_keys"),
    ({"layer_keys": ["dense_0", "nope"], "lr": 0.1}, "layer_keys"),
    ({"layer_keys": ["dense_0", ("dense_0", "dense_1")], "lr": 0.1}, "layer_keys"),
    ({"layer_keys": ["dense_0"]}, "lr"),
    ({"layer_keys": ["dense_0"], "lr": 0.1, "update_fn": lambda p, g: p}, "lr"),
])
def test_ics_rejects_bad_arguments(kwargs, match):
  params, batch = small_net()
  with pytest.raises(ValueError, match=match):
    landscape.ics(small_net_loss, params, batch, **kwargs)
