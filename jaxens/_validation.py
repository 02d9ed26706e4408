"""Input checks shared by the public functions."""

import numbers

import jax
import numpy as np


def concrete(value):
  """``value`` as a NumPy array, or ``None`` when it cannot be inspected now (a schedule, or a
  traced per-member value)."""
  if callable(value) or isinstance(value, jax.core.Tracer):
    return None
  return np.asarray(value)


def check_nonnegative(name, value):
  """Raises ``ValueError`` unless every entry of a concrete ``value`` is >= 0."""
  array = concrete(value)
  if array is not None and not np.all(array >= 0):
    raise ValueError(f"{name}: expected a value >= 0 (a float or one per member), got {value!r}")


def check_int(name, value, minimum=None, maximum=None):
  """Raises a ``ValueError`` naming ``name`` unless ``value`` is an integer (not a bool) in
  ``[minimum, maximum]``; a bound that is None is open."""
  is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  if (is_int and (minimum is None or value >= minimum)
      and (maximum is None or value <= maximum)):
    return
  if minimum is not None and maximum is not None:
    expected = f"an integer in [{minimum}, {maximum}]"
  elif minimum is not None:
    expected = f"an integer >= {minimum}"
  elif maximum is not None:
    expected = f"an integer <= {maximum}"
  else:
    expected = "an integer"
  raise ValueError(f"{name}: expected {expected}, got {value!r}")


def check_examples(pair, name, allow_empty=False):
  """Raises a ``ValueError`` naming ``name`` unless ``pair`` is ``(x, y)`` with matching
  leading axes, non-empty unless ``allow_empty``."""
  if not isinstance(pair, (tuple, list)) or len(pair) != 2:
    raise ValueError(f"{name}: expected a pair (x, y), got {type(pair).__name__}")
  x, y = pair
  if np.ndim(x) < 1 or np.ndim(y) < 1 or np.shape(x)[0] != np.shape(y)[0]:
    raise ValueError(
        f"{name}: expected x and y with the same leading number of examples, got shapes "
        f"{np.shape(x)} and {np.shape(y)}")
  if np.shape(x)[0] < 1 and not allow_empty:
    raise ValueError(f"{name}: expected at least one example")
