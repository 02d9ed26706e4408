"""One table of the exact optax, torch.optim and Keras 3 equivalents of each optimizer.

Each :class:`Equivalent` row says: this jaxens alias, with these settings, computes the
same updates as this library call, with its keywords renamed so. The tests run every row
against its library (``tests/test_optim.py`` for optax, ``tests/test_optim_reference.py``
for torch and Keras) and check that no row goes untested; :func:`equivalent` builds the
library's optimizer from a row (the references of the tests and of
``benchmarks/optim_step.py``), and :func:`equivalents_table` renders the rows for the
docs. A setting absent from the table has no exact equivalent in that library; the
reference tests measure how far the nearest one is.
"""

import functools
import importlib
import inspect
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import optax

from jaxens.optim import _alias
from jaxens.optim import _checks


class Equivalent(NamedTuple):
  """One exact mapping of a jaxens optimizer onto a library's.

  Attributes:
    optimizer: name of the ``jaxens.optim`` alias, e.g. ``"rmsprop"``.
    settings: the alias's keyword values the mapping needs, e.g.
      ``{"eps_in_sqrt": False}``; ``{}`` when it holds for all.
    library: ``"optax"``, ``"torch"`` or ``"keras"``.
    target: dotted path of the library's constructor, e.g. ``"torch.optim.RMSprop"``.
    rename: jaxens keyword -> library keyword. Keywords that share a library keyword
      are passed together as a tuple, in this order (torch's ``betas=(b1, b2)``).
    fixed: library keywords always passed, e.g. ``{"nesterov": True}``.
    note: one short line for the docs table.
  """

  optimizer: str
  settings: dict
  library: str
  target: str
  rename: dict
  fixed: dict
  note: str = ""


def optax_lr_in_buffer_momentum(learning_rate, momentum, nesterov=False):
  """Keras' momentum coupling from optax parts: the rate is applied before the buffer.

  ``optax.sgd`` multiplies the whole buffer by the current rate; here a rate change only
  affects the gradients that follow, as in :func:`jaxens.optim.momentum` and
  :func:`jaxens.optim.nesterov` with ``lr_in_buffer=True``.

  Args:
    learning_rate: float or schedule.
    momentum: momentum coefficient in [0, 1).
    nesterov: Nesterov's form of the buffer's output.

  Returns:
    An :class:`optax.GradientTransformation`.
  """
  return optax.chain(optax.scale_by_learning_rate(learning_rate),
                     optax.trace(momentum, nesterov=nesterov))


def optax_keras_adam(learning_rate, b1, b2, eps):
  r"""Keras' Adam from ``optax.adam``: the epsilon schedule :math:`\hat\epsilon/\sqrt{1-\beta_2^t}`.

  Keras adds its ``epsilon`` (the paper's :math:`\hat\epsilon`) after the bias
  corrections are folded into the step size, which is ``optax.adam`` with a growing
  :math:`\epsilon_t`, injected per step by ``optax.inject_hyperparams``.

  Args:
    learning_rate: float or schedule.
    b1: decay of the first moment.
    b2: decay of the second moment.
    eps: Keras' ``epsilon``.

  Returns:
    An :class:`optax.GradientTransformation`.
  """
  eps_t = lambda count: eps / jnp.sqrt(1 - b2 ** (count + 1))  # count is 0 at t = 1
  return optax.inject_hyperparams(optax.adam)(learning_rate, b1, b2, eps=eps_t)


_SGD = {"learning_rate": "learning_rate", "mu": "momentum"}  # optax and Keras
_TORCH_SGD = {"learning_rate": "lr", "mu": "momentum"}
_OPTAX_RMSPROP = {"learning_rate": "learning_rate", "rho": "decay", "eps": "eps"}
_ADAM = {"learning_rate": "learning_rate", "b1": "b1", "b2": "b2", "eps": "eps"}
_OPTAX_ADAGRAD = {"learning_rate": "learning_rate",
                  "initial_accumulator": "initial_accumulator_value", "eps": "eps"}
_TORCH_ADAGRAD = {"learning_rate": "lr",
                  "initial_accumulator": "initial_accumulator_value", "eps": "eps"}
_EPS0 = "eps=0: inside and outside the root agree"

#: Every exact mapping that the tests prove; :func:`equivalent` takes the first that fits.
EQUIVALENTS = (
    Equivalent("momentum", {"lr_in_buffer": False}, "optax", "optax.sgd", _SGD, {}),
    Equivalent("nesterov", {"lr_in_buffer": False}, "optax", "optax.sgd", _SGD,
               {"nesterov": True}),
    Equivalent("momentum", {"lr_in_buffer": True}, "optax",
               "jaxens.optim.optax_lr_in_buffer_momentum", _SGD, {},
               "scale_by_learning_rate, then trace"),
    Equivalent("nesterov", {"lr_in_buffer": True}, "optax",
               "jaxens.optim.optax_lr_in_buffer_momentum", _SGD, {"nesterov": True},
               "scale_by_learning_rate, then trace(nesterov=True)"),
    Equivalent("rmsprop", {"eps_in_sqrt": False}, "optax", "optax.rmsprop",
               _OPTAX_RMSPROP, {"eps_in_sqrt": False}),
    Equivalent("rmsprop", {"eps_in_sqrt": True}, "optax", "optax.rmsprop",
               _OPTAX_RMSPROP, {"eps_in_sqrt": True}),
    Equivalent("adam", {"eps_mode": "paper"}, "optax", "optax.adam", _ADAM, {}),
    Equivalent("adam", {"eps_mode": "keras"}, "optax", "jaxens.optim.optax_keras_adam",
               _ADAM, {}, "optax.adam with eps_t = eps / sqrt(1 - b2^t)"),
    Equivalent("adagrad", {"eps_in_sqrt": True}, "optax", "optax.adagrad", _OPTAX_ADAGRAD, {}),
    Equivalent("adagrad", {"eps": 0.0}, "optax", "optax.adagrad", _OPTAX_ADAGRAD, {}, _EPS0),
    Equivalent("adadelta", {}, "optax", "optax.adadelta",
               {"learning_rate": "learning_rate", "rho": "rho", "eps": "eps"}, {},
               "optax's default learning_rate=None ascends"),
    Equivalent("momentum", {"lr_in_buffer": False}, "torch", "torch.optim.SGD", _TORCH_SGD, {},
               "a LambdaLR schedule rescales the whole buffer"),
    Equivalent("nesterov", {"lr_in_buffer": False}, "torch", "torch.optim.SGD", _TORCH_SGD,
               {"nesterov": True}),
    Equivalent("rmsprop", {"eps_in_sqrt": False}, "torch", "torch.optim.RMSprop",
               {"learning_rate": "lr", "rho": "alpha", "eps": "eps"}, {}),
    Equivalent("adam", {"eps_mode": "paper"}, "torch", "torch.optim.Adam",
               {"learning_rate": "lr", "b1": "betas", "b2": "betas", "eps": "eps"}, {}),
    Equivalent("adagrad", {"eps_in_sqrt": False}, "torch", "torch.optim.Adagrad",
               _TORCH_ADAGRAD, {}),
    Equivalent("adagrad", {"eps": 0.0}, "torch", "torch.optim.Adagrad", _TORCH_ADAGRAD, {},
               _EPS0),
    Equivalent("adadelta", {}, "torch", "torch.optim.Adadelta",
               {"learning_rate": "lr", "rho": "rho", "eps": "eps"}, {}),
    Equivalent("momentum", {"lr_in_buffer": True}, "keras", "keras.optimizers.SGD",
               _SGD, {}, "a schedule scales only the new gradient"),
    Equivalent("nesterov", {"lr_in_buffer": True}, "keras", "keras.optimizers.SGD",
               _SGD, {"nesterov": True}),
    Equivalent("rmsprop", {"eps_in_sqrt": True}, "keras", "keras.optimizers.RMSprop",
               {"learning_rate": "learning_rate", "rho": "rho", "eps": "epsilon"}, {}),
    Equivalent("adam", {"eps_mode": "keras"}, "keras", "keras.optimizers.Adam",
               {"learning_rate": "learning_rate", "b1": "beta_1", "b2": "beta_2",
                "eps": "epsilon"}, {}, "Keras' epsilon is the paper's eps-hat"),
    Equivalent("adagrad", {"eps_in_sqrt": True}, "keras", "keras.optimizers.Adagrad",
               {"learning_rate": "learning_rate",
                "initial_accumulator": "initial_accumulator_value", "eps": "epsilon"}, {}),
    Equivalent("adadelta", {}, "keras", "keras.optimizers.Adadelta",
               {"learning_rate": "learning_rate", "rho": "rho", "eps": "epsilon"}, {}),
)
_OPTIMIZERS = tuple(dict.fromkeys(row.optimizer for row in EQUIVALENTS))
_LIBRARIES = tuple(dict.fromkeys(row.library for row in EQUIVALENTS))


def _agrees(value, required):
  """Whether ``value`` is concretely ``required`` (a schedule or traced value is not)."""
  array = _checks._concrete(value)  # pylint: disable=protected-access
  return array is not None and bool(np.all(array == required))


def _select(optimizer, library, kwargs):
  """``(row, arguments)``: the first matching row and the alias's arguments, defaults filled."""
  _checks.check_choice("optimizer", optimizer, _OPTIMIZERS)
  _checks.check_choice("library", library, _LIBRARIES)
  bound = inspect.signature(getattr(_alias, optimizer)).bind(**kwargs)
  bound.apply_defaults()
  arguments = bound.arguments
  rows = [row for row in EQUIVALENTS if (row.optimizer, row.library) == (optimizer, library)]
  for row in rows:
    if all(_agrees(arguments[name], value) for name, value in row.settings.items()):
      return row, arguments
  given = {name: arguments[name] for row in rows for name in row.settings}
  needed = " or ".join(f"{optimizer}({_keywords(row.settings)})" for row in rows)
  raise ValueError(f"no exact {library} equivalent of {optimizer}({_keywords(given)}); "
                   f"{library} has one for {needed}")


def _keywords(mapping):
  return ", ".join(f"{name}={value!r}" for name, value in mapping.items())


def _library_keywords(row):
  """Library keyword -> the jaxens keywords passed to it, in order."""
  grouped = {}
  for ours, theirs in row.rename.items():
    grouped.setdefault(theirs, []).append(ours)
  return grouped


def equivalent_row(optimizer, library, **kwargs):
  """The row of :data:`EQUIVALENTS` that :func:`equivalent` uses for these arguments.

  Args:
    optimizer: name of a ``jaxens.optim`` alias, e.g. ``"adam"``.
    library: ``"optax"``, ``"torch"`` or ``"keras"``.
    **kwargs: the alias's keyword arguments; omitted ones take the alias's defaults.

  Returns:
    The first :class:`Equivalent` of ``optimizer`` in ``library`` whose ``settings``
    agree with ``kwargs``.

  Raises:
    ValueError: as :func:`equivalent`.

  Example:
    >>> equivalent_row("adagrad", "optax", learning_rate=0.1, eps=0.0).note
    'eps=0: inside and outside the root agree'
  """
  return _select(optimizer, library, kwargs)[0]


def equivalent(optimizer, library, **kwargs):
  """The library's optimizer that computes the same updates as a jaxens alias.

  The library is imported only now: torch and Keras are optional.

  Args:
    optimizer: name of a ``jaxens.optim`` alias, e.g. ``"adam"``.
    library: ``"optax"``, ``"torch"`` or ``"keras"``.
    **kwargs: the alias's keyword arguments; omitted ones take the alias's defaults.
      Values are passed on unchanged, so a library's own schedule object may stand in
      for ``learning_rate``.

  Returns:
    ``functools.partial`` of the library's constructor with its keywords filled in.
    Call it with nothing for optax and Keras, and with the parameters for torch:
    ``equivalent("adam", "torch", learning_rate=1e-3)(model.parameters())``.

  Raises:
    ValueError: unknown ``optimizer`` or ``library``, or no exact mapping for these
      settings (the message says which settings the library's mappings need).

  Example:
    >>> make = equivalent("rmsprop", "optax", learning_rate=0.01, rho=0.9)
    >>> make.func.__name__, make.keywords
    ('rmsprop', {'learning_rate': 0.01, 'decay': 0.9, 'eps': 1e-08, 'eps_in_sqrt': False})
    >>> opt = make()
    >>> equivalent("adam", "torch", learning_rate=1e-3, eps_mode="keras")
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ValueError: no exact torch equivalent of adam(eps_mode='keras');
    torch has one for adam(eps_mode='paper')
  """
  row, arguments = _select(optimizer, library, kwargs)
  library_kwargs = {}
  for theirs, ours in _library_keywords(row).items():
    values = tuple(arguments[name] for name in ours)
    library_kwargs[theirs] = values if len(values) > 1 else values[0]
  module, _, attribute = row.target.rpartition(".")
  constructor = getattr(importlib.import_module(module), attribute)
  return functools.partial(constructor, **library_kwargs, **row.fixed)


def equivalents_table():
  """:data:`EQUIVALENTS` as a GitHub markdown table, one line per mapping.

  In the equivalent call, the jaxens keyword names stand for their values.

  Example:
    >>> table = equivalents_table().splitlines()
    >>> print("\\n".join(table[:2]))
    | jaxens | library | equivalent | note |
    |---|---|---|---|
    >>> print(next(line for line in table if "torch.optim.Adam(" in line))
    ... # doctest: +NORMALIZE_WHITESPACE
    | `adam(..., eps_mode='paper')` | torch |
    `torch.optim.Adam(lr=learning_rate, betas=(b1, b2), eps=eps)` |  |
  """
  lines = ["| jaxens | library | equivalent | note |", "|---|---|---|---|"]
  for row in EQUIVALENTS:
    settings = ", ".join(["...", _keywords(row.settings)]) if row.settings else "..."
    keywords = {name: ours[0] if len(ours) == 1 else f"({', '.join(ours)})"
                for name, ours in _library_keywords(row).items()}
    keywords.update({name: repr(value) for name, value in row.fixed.items()})
    call = ", ".join(f"{name}={value}" for name, value in keywords.items())
    lines.append(f"| `{row.optimizer}({settings})` | {row.library} | `{row.target}({call})` "
                 f"| {row.note} |")
  return "\n".join(lines)
