"""The two compiled programs of a run, each cached per config: init and one epoch.

Every epoch is one compiled call: a ``lax.scan`` over the minibatches whose body ``vmap``s a
single-member training step over the members, then an evaluation of every member. Probes,
snapshots and weight averages are taken inside the scan, each under a ``lax.cond`` on the step
count, which is the same for every member: ``vmap`` keeps it a branch, so steps that take
nothing skip the work.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxens.ensemble import _evaluate
from jaxens.ensemble import _keys
from jaxens.ensemble import _progress
from jaxens.ensemble import _step
from jaxens.ensemble import _tasks


class Carry(NamedTuple):
  """Everything that persists between epochs; also what a checkpoint holds."""
  params: Any
  state: Any
  opt_state: Any
  best_params: Any
  best_state: Any
  best_val_loss: jax.Array
  best_epoch: jax.Array
  alive: jax.Array
  history: dict
  probes: Any = None
  snapshots: Any = None
  swa_params: Any = None
  swa_count: Any = None


def _program_key(cfg):
  """What a compiled program depends on: the config less its seed and member count.

  Returns None when an optimizer kwarg is unhashable (an array, say); such a config is
  compiled afresh on every call.
  """
  kwargs = cfg.optimizer_kwargs
  key = (dataclasses.replace(cfg, seed=0, n_members=1, optimizer_kwargs=None, overrides=None),
         None if kwargs is None else tuple(sorted(kwargs.items())))
  try:
    hash(key)
  except TypeError:
    return None
  return key


def _cached_per_config(make):
  """Memoises ``make(cfg, *args)`` on ``_program_key(cfg)``, so repeated calls skip compilation."""
  @functools.lru_cache(maxsize=32)
  def cached(key, *args):
    kwargs = None if key[1] is None else dict(key[1])
    return make(dataclasses.replace(key[0], optimizer_kwargs=kwargs), *args)

  def get(cfg, *args):
    key = _program_key(cfg)
    return make(cfg, *args) if key is None else cached(key, *args)
  return get


def compiler_options(cfg):
  """XLA:CPU options for the init and epoch programs; other backends keep their defaults.

  LLVM -O1 compiles them ~40% faster than the default -O2, to identical bits (no fast-math)
  and with equally fast epochs, since the matmuls are library calls. 512-bit vectors make the
  element-wise work (Adam, activations) ~14% faster per epoch on an AVX-512 CPU and fall back
  to the widest vectors a CPU has; they change float rounding, not the determinism of a run.
  ``TrainConfig(xla_cpu_options=False)`` keeps XLA's defaults.
  """
  if jax.default_backend() != "cpu" or not cfg.xla_cpu_options:
    return None
  return {"xla_backend_optimization_level": 1, "xla_cpu_prefer_vector_width": 512}


@_cached_per_config
def init_fn(cfg, history_keys):
  """The jitted ``(seed, members, hparams, x_example) -> (root_key, keys, carry)``.

  One program makes the root key (``PRNGKey(seed)`` for a uint32 seed), derives the member
  keys and builds the carry: as eager ops each would compile on its own.
  """
  model = cfg.network

  def init_member(key, hparams, x_example):
    params, state, opt_state = _step.init_member(cfg, model, key, x_example, hparams)
    nan_history = jnp.full((cfg.epochs,), jnp.nan, jnp.float32)
    return Carry(params, state, opt_state, best_params=params, best_state=state,
                 best_val_loss=jnp.array(jnp.inf, jnp.float32),
                 best_epoch=jnp.zeros((), jnp.int32), alive=jnp.array(True),
                 history={name: nan_history for name in history_keys})

  def init(seed, members, hparams, x_example):
    root_key = jax.random.PRNGKey(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(root_key, i))(members)
    carry = jax.vmap(init_member, in_axes=(0, 0, None))(keys, hparams, x_example)
    return root_key, keys, carry
  return jax.jit(init, compiler_options=compiler_options(cfg))


def slot_buffers(shapes, n_members, n_slots):
  """Empty probe outputs or snapshots (E, n_slots, ...) for one member's ``shapes``: NaN for
  float leaves, 0 for the others."""
  def buffer(shape):
    fill = jnp.nan if jnp.issubdtype(shape.dtype, jnp.inexact) else 0
    return jnp.full((n_members, n_slots) + shape.shape, fill, shape.dtype)
  return jax.tree.map(buffer, shapes)


def _write_slot(buffers, values, slot):
  """``buffers`` (E, K, ...) with ``values`` (E, ...) written at index ``slot`` of axis 1."""
  return jax.tree.map(lambda buffer, value: jax.lax.dynamic_update_index_in_dim(
      buffer, value.astype(buffer.dtype), slot, axis=1), buffers, values)


def _record_probe(cfg):
  """``(probes, params, state, batch, step) -> probes`` with every member's probe of this
  step written at index ``step // probe_every``."""
  def record(probes, params, state, batch, step):
    values = jax.vmap(cfg.probe, in_axes=(0, 0, 0, None))(params, state, batch, step)
    return _write_slot(probes, values, step // cfg.probe_every)
  return record


def snapshot_slots(cfg, steps_per_epoch):
  """(total updates + 1,) the snapshot index taken after each update count, -1 for none."""
  slots = np.full(cfg.epochs * steps_per_epoch + 1, -1, np.int32)
  steps = cfg.snapshot_steps(steps_per_epoch)
  slots[list(steps)] = np.arange(len(steps), dtype=np.int32)
  return slots


def _fold_into_average(average, params):
  """Every member's ``w_swa <- (n w_swa + w) / (n + 1)``; ``average`` is ``(w_swa, n)``."""
  swa_params, count = average

  def fold(a, w):
    n = count.astype(a.dtype).reshape((-1,) + (1,) * (w.ndim - 1))
    return (n * a + w) / (n + 1)
  return jax.tree.map(fold, swa_params, params), count + 1


def to_blocks(tree, n_devices, n_blocks):
  """Every leaf (E, ...) as (n_blocks, E / n_blocks, ...): block ``j`` holds the ``j``-th
  slice of every device's members, so that each block is still spread over every device."""
  def split(leaf):
    rest = leaf.shape[1:]
    per_block = leaf.shape[0] // (n_devices * n_blocks)
    return jnp.swapaxes(leaf.reshape((n_devices, n_blocks, per_block) + rest), 0, 1).reshape(
        (n_blocks, n_devices * per_block) + rest)
  return jax.tree.map(split, tree)


def from_blocks(tree, n_devices):
  """The inverse of ``to_blocks``: every leaf (n_blocks, E / n_blocks, ...) as (E, ...)."""
  def merge(leaf):
    n_blocks, rest = leaf.shape[0], leaf.shape[2:]
    return jnp.swapaxes(leaf.reshape((n_blocks, n_devices, -1) + rest), 0, 1).reshape(
        (-1,) + rest)
  return jax.tree.map(merge, tree)


@_cached_per_config
def epoch_fn(cfg, n_train, n_val, report_every, n_devices=1, n_blocks=1):
  """The jitted program that trains every member for one epoch and evaluates it.

  Every ``report_every`` steps (if not None) it sends the members' losses to the active
  progress bar. A probe sees the parameters before a step's update; a snapshot and the weight
  average take them after it. With ``n_blocks`` > 1 each device's members train in that many
  blocks, one after another (``lax.map``), each through the whole epoch, so that a block's
  parameters and optimizer state stay in the caches from one step to the next.
  """
  model, task = cfg.network, _tasks.task(cfg.loss)
  n_steps = n_train // cfg.batch_size
  slots = snapshot_slots(cfg, n_steps)

  def train_block(members, x_train, y_train, step0):
    """The epoch's steps for some members: their ``(params, state, opt_state, finite,
    probes, snapshots, average)`` after it, and their step metrics (E_block, n_steps)."""
    params, state, opt_state, alive, probes, snapshots, average, keys, hparams, orders = members

    def scan_body(inner, step_order):
      params, state, opt_state, finite, step, probes, snapshots, average = inner
      batch = (x_train[step_order], y_train[step_order])
      if cfg.probe is not None:
        # The predicate is the same for every member, so under vmap this stays a branch and
        # the steps between probes do not evaluate the probe.
        probes = jax.lax.cond(step % cfg.probe_every == 0, _record_probe(cfg), lambda p, *_: p,
                              probes, params, state, batch, step)
      (params, state, opt_state), step_metrics = jax.vmap(
          lambda *a: _step.train_step(cfg, model, task, a[:5], a[5], step))(
              params, state, opt_state, keys, hparams, batch)
      finite = finite & jnp.isfinite(step_metrics["loss"])
      count = step + 1  # Updates done.
      if cfg.snapshot_every is not None:
        slot = jnp.asarray(slots)[count]
        snapshots = jax.lax.cond(slot >= 0, _write_slot, lambda b, *_: b, snapshots,
                                 {"params": params, "state": state}, slot)
      if cfg.swa_start is not None:
        take = (count >= cfg.swa_start) & ((count - cfg.swa_start) % cfg.swa_every == 0)
        average = jax.lax.cond(take, _fold_into_average, lambda a, _: a, average, params)
      if report_every is not None:
        jax.lax.cond(step % report_every == report_every - 1,
                     lambda: jax.debug.callback(_progress.Progress.report, step_metrics["loss"]),
                     lambda: None)
      return (params, state, opt_state, finite, step + 1, probes, snapshots,
              average), step_metrics

    init = (params, state, opt_state, alive, step0, probes, snapshots, average)
    (params, state, opt_state, finite, _, probes, snapshots, average), step_metrics = (
        jax.lax.scan(scan_body, init, jnp.swapaxes(orders, 0, 1)))
    step_metrics = {k: jnp.swapaxes(v, 0, 1) for k, v in step_metrics.items()}
    return (params, state, opt_state, finite, probes, snapshots, average), step_metrics

  def train_epoch(carry, keys, hparams, root_key, epoch, x_train, y_train, x_val, y_val):
    # Divergence is handled per epoch, not per step, to keep selections off the hot loop: a
    # member whose loss turns non-finite at any step (non-finite parameters make the next
    # loss non-finite too) is rolled back to its state at the start of the epoch and frozen.
    orders = jax.vmap(lambda k: _keys.epoch_order(
        cfg.data_order, cfg.batch_size, k, root_key, epoch, n_train, n_steps))(keys)
    members = (carry.params, carry.state, carry.opt_state, carry.alive, carry.probes,
               carry.snapshots, (carry.swa_params, carry.swa_count), keys, hparams, orders)
    step0 = epoch * n_steps
    if n_blocks == 1:
      out, step_metrics = train_block(members, x_train, y_train, step0)
    else:
      out, step_metrics = from_blocks(jax.lax.map(
          lambda block: train_block(block, x_train, y_train, step0),
          to_blocks(members, n_devices, n_blocks)), n_devices)
    params, state, opt_state, finite, probes, snapshots, average = out
    train_metrics = task.finish({k: jnp.mean(v, axis=1) for k, v in step_metrics.items()})
    if n_val:
      val_metrics = jax.vmap(lambda p, s: _evaluate.metrics(
          model, task, p, s, x_val, y_val, _evaluate.EVAL_BATCH_SIZE))(params, state)
    else:
      val_metrics = {k: jnp.full_like(v, jnp.nan) for k, v in train_metrics.items()}
    val_loss = val_metrics["loss"]
    alive = (finite & jax.vmap(_step.all_finite)((params, state, opt_state))
             & (jnp.isfinite(val_loss) | (n_val == 0)))
    params, state, opt_state = _step.where_members(
        alive, (params, state, opt_state), (carry.params, carry.state, carry.opt_state))
    improved = alive & (val_loss < carry.best_val_loss) if cfg.keep == "best_val_loss" else alive
    values = {**{f"train_{k}": v for k, v in train_metrics.items()},
              **{f"val_{k}": v for k, v in val_metrics.items()}}
    history = {name: column.at[:, epoch].set(values[name])
               for name, column in carry.history.items()}
    # A diverged member's probes, snapshots and average of this epoch go back to their
    # values before it.
    probes, snapshots, (swa_params, swa_count) = _step.where_members(
        alive, (probes, snapshots, average),
        (carry.probes, carry.snapshots, (carry.swa_params, carry.swa_count)))
    return Carry(params, state, opt_state,
                 _step.where_members(improved, params, carry.best_params),
                 _step.where_members(improved, state, carry.best_state),
                 jnp.where(improved, val_loss, carry.best_val_loss),
                 jnp.where(improved, epoch, carry.best_epoch), alive, history,
                 probes, snapshots, swa_params, swa_count)

  # Donating the carry halves peak memory on accelerators; the CPU backend cannot donate.
  return jax.jit(train_epoch, donate_argnums=(0,) if jax.default_backend() != "cpu" else (),
                 compiler_options=compiler_options(cfg))
