"""The model protocol: a network as two pure functions, and adapters that produce them.

A :class:`Model` is what ``jaxens.ensemble`` trains, ``vmap``ped over members::

  params, state = model.init(key, x_example)
  out, new_state = model.apply(params, state, x, train=True, rng=key)

``params`` are what the optimizer moves; ``state`` is everything else the network carries
(batch-norm statistics, say). Both are plain pytrees, so an ensemble is the same tree with a
leading member axis. The trainer never asks which adapter built a model.

Three adapters:
- :func:`mlp`: the built-in pure-function MLP of ``jaxens.nn``;
- :func:`from_linen`: a ``flax.linen.Module`` whose ``__call__`` takes ``(x, train)``;
- :func:`from_nnx`: a ``flax.nnx.Module`` built by ``make(rngs)``, split into a static graph
  definition and pure state as ``nnx.split`` does, and merged back inside ``apply``.

Example::

  class CNN(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x, train):
      ...

  cfg = ensemble.TrainConfig(model=models.from_linen(CNN()), n_members=10)
"""

import contextlib
import functools
import re
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxens import _conv
from jaxens import nn


class Model(NamedTuple):
  """A network as two pure functions.

  Attributes:
    init: ``init(key, x) -> (params, state)``; ``x`` is an example batch.
    apply: ``apply(params, state, x, *, train, rng, **hyperparams) -> (out, new_state)``;
      ``rng`` is None in evaluation mode; in training mode the trainer always passes a key,
      which a deterministic network ignores. ``new_state`` is ``state`` in evaluation mode.
    hyperparams: names of keyword arguments of ``apply`` that may vary per ensemble member
      (``TrainConfig.overrides``); each arrives as a traced scalar.
    description: a stable text that identifies the network across processes (checkpoint
      fingerprints use it).
    population_state: optional ``(params, state, xs, batch_size) -> state``, the state
      (batch-norm statistics) re-estimated for ``params`` over the examples ``xs``;
      :func:`population_state` falls back to a generic estimate when it is None.
  """
  init: Callable[..., Any]
  apply: Callable[..., Any]
  hyperparams: tuple = ()
  description: Optional[str] = None
  population_state: Optional[Callable[..., Any]] = None


@functools.lru_cache(maxsize=64)
def mlp(cfg: nn.MLPConfig) -> Model:
  """The built-in MLP (``nn.mlp_init``/``nn.mlp_apply``); ``x`` is ``(N, cfg.sizes[0])``.

  Its ``dropout`` rate (every hidden layer's) may vary per member. Cached, so one config gives
  one ``Model`` and one compiled program.
  """
  if not isinstance(cfg, nn.MLPConfig):
    raise ValueError(f"cfg: expected an nn.MLPConfig, got {type(cfg).__name__}")

  def init(key, x):
    del x  # The config fixes every shape.
    return nn.mlp_init(key, cfg)

  def apply(params, state, x, *, train, rng=None, dropout=None):
    return nn.mlp_apply(cfg, params, state, x, train=train, rng=rng, dropout=dropout)

  def population_state(params, state, xs, batch_size):
    return nn.population_statistics(cfg, params, state, xs, batch_size)

  return Model(init, apply, hyperparams=("dropout",), description=repr(cfg),
               population_state=population_state)


CONVS = ("auto", "patches", "native")


def from_linen(module, conv="auto") -> Model:
  """Adapts a ``flax.linen.Module`` whose ``__call__`` takes ``(x, train: bool)``.

  ``params`` is the ``"params"`` collection; every other collection (``"batch_stats"``, say)
  is the state, mutable in training mode only. A ``"dropout"`` rng is passed whenever ``rng``
  is given.

  Args:
    module: the network.
    conv: how its ``linen.Conv`` layers compute. ``"patches"``: patches and one matmul
      (``jaxens._conv.patch_conv``), which ``vmap`` over members turns into a batched matmul;
      ``"native"``: ``lax.conv_general_dilated``, which ``vmap`` turns into a grouped
      convolution, ~35x slower on XLA:CPU; ``"auto"``: patches on a CPU, native elsewhere.
  """
  import flax.linen  # Imported here so that `import jaxens` stays light.
  if not isinstance(module, flax.linen.Module):
    raise ValueError(f"module: expected a flax.linen.Module, got {type(module).__name__}")
  if conv not in CONVS:
    raise ValueError(f"conv: expected one of {CONVS}, got {conv!r}")

  def formulation():
    # Decided at trace time, so one Model serves every backend.
    patches = conv == "patches" or (conv == "auto" and jax.default_backend() == "cpu")
    return _conv.linen_patch_convs() if patches else contextlib.nullcontext()

  def init(key, x):
    params_key, dropout_key = jax.random.split(key)
    with formulation():
      variables = module.init({"params": params_key, "dropout": dropout_key}, x, train=False)
    variables = dict(variables)
    params = variables.pop("params", {})
    return params, variables

  def apply(params, state, x, *, train, rng=None):
    variables = {"params": params, **state}
    rngs = None if rng is None else {"dropout": rng}
    with formulation():
      if not train:
        return module.apply(variables, x, train=False, rngs=rngs), state
      out, updates = module.apply(variables, x, train=True, rngs=rngs, mutable=list(state))
    return out, {**state, **updates}

  return Model(init, apply, description=f"{_describe_linen(module)} conv={conv}")


def from_nnx(make: Callable[..., Any]) -> Model:
  """Adapts a ``flax.nnx.Module`` built by ``make(rngs: nnx.Rngs)``.

  ``rngs`` has a default stream (initialisation) and a ``"dropout"`` stream, which
  ``nnx.Dropout`` uses.
  The module is split as ``nnx.split(module, nnx.Param, ...)``: the graph definition is static,
  the ``nnx.Param`` variables are the params and everything else (batch statistics, rng
  counters) is the state. ``apply`` merges them back, sets training or evaluation mode
  (``module.train()``/``module.eval()``, so BatchNorm and Dropout follow ``train``) and
  reseeds the module's ``dropout`` stream from ``rng``.
  """
  from flax import nnx  # Imported here so that `import jaxens` stays light.
  if not callable(make):
    raise ValueError(f"make: expected a callable rngs -> nnx.Module, got {type(make).__name__}")
  # A "dropout" stream beside the default one, so that reseeding it moves dropout alone.
  rngs = lambda key: nnx.Rngs(key, dropout=jax.random.fold_in(key, 1))
  graphdef, _, _ = nnx.split(nnx.eval_shape(lambda: make(rngs(jax.random.PRNGKey(0)))),
                             nnx.Param, ...)

  def init(key, x):
    del x  # The module's constructor fixes every shape.
    _, params, state = nnx.split(make(rngs(key)), nnx.Param, ...)
    return params, state

  def apply(params, state, x, *, train, rng=None):
    module = nnx.merge(graphdef, params, state, copy=True)  # Leaves the inputs untouched.
    if train:
      module.train()
    else:
      module.eval()
    if rng is not None:
      nnx.reseed(module, dropout=rng)
    out = module(x)
    if not train:
      return out, state
    _, _, new_state = nnx.split(module, nnx.Param, ...)
    return out, new_state

  name = getattr(make, "__qualname__", type(make).__qualname__)
  return Model(init, apply, description=f"nnx:{getattr(make, '__module__', '')}.{name}:{graphdef}")


def _describe_linen(module):
  # A linen module is a dataclass whose repr lists its fields; memory addresses are dropped so
  # that the text is the same in every process.
  return "linen:" + re.sub(r" at 0x[0-9a-f]+", "", repr(module))


def resolve(model) -> Model:
  """``model`` as a :class:`Model`: an ``nn.MLPConfig`` goes through :func:`mlp`, and a plain
  ``(init, apply)`` pair becomes ``Model(init, apply)``."""
  if isinstance(model, nn.MLPConfig):
    return mlp(model)
  if isinstance(model, Model):
    return model
  if isinstance(model, tuple) and len(model) == 2 and all(map(callable, model)):
    return Model(*model)
  raise ValueError(f"model: expected an nn.MLPConfig or a jaxens.models.Model (see mlp, "
                   f"from_linen, from_nnx) or an (init, apply) pair, got {type(model).__name__}")


def population_state(model, params, state, xs, batch_size):
  """``state`` re-estimated for ``params`` over ``xs``, as after weight averaging (SWA).

  Uses ``model.population_state`` when the model has one (the built-in MLP: Ioffe's averages
  of batch statistics, ``nn.population_statistics``). Otherwise, for any model whose training
  mode updates its state as a moving average ``s <- m s + (1 - m) b`` (Flax's ``BatchNorm``,
  linen and nnx), the batch statistic ``b`` of every minibatch is recovered exactly by running
  training mode from state 0 (giving ``(1 - m) b``) and from state 1 (giving
  ``m + (1 - m) b``), and the result is the mean of ``b`` over the ``len(xs) // batch_size``
  minibatches, as Izmailov et al. recompute BN after averaging. Leaves that training does not
  move as a moving average (``m = 1``), and non-float leaves, keep their value.

  Args:
    model: a :class:`Model`.
    params, state: one member's.
    xs: ``(N, ...)`` training inputs.
    batch_size: examples per minibatch, at most ``N``.
  """
  if model.population_state is not None:
    return model.population_state(params, state, xs, batch_size)
  floats = [leaf for leaf in jax.tree.leaves(state)
            if jnp.issubdtype(leaf.dtype, jnp.floating)]
  if not floats:
    return state
  n_batches = xs.shape[0] // batch_size
  batches = xs[:n_batches * batch_size].reshape((n_batches, batch_size) + xs.shape[1:])
  key = jax.random.PRNGKey(0)

  def filled(value):
    return jax.tree.map(
        lambda a: jnp.full_like(a, value)
        if jnp.issubdtype(a.dtype, jnp.floating) else a, state)

  def batch_statistics(_, x):
    from_zero = model.apply(params, filled(0.0), x, train=True, rng=key)[1]
    from_one = model.apply(params, filled(1.0), x, train=True, rng=key)[1]

    def recover(zero, one):
      if not jnp.issubdtype(zero.dtype, jnp.floating):
        return zero
      kept = 1.0 - (one - zero)  # 1 - m
      return jnp.where(kept > 1e-6, zero / jnp.where(kept > 1e-6, kept, 1.0),
                             jnp.nan)
    return None, jax.tree.map(recover, from_zero, from_one)

  _, stats = jax.lax.scan(batch_statistics, None, batches)
  return jax.tree.map(
      lambda s, old: jnp.where(jnp.isnan(s[0]), old, jnp.mean(s, axis=0))
      if jnp.issubdtype(old.dtype, jnp.floating) else old, stats, state)
