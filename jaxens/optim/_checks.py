"""Eager validation of hyperparameters when an optimizer is built.

Only concrete values are checked: a schedule (a callable) or a traced value (a
per-member hyperparameter inside ``jax.vmap``, or one injected by
``optax.inject_hyperparams`` under ``jit``) cannot be inspected at build time and
passes through unchecked.
"""

import numpy as np

from jaxens._validation import check_nonnegative  # noqa: F401  (re-exported)
from jaxens._validation import concrete as _concrete


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
