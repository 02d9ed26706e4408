"""Test-wide JAX settings and shared fixtures.

Implicit rank promotion is an error, so silent broadcasts fail loudly.
"""

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def digits_npz(tmp_path):
  """``write(n_train, n_test)``: a tiny MNIST-layout ``.npz`` of random images whose labels
  are learnable from the pixels, so that an experiment runs offline; returns its path."""
  def write(n_train, n_test):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_train + n_test, 28, 28), dtype=np.uint8)
    labels = images[:, 14, :10].argmax(axis=1).astype(np.uint8)
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=images[:n_train], y_train=labels[:n_train],
             x_test=images[n_train:], y_test=labels[n_train:])
    return path
  return write
