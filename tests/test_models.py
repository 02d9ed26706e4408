"""The model protocol: each adapter gives pure init/apply with the documented train/eval modes."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxens import models
from jaxens import nn

KEY = jax.random.PRNGKey(0)


class LinenBNDropout(linen.Module):
  """Dense -> BatchNorm -> ReLU -> Dropout -> Dense, driven by ``train``."""

  @linen.compact
  def __call__(self, x, train):
    x = linen.Dense(16)(x)
    x = linen.BatchNorm(use_running_average=not train, momentum=0.5)(x)
    x = linen.Dropout(0.5, deterministic=not train)(linen.relu(x))
    return linen.Dense(3)(x)


class NnxBNDropout(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(8, 16, rngs=rngs)
    self.norm = nnx.BatchNorm(16, momentum=0.5, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)
    self.out = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(self.drop(nnx.relu(self.norm(self.dense(x)))))


def _x(n=32, seed=1):
  return jax.random.normal(jax.random.PRNGKey(seed), (n, 8))


ADAPTERS = {
    "linen": lambda: models.from_linen(LinenBNDropout()),
    "nnx": lambda: models.from_nnx(NnxBNDropout),
}


def test_mlp_adapter_is_nn():
  cfg = nn.MLPConfig(sizes=(8, 16, 3), norm="batch", dropout=0.3)
  model = models.mlp(cfg)
  params, state = model.init(KEY, _x())
  expected_params, expected_state = nn.mlp_init(KEY, cfg)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, params, expected_params))
  rng = jax.random.PRNGKey(5)
  out, new_state = model.apply(params, state, _x(), train=True, rng=rng)
  expected, expected_new = nn.mlp_apply(cfg, params, state, _x(), train=True, rng=rng)
  np.testing.assert_array_equal(out, expected)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, new_state, expected_new))
  assert models.mlp(cfg) is model  # One config, one Model, one compiled program.


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_train_mode_updates_statistics_and_eval_mode_uses_them(name):
  model = ADAPTERS[name]()
  params, state = model.init(KEY, _x())
  x = _x() * 3.0 + 1.0
  _, trained_state = model.apply(params, state, x, train=True, rng=jax.random.PRNGKey(1))
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(
      trained_state)) if jnp.issubdtype(a.dtype, jnp.floating)]
  assert any(moved), "training mode must update the batch statistics"
  # Evaluation mode: population statistics, no dropout, so one example's output does not
  # depend on the rest of its batch, and the state comes back unchanged.
  alone, same_state = model.apply(params, trained_state, x[:1], train=False, rng=None)
  in_batch, _ = model.apply(params, trained_state, x, train=False, rng=None)
  np.testing.assert_allclose(alone[0], in_batch[0], rtol=1e-5, atol=1e-6)
  assert same_state is trained_state


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_dropout_follows_the_rng(name):
  model = ADAPTERS[name]()
  params, state = model.init(KEY, _x())
  run = lambda seed: model.apply(params, state, _x(), train=True,
                                 rng=jax.random.PRNGKey(seed))[0]
  np.testing.assert_array_equal(run(3), run(3))
  assert not np.allclose(run(3), run(4))


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapters_vmap_over_member_keys(name):
  model = ADAPTERS[name]()
  keys = jax.random.split(KEY, 3)
  params, state = jax.vmap(model.init, in_axes=(0, None))(keys, _x())
  out, _ = jax.vmap(lambda p, s: model.apply(p, s, _x(), train=False, rng=None))(params, state)
  assert out.shape == (3, 32, 3)
  assert not np.allclose(out[0], out[1])  # Each member its own initial weights.


def test_init_apply_pair_is_a_model():
  init = lambda key, x: ({"w": jax.random.normal(key, (x.shape[-1], 2))}, {})
  apply = lambda params, state, x, *, train, rng=None: (x @ params["w"], state)
  model = models.resolve((init, apply))
  assert isinstance(model, models.Model) and model.apply is apply


@pytest.mark.parametrize("bad, argument", [(42, "model"), ("mlp", "model")])
def test_resolve_names_the_argument(bad, argument):
  with pytest.raises(ValueError, match=argument):
    models.resolve(bad)


def test_from_linen_rejects_a_non_module():
  with pytest.raises(ValueError, match="module"):
    models.from_linen(lambda x: x)
