import dataclasses

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxens import nn

KEY = jax.random.PRNGKey(0)


def _inputs(n=64, d=784, seed=1):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n, d))


def test_default_is_the_pool_member():
  params, state = nn.mlp_init(KEY, nn.MLPConfig())
  shapes = {k: v["kernel"].shape for k, v in params.items()}
  assert shapes == {"dense_0": (784, 100), "dense_1": (100, 100), "dense_2": (100, 100),
                    "dense_3": (100, 10)}
  assert state == {}
  logits, _ = nn.mlp_apply(nn.MLPConfig(), params, state, _inputs(), train=False)
  assert logits.shape == (64, 10)


class _FlaxBN(linen.Module):
  """Dense -> BatchNorm -> ReLU for every hidden layer, then Dense, as in flax.linen."""
  sizes: tuple
  eps: float

  @linen.compact
  def __call__(self, x):
    for width in self.sizes[1:-1]:
      x = linen.Dense(width)(x)
      x = linen.BatchNorm(use_running_average=True, epsilon=self.eps)(x)
      x = linen.relu(x)
    return linen.Dense(self.sizes[-1])(x)


def test_eval_batch_norm_matches_flax_linen():
  cfg = nn.MLPConfig(sizes=(784, 32, 16, 10), norm="batch")
  params, state = nn.mlp_init(KEY, cfg)
  rng = np.random.default_rng(0)
  # Non-trivial statistics and affine parameters, shared by both implementations.
  for name in state:
    width = state[name]["mean"].shape[0]
    state[name] = {"mean": jnp.asarray(rng.normal(size=width), jnp.float32),
                   "var": jnp.asarray(rng.uniform(0.5, 2.0, size=width), jnp.float32)}
    params[name] = {"scale": jnp.asarray(rng.normal(size=width), jnp.float32),
                    "bias": jnp.asarray(rng.normal(size=width), jnp.float32)}
  model = _FlaxBN(cfg.sizes, cfg.bn_eps)
  flax_vars = {
      "params": {f"Dense_{i}": params[f"dense_{i}"] for i in range(3)}
      | {f"BatchNorm_{i}": params[f"norm_{i}"] for i in range(2)},
      "batch_stats": {f"BatchNorm_{i}": state[f"norm_{i}"] for i in range(2)},
  }
  x = _inputs()
  expected = model.apply(flax_vars, x)
  got, new_state = nn.mlp_apply(cfg, params, state, x, train=False)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  assert new_state is state


def test_train_batch_norm_standardises_each_feature():
  cfg = nn.MLPConfig(sizes=(784, 50, 50), norm="batch", activation="linear", norm_logits=True)
  params, state = nn.mlp_init(KEY, cfg)
  out, _ = nn.mlp_apply(cfg, params, state, _inputs(256) * 5 + 3, train=True)
  np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(out.var(axis=0), 1.0, rtol=1e-2)  # eps 1e-3 shrinks it slightly.


def test_train_batch_norm_updates_moving_averages_with_momentum():
  cfg = nn.MLPConfig(sizes=(784, 20, 10), norm="batch", bn_momentum=0.9)
  params, state = nn.mlp_init(KEY, cfg)
  x = _inputs()
  _, new_state = nn.mlp_apply(cfg, params, state, x, train=True)
  h = x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"][None, :]
  np.testing.assert_allclose(new_state["norm_0"]["mean"], 0.1 * h.mean(axis=0), atol=1e-5)
  np.testing.assert_allclose(new_state["norm_0"]["var"], 0.9 + 0.1 * h.var(axis=0), atol=1e-5)


def test_eval_output_does_not_depend_on_the_batch():
  cfg = nn.MLPConfig(sizes=(784, 30, 10), norm="batch")
  params, state = nn.mlp_init(KEY, cfg)
  x = _inputs()
  alone, _ = nn.mlp_apply(cfg, params, state, x[:1], train=False)
  together, _ = nn.mlp_apply(cfg, params, state, x, train=False)
  np.testing.assert_allclose(alone[0], together[0], atol=1e-5)  # Matmul blocking only.
  in_train, _ = nn.mlp_apply(cfg, params, state, x[:2], train=True)
  assert float(jnp.max(jnp.abs(in_train[0] - together[0]))) > 1e-2


def test_population_statistics_average_the_batch_statistics():
  cfg = nn.MLPConfig(sizes=(784, 20, 10), norm="batch")
  params, state = nn.mlp_init(KEY, cfg)
  x = _inputs(96)
  new_state = nn.population_statistics(cfg, params, state, x, batch_size=32)
  h = (x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"][None, :]).reshape(3, 32, 20)
  np.testing.assert_allclose(new_state["norm_0"]["mean"], h.mean(axis=(0, 1)), atol=1e-5)
  np.testing.assert_allclose(new_state["norm_0"]["var"], h.var(axis=1).mean(0) * 32 / 31,
                             rtol=1e-4)


@pytest.mark.parametrize("position", ["pre", "post"])
def test_norm_position_orders_norm_and_activation(position):
  cfg = nn.MLPConfig(sizes=(784, 20, 10), norm="layer", norm_position=position, activation="relu")
  params, _ = nn.mlp_init(KEY, cfg)
  x = _inputs(8)
  h = x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"][None, :]
  layer_norm = lambda v: (v - v.mean(-1, keepdims=True)) / jnp.sqrt(v.var(-1, keepdims=True) + 1e-3)
  hidden = jax.nn.relu(layer_norm(h)) if position == "pre" else layer_norm(jax.nn.relu(h))
  expected = hidden @ params["dense_1"]["kernel"] + params["dense_1"]["bias"][None, :]
  got, _ = nn.mlp_apply(cfg, params, {}, x, train=False)
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_norm_layers_selects_hidden_layers_and_logits():
  cfg = nn.MLPConfig(sizes=(784, 8, 8, 8, 10), norm="batch", norm_layers=(1, 2), norm_logits=True)
  params, state = nn.mlp_init(KEY, cfg)
  assert sorted(k for k in params if k.startswith("norm")) == ["norm_1", "norm_2", "norm_3"]
  assert sorted(state) == ["norm_1", "norm_2", "norm_3"]


def _identity_net(kind, rate, width=4000, activation="linear"):
  """One hidden layer with an identity kernel, so dropout acts on known values."""
  cfg = nn.MLPConfig(sizes=(width, width, 1), dropout=rate, dropout_kind=kind,
                     activation=activation)
  params, state = nn.mlp_init(KEY, cfg)
  params["dense_0"] = {"kernel": jnp.eye(width), "bias": jnp.zeros(width)}
  return cfg, params, state


def _hidden_after_dropout(cfg, params, x, seed=3):
  """Hidden activations as the logits layer sees them, read through an identity-like readout."""
  width = cfg.sizes[1]
  cfg_out = nn.MLPConfig(sizes=(width, width, width), dropout=cfg.dropout,
                         dropout_kind=cfg.dropout_kind, activation=cfg.activation)
  p = {"dense_0": params["dense_0"], "dense_1": {"kernel": jnp.eye(width), "bias": jnp.zeros(width)}}
  out, _ = nn.mlp_apply(cfg_out, p, {}, x, train=True, rng=jax.random.PRNGKey(seed))
  return out


def test_standard_dropout_keeps_the_expected_fraction_and_the_mean():
  cfg, params, _ = _identity_net("standard", 0.3)
  x = jnp.ones((8, 4000))
  out = _hidden_after_dropout(cfg, params, x)
  assert abs(float(jnp.mean(out == 0)) - 0.3) < 0.01
  assert abs(float(out.mean()) - 1.0) < 0.02
  np.testing.assert_allclose(out[out != 0], 1 / 0.7, rtol=1e-6)


def test_gaussian_dropout_variance_is_p_over_one_minus_p():
  cfg, params, _ = _identity_net("gaussian", 0.2)
  out = _hidden_after_dropout(cfg, params, jnp.ones((8, 4000)))
  assert abs(float(out.mean()) - 1.0) < 0.01
  assert abs(float(out.var()) - 0.2 / 0.8) < 0.01


def test_alpha_dropout_preserves_selu_moments():
  cfg, params, _ = _identity_net("alpha", 0.1, activation="selu")
  # Inputs whose SELU image has zero mean and unit variance: the SELU fixed point.
  pre = jax.random.normal(jax.random.PRNGKey(5), (16, 4000))
  selu = jax.nn.selu(pre)
  assert abs(float(selu.mean())) < 0.02 and abs(float(selu.var()) - 1.0) < 0.03
  out = _hidden_after_dropout(cfg, params, pre)
  assert abs(float(out.mean())) < 0.03
  assert abs(float(out.var()) - 1.0) < 0.05


def test_dropconnect_masks_weights_not_units():
  width = 200
  cfg = nn.MLPConfig(sizes=(width, width, 1), input_dropout=0.5, dropout_kind="dropconnect",
                     activation="linear")
  params, state = nn.mlp_init(KEY, cfg)
  params["dense_0"] = {"kernel": jnp.ones((width, width)), "bias": jnp.zeros(width)}
  params["dense_1"] = {"kernel": jnp.ones((width, 1)), "bias": jnp.zeros(1)}
  x = jnp.eye(width)  # Row i reads row i of the (masked) kernel.
  cfg_hidden = nn.MLPConfig(sizes=(width, width, width), input_dropout=0.5,
                            dropout_kind="dropconnect", activation="linear")
  p = {"dense_0": params["dense_0"], "dense_1": {"kernel": jnp.eye(width), "bias": jnp.zeros(width)}}
  masked, _ = nn.mlp_apply(cfg_hidden, p, {}, x, train=True, rng=jax.random.PRNGKey(0))
  masked = np.asarray(masked)
  assert set(np.unique(masked)) == {0.0, 2.0}
  assert abs((masked == 0).mean() - 0.5) < 0.02
  # Unit dropout would zero whole rows or columns; DropConnect zeroes scattered weights.
  assert not np.any(np.all(masked == 0, axis=0)) and not np.any(np.all(masked == 0, axis=1))


def test_eval_mode_is_deterministic_and_needs_no_rng():
  cfg = nn.MLPConfig(sizes=(784, 30, 10), dropout=0.5, input_dropout=0.2)
  params, state = nn.mlp_init(KEY, cfg)
  x = _inputs(8)
  a, _ = nn.mlp_apply(cfg, params, state, x, train=False)
  without_dropout = dataclasses.replace(cfg, dropout=0.0, input_dropout=0.0)
  b, _ = nn.mlp_apply(without_dropout, params, state, x, train=False)
  np.testing.assert_array_equal(a, b)  # Eval mode is the plain network: no masks, no scaling.
  with pytest.raises(ValueError, match="rng"):
    nn.mlp_apply(cfg, params, state, x, train=True)


def test_bn_noise_changes_training_output_only():
  cfg = nn.MLPConfig(sizes=(784, 30, 10), norm="batch", bn_noise=nn.BNNoise())
  params, state = nn.mlp_init(KEY, cfg)
  plain = nn.MLPConfig(sizes=(784, 30, 10), norm="batch")
  x = _inputs(16)
  noisy, _ = nn.mlp_apply(cfg, params, state, x, train=True, rng=jax.random.PRNGKey(1))
  clean, _ = nn.mlp_apply(plain, params, state, x, train=True)
  assert float(jnp.max(jnp.abs(noisy - clean))) > 1e-2
  np.testing.assert_array_equal(nn.mlp_apply(cfg, params, state, x, train=False)[0],
                                nn.mlp_apply(plain, params, state, x, train=False)[0])


def test_bn_noise_follows_santurkar_ranges():
  # a_ij <- s_ij * a_ij + m_ij: with one key, a = 0 shows the shift m alone and the difference
  # between a = 2 and a = 1 shows the scale s alone, so a swap of the two noises fails.
  noise = nn.BNNoise()
  key = jax.random.PRNGKey(0)
  shift = nn._bn_noise(noise, key, jnp.zeros((512, 64)))
  scale = nn._bn_noise(noise, key, jnp.full((512, 64), 2.0)) - nn._bn_noise(
      noise, key, jnp.ones((512, 64)))
  # m in mu +- 0.1 with mu in [-0.5, 0.5]; s in sigma +- 0.1 with sigma in [1, 1.25].
  assert float(shift.min()) >= -0.6 and float(shift.max()) <= 0.6
  assert float(scale.min()) >= 0.9 - 1e-5 and float(scale.max()) <= 1.35 + 1e-5
  # Per activation, the per-example spread comes from the +-0.1 jitters alone, and the
  # per-activation centres cover their ranges.
  for part in (shift, scale):
    assert float((part.max(axis=0) - part.min(axis=0)).max()) <= 0.2 + 1e-5
  assert float(shift.mean(axis=0).max() - shift.mean(axis=0).min()) > 0.5
  assert float(scale.mean(axis=0).max() - scale.mean(axis=0).min()) > 0.15


def test_wrong_input_width_names_the_expected_width():
  cfg = nn.MLPConfig()
  params, state = nn.mlp_init(KEY, cfg)
  with pytest.raises(ValueError, match=r"\(batch, 784\)"):
    nn.mlp_apply(cfg, params, state, jnp.ones((4, 100)), train=False)


@pytest.mark.parametrize("kwargs, argument", [
    ({"activation": "gelu"}, "activation"),
    ({"norm": "group"}, "norm"),
    ({"norm_position": "middle"}, "norm_position"),
    ({"dropout": 1.0}, "dropout"),
    ({"input_dropout": -0.1}, "input_dropout"),
    ({"dropout_kind": "spatial"}, "dropout_kind"),
    ({"init": "orthogonal"}, "init"),
    ({"init": "uniform:-1"}, "init"),
    ({"sizes": (784,)}, "sizes"),
    ({"norm": "batch", "norm_layers": (5,)}, "norm_layers"),
    ({"bn_noise": nn.BNNoise()}, "bn_noise"),
])
def test_bad_config_names_the_argument(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    nn.MLPConfig(**kwargs)


def _uniform_in(bound, leaf):
  """Within (-bound, bound) and spread like U(-bound, bound): std bound/sqrt(3)."""
  leaf = np.asarray(leaf)
  return np.abs(leaf).max() <= bound and abs(leaf.std() * np.sqrt(3) / bound - 1) < 0.05


@pytest.mark.parametrize("init, check", [
    ("uniform:0.05", lambda k: _uniform_in(0.05, k)),
    ("torch", lambda k: _uniform_in(1 / np.sqrt(784), k)),
    ("lecun_normal", lambda k: abs(float(k.std()) * np.sqrt(784) - 1.0) < 0.1),
    ("he_uniform", lambda k: abs(float(k.std()) * np.sqrt(784 / 2) - 1.0) < 0.05),
])
def test_initialisers(init, check):
  params, _ = nn.mlp_init(KEY, nn.MLPConfig(init=init))
  assert check(params["dense_0"]["kernel"])


def test_torch_init_draws_biases_like_nn_linear():
  params, _ = nn.mlp_init(KEY, nn.MLPConfig(sizes=(784, 3000, 2000), init="torch"))
  assert _uniform_in(1 / np.sqrt(784), params["dense_0"]["bias"])
  assert _uniform_in(1 / np.sqrt(3000), params["dense_1"]["bias"])
  zero_bias, _ = nn.mlp_init(KEY, nn.MLPConfig(sizes=(784, 3000, 10)))
  assert not np.any(zero_bias["dense_0"]["bias"])  # Other initialisers start biases at 0.


def test_max_norm_projects_each_units_incoming_weights():
  params, _ = nn.mlp_init(KEY, nn.MLPConfig(init="normal:1.0"))
  projected = nn.max_norm(params, 2.0)
  for name in ("dense_0", "dense_3"):
    norms = jnp.linalg.norm(projected[name]["kernel"], axis=0)
    before = jnp.linalg.norm(params[name]["kernel"], axis=0)
    np.testing.assert_allclose(norms, jnp.minimum(before, 2.0), rtol=1e-5)
    np.testing.assert_array_equal(projected[name]["bias"], params[name]["bias"])


def test_penalties_sum_over_kernels_only():
  cfg = nn.MLPConfig(sizes=(3, 2, 1), norm="layer")
  params, _ = nn.mlp_init(KEY, cfg)
  kernels = [params["dense_0"]["kernel"], params["dense_1"]["kernel"]]
  np.testing.assert_allclose(nn.l2_penalty(params), sum(float((k ** 2).sum()) for k in kernels),
                             rtol=1e-6)
  np.testing.assert_allclose(nn.l1_penalty(params), sum(float(jnp.abs(k).sum()) for k in kernels),
                             rtol=1e-6)


@pytest.mark.parametrize("norm_position", nn.NORM_POSITIONS)
def test_intermediates_are_the_layers_of_the_forward_pass(norm_position):
  cfg = nn.MLPConfig(sizes=(6, 5, 4, 3), activation="sigmoid", norm="batch",
                     norm_position=norm_position)
  params, state = nn.mlp_init(jax.random.PRNGKey(0), cfg)
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 6))
  for train in (True, False):
    got = nn.mlp_intermediates(cfg, params, state, x, train=train)
    logits, _ = nn.mlp_apply(cfg, params, state, x, train=train)
    np.testing.assert_allclose(got["output_2"], logits, rtol=1e-6)
    # By hand: the last hidden layer's activation input from the layer before it.
    p, s = jax.tree.map(np.asarray, (params, state))
    h = np.asarray(got["output_0"]) @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
    if norm_position == "pre":
      mean, var = (h.mean(0), h.var(0)) if train else (s["norm_1"]["mean"], s["norm_1"]["var"])
      h = (h - mean) / np.sqrt(var + cfg.bn_eps) * p["norm_1"]["scale"] + p["norm_1"]["bias"]
    np.testing.assert_allclose(got["activation_input_1"], h, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got["activation_input_1"], jax.nn.sigmoid(got["activation_input_1"]))
