"""Orbax checkpoints of a run, their fingerprint, and ``load``.

A checkpoint holds the whole carry of the real members (padding is cut before saving), so it
does not depend on the device count, plus a JSON record: the config's fingerprint, the epochs
done, the member indices and the device count.
"""

import dataclasses
import functools
import hashlib
import json
import os
import re
import types

import jax
import numpy as np

from jaxens.ensemble import _config
from jaxens.ensemble import _programs

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# Carry fields with a slot axis (axis 1) that grows when a run resumes with more epochs.
_GROWING = ("probes", "snapshots")


def describe(value, depth=0):
  """A description of ``value`` that is the same in every process: qualified names for
  functions (with the values their closures capture, so that two ``optax.adam`` with other
  rates differ), fields for dataclasses and named tuples, and no memory addresses."""
  if depth > 8:
    return "..."
  recurse = functools.partial(describe, depth=depth + 1)
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    array = np.asarray(value)
    return {"array": hashlib.sha256(array.tobytes()).hexdigest(), "shape": array.shape,
            "dtype": str(array.dtype)}
  if isinstance(value, functools.partial):
    return {"partial": recurse(value.func), "args": recurse(value.args),
            "keywords": recurse(value.keywords)}
  if isinstance(value, types.FunctionType):
    cells = [cell.cell_contents for cell in value.__closure__ or ()
             if _cell_is_set(cell)]
    return {"function": f"{value.__module__}.{value.__qualname__}", "closure": recurse(cells),
            "defaults": recurse(value.__defaults__)}
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {"type": _qualname(value), "fields": {
        f.name: recurse(getattr(value, f.name)) for f in dataclasses.fields(value)
        if f.name != "parent"}}
  if isinstance(value, tuple) and hasattr(value, "_fields"):
    return {"type": _qualname(value), "fields": recurse(dict(zip(value._fields, value)))}
  if isinstance(value, dict):
    return {str(k): recurse(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
  if isinstance(value, (list, tuple)):
    return [recurse(v) for v in value]
  return {"type": _qualname(value), "repr": _ADDRESS.sub("", repr(value))}


def _cell_is_set(cell):
  try:
    cell.cell_contents
  except ValueError:  # An empty cell: a variable not yet bound.
    return False
  return True


def _qualname(value):
  cls = value if isinstance(value, type) else type(value)
  return f"{cls.__module__}.{cls.__qualname__}"


def fingerprint(cfg, members):
  """What a resumed run must share with the run that wrote the checkpoint; ``epochs`` may
  grow and ``member_block`` changes only the speed, so they are left out."""
  network = cfg.network
  model = network.description or describe(network)
  description = json.dumps(
      {"config": describe(dataclasses.replace(cfg, model=None, overrides=None, epochs=0,
                                                   member_block=None)),
       "model": model,
       "overrides": {k: np.asarray(v).tolist() for k, v in (cfg.overrides or {}).items()},
       "members": list(map(int, members))}, sort_keys=True, default=str)
  return hashlib.sha256(description.encode()).hexdigest()


class Checkpoints:
  """Orbax checkpoints of the whole carry, one per completed epoch.

  Orbax writes each step into a temporary directory and renames it only once every file is
  written, so an interrupted save never appears as a complete checkpoint.
  """

  def __init__(self, workdir, fingerprint_=None):
    import orbax.checkpoint as ocp  # Heavy import, needed only with a workdir.
    self._ocp = ocp
    self._fingerprint = fingerprint_
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=2, enable_async_checkpointing=False, cleanup_tmp_directories=True),
        item_handlers={"carry": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def save(self, epoch, carry, members, n_devices, steps=None):
    """Saves ``carry`` after ``epoch`` epochs; ``steps`` maps ``probe_steps`` and
    ``snapshot_steps`` to the steps of the run's probes and snapshots, for ``load``."""
    meta = {"fingerprint": self._fingerprint, "epoch": epoch,
            "history_length": next(iter(carry.history.values())).shape[1],
            "members": list(map(int, members)), "n_devices": n_devices,
            **{name: None if value is None else list(map(int, value))
               for name, value in (steps or {}).items()}}
    self._manager.save(epoch, args=self._ocp.args.Composite(
        carry=self._ocp.args.StandardSave(carry), meta=self._ocp.args.JsonSave(meta)))
    self._manager.wait_until_finished()

  def latest_meta(self):
    epoch = self._manager.latest_step()
    if epoch is None:
      return None
    return self._manager.restore(
        epoch, args=self._ocp.args.Composite(meta=self._ocp.args.JsonRestore())).meta

  def restore(self, like):
    """``(epochs_done, carry)`` from the latest checkpoint, or ``(0, like)``.

    ``like`` is the carry of the real members; its history, probes and snapshots may be
    longer than the checkpoint's (a run resumed with more epochs): the checkpoint's are padded
    with ``like``'s fill values (NaN, and 0 for integers).
    """
    meta = self.latest_meta()
    if meta is None:
      return 0, like
    if meta["fingerprint"] != self._fingerprint:
      raise ValueError(
          "resume: the checkpoint in workdir was written by a different TrainConfig or member "
          "set; use a fresh workdir or resume=False")
    epochs = next(iter(like.history.values())).shape[1]
    if meta["epoch"] > epochs:
      raise ValueError(f"resume: the checkpoint holds {meta['epoch']} epochs, more than "
                       f"epochs={epochs}")
    host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=host),
                            like)
    abstract = abstract._replace(history={
        name: jax.ShapeDtypeStruct((a.shape[0], meta["history_length"]), a.dtype, sharding=host)
        for name, a in abstract.history.items()})
    saved = self._manager.item_metadata(meta["epoch"])["carry"]
    for name in _GROWING:
      if getattr(like, name) is not None:
        abstract = abstract._replace(**{name: jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(s.shape, a.dtype, sharding=host),
            getattr(abstract, name), saved[name])})
    restored = self._manager.restore(meta["epoch"], args=self._ocp.args.Composite(
        carry=self._ocp.args.StandardRestore(abstract)))
    carry = restored.carry
    carry = _programs.Carry(**carry) if isinstance(carry, dict) else carry
    done = meta["epoch"]
    history = {name: np.pad(np.asarray(column)[:, :done], ((0, 0), (0, epochs - done)),
                            constant_values=np.nan) for name, column in carry.history.items()}
    grown = {name: jax.tree.map(
        lambda saved, a: np.concatenate([np.asarray(saved), np.asarray(a)[:, saved.shape[1]:]],
                                        axis=1), getattr(carry, name), getattr(like, name))
             for name in _GROWING if getattr(like, name) is not None}
    return meta["epoch"], carry._replace(history=history, **grown)

  def restore_as_saved(self):
    """The latest checkpoint as numpy trees of its own structure, and its record."""
    meta = self.latest_meta()
    if meta is None:
      return None, None
    epoch = meta["epoch"]
    host = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=host),
                            self._manager.item_metadata(epoch)["carry"])
    carry = self._manager.restore(epoch, args=self._ocp.args.Composite(
        carry=self._ocp.args.StandardRestore(abstract))).carry
    # PRNG keys (nnx rng streams) stay jax arrays: numpy has no key dtype.
    return jax.tree.map(
        lambda a: a if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else np.asarray(a),
        carry), meta

  def close(self):
    self._manager.close()


def load(workdir):
  """The ``TrainResult`` of the latest checkpoint in ``workdir``, without training.

  Works on a finished or an interrupted run. The trees come back as numpy arrays in the
  structure orbax stored (dicts for the built-in MLP and flax models); ``history`` columns of
  epochs not yet run are NaN. ``swa_state`` is None: it is computed from the training data
  when ``train`` returns, and a checkpoint does not hold it.
  """
  checkpoints = Checkpoints(workdir)
  try:
    carry, meta = checkpoints.restore_as_saved()
  finally:
    checkpoints.close()
  if carry is None:
    raise ValueError(f"workdir: no checkpoint in {os.path.join(workdir, 'checkpoints')}")
  return _config.TrainResult(
      params=carry["params"], state=carry["state"], best_params=carry["best_params"],
      best_state=carry["best_state"],
      history={k: np.asarray(v) for k, v in carry["history"].items()},
      best_epoch=np.asarray(carry["best_epoch"]), diverged=~np.asarray(carry["alive"]),
      members=np.asarray(meta["members"]), n_devices=meta["n_devices"],
      probes=carry.get("probes"), probe_steps=_steps(meta, "probe_steps"),
      snapshots=carry.get("snapshots"), snapshot_steps=_steps(meta, "snapshot_steps"),
      swa_params=carry.get("swa_params"), swa_count=carry.get("swa_count"))


def _steps(meta, name):
  return None if meta.get(name) is None else np.asarray(meta[name])
