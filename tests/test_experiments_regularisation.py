"""experiments.regularisation_mnist and experiments.regularisers_mnist: what each regime and
regulariser does to the network, and end-to-end runs on tiny data."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from experiments import regularisation_mnist
from experiments import regularisers_mnist
from jaxens import data as data_lib
from jaxens import ensemble
from jaxens import nn


def _digits(n_train=256, n_val=128, features=784):
  rng = np.random.default_rng(0)
  x = rng.random((n_train + n_val, features), dtype=np.float32)
  y = x[:, :10].argmax(axis=1).astype(np.int32)
  return data_lib.Splits(data_lib.Examples(x[:n_train], y[:n_train]),
                         data_lib.Examples(x[n_train:], y[n_train:]),
                         data_lib.Examples(x[n_train:], y[n_train:]))


def _column_norms(params):
  return jnp.stack([jnp.max(jnp.linalg.norm(layer["kernel"], axis=0))
                    for name, layer in params.items() if name.startswith("dense")])


def test_the_dropout_regime_holds_max_norm_after_every_step():
  # A small radius, so that the constraint binds within a few steps of SGD at 0.1.
  config = regularisation_mnist.Config(hidden=(64, 32, 32), n_seeds=2, epochs=2, max_norm=0.7)
  train_config = dataclasses.replace(
      config.train_config("dropout"), batch_size=32,
      probe=lambda params, state, batch, step: _column_norms(params), probe_every=1)
  result = ensemble.train(train_config, _digits(), progress=False)
  # Probe at step s sees the parameters after s updates (16 steps: after 0 ... 15 updates).
  after_updates = np.concatenate([np.asarray(result.probes)[:, 1:].reshape(2, -1),
                                  np.asarray(jax.vmap(_column_norms)(result.params))], axis=1)
  assert after_updates.max() <= 0.7 * (1 + 1e-6)
  assert after_updates.max() >= 0.7 * (1 - 1e-3), "the radius never bound: the test is void"


def test_dropout_is_random_in_training_and_deterministic_in_evaluation():
  model = regularisation_mnist.Config(hidden=(64, 32, 32)).train_config("dropout").model
  params, state = nn.mlp_init(jax.random.PRNGKey(0), model)
  assert max(float(jnp.max(jnp.abs(p["kernel"]))) for p in params.values()) <= 0.05
  x = _digits().train.x[:16]
  apply = lambda key, train: nn.mlp_apply(model, params, state, x, train=train, rng=key)[0]
  keys = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  assert float(jnp.max(jnp.abs(apply(keys[0], True) - apply(keys[1], True)))) > 1e-3
  np.testing.assert_array_equal(apply(keys[0], False), apply(keys[1], False))


def test_the_batchnorm_regime_normalises_all_but_the_first_hidden_layer_and_the_logits():
  model = regularisation_mnist.Config().train_config("batchnorm").model
  params, state = nn.mlp_init(jax.random.PRNGKey(0), model)
  assert sorted(state) == ["norm_1", "norm_2", "norm_3"]
  assert model.sizes == (784, 2048, 1024, 1024, 10) and model.norm_position == "pre"


def test_batchnorm_before_and_after_the_activation_differ():
  config = regularisers_mnist.Config()
  pre, post = (config.train_config(name).model for name in ("batchnorm_pre", "batchnorm_post"))
  params, state = nn.mlp_init(jax.random.PRNGKey(0), pre)
  x = _digits().train.x[:64]
  outputs = [nn.mlp_apply(model, params, state, x, train=True)[0] for model in (pre, post)]
  assert float(jnp.max(jnp.abs(outputs[0] - outputs[1]))) > 1e-2
  # Pre: the activation's input is normalised (mean 0 over the batch); post: its output is.
  for model, name in ((pre, "activation_input_0"), (post, "output_0")):
    inter = nn.mlp_intermediates(model, params, state, x, train=True)
    np.testing.assert_allclose(np.asarray(inter[name]).mean(axis=0), 0.0, atol=1e-5)


def test_patterns_read_a_u_shaped_curve_and_a_flat_one():
  u_shaped = {"val_loss": np.array([[3.0, 2.0, 1.0, 1.5, 2.0, 2.5]]),
              "train_accuracy": np.array([[0.9] * 6]), "val_accuracy": np.array([[0.8] * 6])}
  got = regularisation_mnist.patterns(u_shaped)
  assert got["lowest_val_loss_epoch"] == 3 and got["lowest_val_loss"] == 1.0
  np.testing.assert_allclose(got["val_loss_rise_after_lowest"], 1.5)
  np.testing.assert_allclose(got["val_loss_trend_last_third_per_10_epochs"], 5.0)  # 0.5 an epoch
  np.testing.assert_allclose(got["final_train_minus_val_accuracy"], 0.1)
  # A loss that rose once and then levels off: a rise after the lowest epoch, but no trend.
  levelled = regularisation_mnist.patterns(
      dict(u_shaped, val_loss=np.array([[3.0, 2.0, 1.0, 1.2, 1.1, 1.1]])))
  np.testing.assert_allclose(levelled["val_loss_rise_after_lowest"], 0.1)
  np.testing.assert_allclose(levelled["val_loss_trend_last_third_per_10_epochs"], 0.0,
                             atol=1e-12)


def test_regularisation_mnist_tiny(digits_npz, tmp_path):
  config = regularisation_mnist.Config(
      data_source="npz", data_dir=str(digits_npz(512, 128)), hidden=(32, 16, 16), n_seeds=2,
      epochs=2, batch_size=64)
  summary = regularisation_mnist.run(config, str(tmp_path))
  regularisation_mnist.print_summary(summary)
  assert summary["n_train"] == 512 and summary["n_val"] == 128  # the test set validates
  for regime in regularisation_mnist.REGIMES:
    history = summary["history"][regime]
    assert history["val_loss"].shape == (2, 2)
    # Two seeds are two different members.
    assert np.abs(history["train_loss"][0] - history["train_loss"][1]).max() > 0
  assert [row[0] for row in summary["table"]] == list(regularisation_mnist.REGIMES)
  metrics = pd.read_csv(tmp_path / "metrics.csv")
  assert len(metrics) == 3 * 2 * 2
  for name in ("loss_curves.png", "accuracy_curves.png"):
    assert os.path.getsize(tmp_path / name) > 0


def test_regularisers_mnist_tiny(digits_npz, tmp_path):
  config = regularisers_mnist.Config(
      data_source="npz", data_dir=str(digits_npz(640, 128)), regularisers=("none", "l1"),
      n_seeds=2, epochs=2, batch_size=64, l1_weights=(0.0, 1e-3), n_gap=128)
  summary = regularisers_mnist.run(config, str(tmp_path))
  regularisers_mnist.print_summary(summary)
  results = summary["results"]
  assert list(results) == ["none", "l1=0", "l1=0.001"]
  assert results["l1=0"]["members_in_ensemble"] == 4
  # Member s * 2 + w of the sweep is weight w of seed s; none's member s is seed s. The
  # unpenalised setting of the sweep is member 0 and 2, so its seed 0 is none's seed 0.
  np.testing.assert_allclose(results["l1=0"]["test_accuracy"][0],
                             results["none"]["test_accuracy"][0], atol=1e-6)
  assert results["l1=0.001"]["test_nll"].shape == (2,)
  assert np.any(results["l1=0.001"]["test_nll"] != results["l1=0"]["test_nll"])
  assert summary["table"][0][5].startswith("+0.0000 (inside")
  assert len(pd.read_csv(tmp_path / "metrics.csv")) == 3 * 2 * 2
  assert os.path.getsize(tmp_path / "val_loss.png") > 0


@pytest.mark.parametrize("make, message", [
    (lambda: regularisation_mnist.Config(regimes=("none", "weight_decay")), "regimes"),
    (lambda: regularisation_mnist.Config(n_seeds=0), "n_seeds"),
    (lambda: regularisers_mnist.Config(regularisers=("l3",)), "regularisers"),
    (lambda: regularisers_mnist.Config(l2_weights=(-1.0,)), "l2_weights"),
])
def test_bad_configs_are_refused(make, message):
  with pytest.raises(ValueError, match=message):
    make()
