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
    progress: show a tqdm bar (mean and worst member loss); when stderr is not a terminal
      (a job's log file), log one line per epoch instead (its time and the members' mean
      metrics). Off when several processes train (``jax.distributed``), whose programs must
      be identical.

  Several processes (``jax.distributed.initialize()`` in each, then the same call with the
  same ``cfg`` and ``data`` in each) train one ensemble over all their devices. Each process
  then gets ``params``, ``state`` and the other trees as global arrays sharded over the
  members (``jax.experimental.multihost_utils.process_allgather`` copies one to the host) and
  ``history`` and the flags as numpy; a ``workdir`` must be a directory that every process
  sees.
  """
  (x_train, y_train), (x_val, y_val) = _inputs.validate(cfg, data, members)
  if resume and workdir is None:
    raise ValueError("resume: needs a workdir to resume from")
  members = (np.arange(cfg.n_members, dtype=np.int32) if members is None
             else np.asarray(members, np.int32))
  _mesh.check_same_in_every_process(
      "cfg", _checkpoint.fingerprint(cfg, members),
      [(x.shape, x.dtype.str) for x in (x_train, y_train, x_val, y_val)])
  n_members = len(members)
  mesh, _ = _mesh.members_mesh(n_members)
  n_devices = mesh.devices.size
  x_example = x_train[:cfg.batch_size]
  n_blocks, n_padded = _mesh.member_blocks(
      n_members, n_devices, _member_block(cfg, x_example, -(-n_members // n_devices)))
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

  bar = (_progress.open_bar(steps_per_epoch * n_blocks)
         if progress and jax.process_count() == 1 else None)
  epoch_fn = _programs.epoch_fn(cfg, n_train, n_val, None if bar is None else bar.every,
                                n_devices, n_blocks)
  epoch_log = (_progress.EpochLog(cfg.epochs, n_members)
               if progress and bar is None and jax.process_count() == 1 else None)
  try:
    for epoch in range(start_epoch, cfg.epochs):
      if bar is not None:
        bar.start(epoch, cfg.epochs)
      carry = epoch_fn(carry, keys, hparams, root_key, epoch, x_train, y_train, x_val, y_val)
      if epoch_log is not None:
        epoch_log.epoch_done(epoch, carry.history)
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
  history, best_epoch, alive, probes, snapshots, swa_params, swa_count = _mesh.to_host((
      carry.history, carry.best_epoch, carry.alive, carry.probes, carry.snapshots,
      carry.swa_params, carry.swa_count))
  diverged = ~alive
  if diverged.any():
    logging.warning("jaxens: members %s diverged (non-finite loss, parameters or optimizer "
                    "state); each was frozen at its state from the start of the epoch it "
                    "diverged in.", members[diverged].tolist())
  return _config.TrainResult(
      params=carry.params, state=carry.state, best_params=carry.best_params,
      best_state=carry.best_state, history=history, best_epoch=best_epoch, diverged=diverged,
      members=members, n_devices=n_devices, probes=probes, probe_steps=probe_steps,
      snapshots=snapshots, snapshot_steps=snapshot_steps, swa_params=swa_params,
      swa_state=_mesh.to_host(swa_state), swa_count=swa_count)


def _member_block(cfg, x_example, members_per_device):
  """``cfg.member_block``, or for None on a CPU the most members whose parameters fit in
  ``MEMBER_BLOCK_BYTES`` (at least one) when a device holds at least ``MIN_BLOCKS`` such
  blocks; None (no blocks) otherwise and on other backends. With fewer blocks, padding the
  last one costs more than the caches save (E=10 of the E1 MLP on 2 devices: 5% slower)."""
  if cfg.member_block is not None or jax.default_backend() != "cpu":
    return cfg.member_block
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # A PRNGKey's shape: nothing is computed.
  member_bytes = _tree_bytes(jax.eval_shape(cfg.network.init, key, x_example)[0])
  block = max(1, _config.MEMBER_BLOCK_BYTES // max(1, member_bytes))
  return block if members_per_device >= _config.MIN_BLOCKS * block else None


def _tree_bytes(tree):
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def _averaging_buffers(cfg, carry, steps_per_epoch, n_padded, mesh):
  """The carry with empty snapshots and weight averages, once their memory is checked."""
  per_member = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype),
                            {"params": carry.params, "state": carry.state})
  n_snapshots = len(cfg.snapshot_steps(steps_per_epoch))
  if n_snapshots:
    members_per_device = -(-n_padded // mesh.devices.size)
    _inputs.check_snapshot_memory(members_per_device * n_snapshots * _tree_bytes(per_member),
                                  mesh.local_devices[0])
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
