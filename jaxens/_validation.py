"""Input checks shared by the public functions that take a data set as ``(x, y)``."""

import jax.numpy as jnp


def check_examples(pair, name):
  """Raises a ``ValueError`` naming ``name`` unless ``pair`` is ``(x, y)`` with matching,
  non-empty leading axes."""
  if not isinstance(pair, (tuple, list)) or len(pair) != 2:
    raise ValueError(f"{name}: expected a pair (x, y), got {type(pair).__name__}")
  x, y = pair
  if jnp.ndim(x) < 1 or jnp.ndim(y) < 1 or jnp.shape(x)[0] != jnp.shape(y)[0]:
    raise ValueError(
        f"{name}: expected x and y with the same leading number of examples, got shapes "
        f"{jnp.shape(x)} and {jnp.shape(y)}")
  if jnp.shape(x)[0] < 1:
    raise ValueError(f"{name}: expected at least one example")
