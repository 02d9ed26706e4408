"""``train``: the loop over epochs around the compiled programs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxens import models
from jaxens.ensemble import _checkpoint
from jaxens.ensemble import _config
from jaxens.ensemble import _inputs
from jaxens.ensemble import _mesh
from jaxens.ensemble import _programs
from jaxens.ensemble import _progress
from jaxens.ensemble import _tasks


def train(cfg, data, *, workdir=None, resume=False, members=None, progress=True):
  """Trains the ensemble ``cfg`` on ``data`` and returns a ``TrainResult``.

  Every epoch is one compiled program that ``vmap``s a member's step over the members inside a
  ``lax.scan`` over the minibatches. The member axis is sharded over every device, padded to a
  multiple of the device count.

  Args:
    cfg: a ``TrainConfig``.
    data: ``jaxens.data.Splits`` or a ``(train, val[, test])`` tuple of ``(x, y)`` pairs:
      ``x`` of any shape ``(N, ...)``, float or integer; ``y`` as the loss needs. The test
      split is not used.
    workdir: if given, the whole training state is checkpointed there with orbax after every
      epoch (``<workdir>/checkpoints``); ``ensemble.load(workdir)`` reads it back.
    resume: continue from the last complete checkpoint in ``workdir``; the result is identical
      to an uninterrupted run. ``epochs`` may be larger than the checkpointed run's.
    members: train only these member indices, with the same keys as in the full run.
    progress: show a tqdm bar (mean and worst member loss); it is silent when stderr is not a
      terminal.
  """
  (x_train, y_train), (x_val, y_val) = _inputs.validate(cfg, data, members)
  if resume and workdir is None:
    raise ValueError("resume: needs a workdir to resume from")
  members = (np.arange(cfg.n_members, dtype=np.int32) if members is None
             else np.asarray(members, np.int32))
  n_members = len(members)
  mesh, n_padded = _mesh.members_mesh(n_members)
  n_devices = mesh.devices.size
  x_example = x_train[:cfg.batch_size]
  x_train, y_train, x_val, y_val = _mesh.replicate((x_train, y_train, x_val, y_val), mesh)
  hparams = {name: np.asarray(values, np.float32)[members]
             for name, values in (cfg.overrides or {}).items()}
  hparams = _mesh.shard_members(_mesh.pad_members(hparams, n_padded), mesh)
  history_keys = _tasks.history_keys(_tasks.task(cfg.loss))
  root_key, keys, carry = _programs.init_fn(cfg, history_keys)(
      np.uint32(cfg.seed), _mesh.shard_members(_mesh.pad_members(members, n_padded), mesh),
      hparams, x_example)
  n_train, n_val = x_train.shape[0], x_val.shape[0]
  steps_per_epoch = n_train // cfg.batch_size
  n_probes = cfg.n_probes(steps_per_epoch)
  if cfg.probe is not None:
    batch_example = (x_example, np.asarray(y_train[:cfg.batch_size]))
    shapes = _inputs.probe_shapes(cfg, carry.params, carry.state, batch_example)
    carry = carry._replace(probes=_programs.slot_buffers(shapes, n_padded, n_probes))
  carry = _averaging_buffers(cfg, carry, steps_per_epoch, n_padded, mesh)
  probe_steps = None if cfg.probe is None else np.arange(n_probes) * cfg.probe_every
  snapshot_steps = (None if cfg.snapshot_every is None
                    else np.asarray(cfg.snapshot_steps(steps_per_epoch)))
  keys, carry = _mesh.shard_members((keys, carry), mesh)

  checkpoints = None
  start_epoch = 0
  if workdir is not None:
    checkpoints = _checkpoint.Checkpoints(workdir, _checkpoint.fingerprint(cfg, members))
  if resume:
    start_epoch, restored = checkpoints.restore(_mesh.unpad_members(carry, n_members))
    if start_epoch:
      carry = _mesh.shard_members(_mesh.pad_members(restored, n_padded), mesh)

  bar = _progress.open_bar(steps_per_epoch) if progress else None
  epoch_fn = _programs.epoch_fn(cfg, n_train, n_val, None if bar is None else bar.every)
  try:
    for epoch in range(start_epoch, cfg.epochs):
      if bar is not None:
        bar.start(epoch, cfg.epochs)
      carry = epoch_fn(carry, keys, hparams, root_key, epoch, x_train, y_train, x_val, y_val)
      if checkpoints is not None:
        checkpoints.save(epoch + 1, _mesh.unpad_members(carry, n_members), members, n_devices,
                         {"probe_steps": probe_steps, "snapshot_steps": snapshot_steps})
  finally:
    if bar is not None:
      bar.close()
    if checkpoints is not None:
      checkpoints.close()

  carry = _mesh.unpad_members(carry, n_members)
  swa_state = None
  if cfg.swa_start is not None:
    swa_state = _swa_state(cfg, carry, x_train)
  diverged = ~np.asarray(carry.alive)
  if diverged.any():
    logging.warning("jaxens: members %s diverged (non-finite loss, parameters or optimizer "
                    "state); each was frozen at its state from the start of the epoch it "
                    "diverged in.", members[diverged].tolist())
  return _config.TrainResult(
      params=carry.params, state=carry.state, best_params=carry.best_params,
      best_state=carry.best_state, history={k: np.asarray(v) for k, v in carry.history.items()},
      best_epoch=np.asarray(carry.best_epoch), diverged=diverged, members=members,
      n_devices=n_devices,
      probes=_as_numpy(carry.probes), probe_steps=probe_steps, snapshots=_as_numpy(carry.snapshots),
      snapshot_steps=snapshot_steps,
      swa_params=_as_numpy(carry.swa_params), swa_state=_as_numpy(swa_state),
      swa_count=_as_numpy(carry.swa_count))


def _as_numpy(tree):
  return None if tree is None else jax.tree.map(np.asarray, tree)


def _averaging_buffers(cfg, carry, steps_per_epoch, n_padded, mesh):
  """The carry with empty snapshots and weight averages, once their memory is checked."""
  per_member = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype),
                            {"params": carry.params, "state": carry.state})
  n_snapshots = len(cfg.snapshot_steps(steps_per_epoch))
  if n_snapshots:
    member_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(per_member))
    members_per_device = -(-n_padded // mesh.devices.size)
    _inputs.check_snapshot_memory(members_per_device * n_snapshots * member_bytes,
                                  mesh.devices.flat[0])
    carry = carry._replace(snapshots=_programs.slot_buffers(per_member, n_padded, n_snapshots))
  if cfg.swa_start is not None:
    carry = carry._replace(swa_params=jax.tree.map(jnp.zeros_like, carry.params),
                           swa_count=jnp.zeros((n_padded,), jnp.int32))
  return carry


def _swa_state(cfg, carry, x_train):
  """Every member's state re-estimated for its weight average over the training inputs."""
  return _population_states(cfg.network, cfg.batch_size, carry.swa_params, carry.state, x_train)


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def _population_states(model, batch_size, params, state, x):
  # Compiled once per model and batch size, not once per ``train`` call.
  return jax.vmap(lambda p, s: models.population_state(model, p, s, x, batch_size))(
      params, state)
