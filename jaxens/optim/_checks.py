"""Eager validation of hyperparameters when an optimizer is built.

Only concrete values are checked: a schedule (a callable) or a traced value (a
per-member hyperparameter inside ``jax.vmap``, or one injected by
``optax.inject_hyperparams`` under ``jit``) cannot be inspected at build time and
passes through unchecked.
"""

import jax
import numpy as np


def _concrete(value):
  """``value`` as a NumPy array, or ``None`` when it cannot be inspected now."""
  if callable(value) or isinstance(value, jax.core.Tracer):
    return None
  return np.asarray(value)


def check_nonnegative(name, value):
  """Raises ``ValueError`` unless every entry of a concrete ``value`` is >= 0."""
  array = _concrete(value)
  if array is not None and not np.all(array >= 0):
    raise ValueError(f"{name}: expected a value >= 0 (a float or one per member), got {value!r}")


def check_decay(name, value):
  """Raises ``ValueError`` unless every entry of a concrete ``value`` is in [0, 1)."""
  array = _concrete(value)
  if array is not None and not np.all((array >= 0) & (array < 1)):
    raise ValueError(
        f"{name}: expected a value in [0, 1) (a float or one per member), got {value!r}")


def check_choice(name, value, choices):
  """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
  if value not in choices:
    raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
