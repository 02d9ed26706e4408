import jax
import numpy as np
import pytest

from jaxens import _permutation

_jitted_permutation = jax.jit(_permutation.permutation, static_argnums=1)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 45_000, 2**16, 2**16 + 1])
def test_equals_jax_random_permutation(n):
  # 45,000 (two rounds) is MNIST's training split; 2^16 + 1 takes the fallback.
  for seed in range(3):
    key = jax.random.PRNGKey(seed)
    np.testing.assert_array_equal(_jitted_permutation(key, n), jax.random.permutation(key, n))


def test_stable_argsort_keeps_the_order_of_equal_keys():
  # Few distinct keys, so most are tied, in both 16-bit halves.
  keys = np.random.default_rng(0).choice(
      np.array([0, 1, 2**16, 2**16 + 1, 2**32 - 1], np.uint32), size=5000)
  np.testing.assert_array_equal(_permutation._stable_argsort(keys),
                                np.argsort(keys, kind="stable"))


def test_vmapped_over_keys():
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  got = jax.vmap(lambda k: _permutation.permutation(k, 3000))(keys)
  for key, row in zip(keys, got):
    np.testing.assert_array_equal(row, jax.random.permutation(key, 3000))
