"""``jax.random.permutation(key, n)``, bit for bit, at a fraction of its cost on XLA:CPU.

JAX shuffles ``arange(n)`` by stable-sorting it on fresh random 32-bit keys,
``ceil(3 ln n / ln(2^32 - 1))`` times (two rounds for MNIST's 45,000 training examples). A
stable key-value sort is the costly part: XLA:CPU calls a compiled comparator for every
comparison. For ``n <= 2^16`` each stable argsort here is instead two least-significant-digit
radix passes over the 16-bit halves of the keys, each one sort of a single ``uint32`` array
``digit << 16 | position``. Its values are distinct, so the order is the stable one, and a
single-operand integer sort is ~5x cheaper than a key-value sort of the same length. Larger
``n`` falls back to ``jax.random.permutation``.
"""

import jax
import jax.numpy as jnp
import numpy as np

_RADIX_BITS = 16
_MAX_RADIX_N = 2**_RADIX_BITS


def permutation(key, n):
  """A permutation of ``arange(n)`` (int32) equal to ``jax.random.permutation(key, n)``."""
  if n > _MAX_RADIX_N:
    return jax.random.permutation(key, n)
  # The round count and key stream of jax.random.permutation.
  rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
  order = jnp.arange(n, dtype=jnp.int32)
  for _ in range(rounds):
    key, subkey = jax.random.split(key)
    order = order[_stable_argsort(jax.random.bits(subkey, (n,), jnp.uint32))]
  return order


def _stable_argsort(keys):
  """``argsort(keys, stable=True)`` of ``n <= 2^16`` uint32 keys, as two 16-bit radix passes."""
  position = jnp.arange(keys.shape[0], dtype=jnp.uint32)
  low_mask = jnp.uint32(_MAX_RADIX_N - 1)

  def pass_by(digits):  # Stable argsort by 16-bit digits: positions break the ties.
    return (jnp.sort((digits << _RADIX_BITS) | position) & low_mask).astype(jnp.int32)

  by_low = pass_by(keys & low_mask)
  by_high = pass_by(keys[by_low] >> _RADIX_BITS)
  return by_low[by_high]
