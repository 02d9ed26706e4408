"""Eager checks of everything ``train`` is given, before anything is compiled.

Each failure raises a ``ValueError`` that names the argument (``data.train``, ``overrides``,
...) and what was expected.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxens import _validation
from jaxens import nn
from jaxens.ensemble import _config
from jaxens.ensemble import _step
from jaxens.ensemble import _tasks


def as_train_val(data):
  """``(train, val)`` pairs from ``Splits`` or a ``(train, val[, test])`` tuple."""
  if hasattr(data, "train") and hasattr(data, "val"):
    return tuple(data.train), tuple(data.val)
  if isinstance(data, (tuple, list)) and len(data) in (2, 3):
    return tuple(data[0]), tuple(data[1])
  raise ValueError("data: expected jaxens.data.Splits or a (train, val[, test]) tuple of "
                   f"(x, y) pairs, got {type(data).__name__}")


def validate(cfg, data, members):
  """Checks ``cfg``, ``data`` and ``members``; returns the ``(train, val)`` pairs as numpy."""
  _check_config(cfg)
  train, val = (_as_arrays(pair, name) for pair, name in
                zip(as_train_val(data), ("data.train", "data.val")))
  _validation.check_examples(train, "data.train")
  out_shape = _output_shape(cfg.network, train[0])
  if val[0].shape[1:] != train[0].shape[1:]:
    raise ValueError(f"data.val: expected x of shape (N,) + {train[0].shape[1:]} like "
                     f"data.train, got {val[0].shape}")
  task = _tasks.task(cfg.loss)
  for (x, y), name in ((train, "data.train"), (val, "data.val")):
    if len(y):
      task.check_targets(y, out_shape, name)
  _validation.check_int("batch_size", cfg.batch_size, 1, len(train[1]))  # n_train
  _check_averaging(cfg, cfg.epochs * (len(train[1]) // cfg.batch_size))
  if cfg.keep == "best_val_loss" and len(val[1]) == 0:
    raise ValueError("keep: 'best_val_loss' needs a validation set; use keep='last' "
                     "or give data a non-empty validation split")
  if members is not None:
    bad = [m for m in members if not 0 <= int(m) < cfg.n_members]
    if not len(members) or bad:
      raise ValueError(
          f"members: expected a non-empty list of indices in [0, {cfg.n_members}), got {members}")
  return train, val


def _check_config(cfg):
  if not isinstance(cfg, _config.TrainConfig):
    raise ValueError(f"cfg: expected an ensemble.TrainConfig, got {type(cfg).__name__}")
  _validation.check_int("n_members", cfg.n_members, 1)
  _validation.check_int("epochs", cfg.epochs, 1)
  _validation.check_int("seed", cfg.seed, 0, 2**32 - 1)
  if cfg.member_block is not None:
    _validation.check_int("member_block", cfg.member_block, 1)
  if cfg.data_order not in _config.DATA_ORDERS:
    raise ValueError(f"data_order: expected one of {_config.DATA_ORDERS}, got {cfg.data_order!r}")
  if cfg.keep not in _config.KEEP:
    raise ValueError(f"keep: expected one of {_config.KEEP}, got {cfg.keep!r}")
  _check_weight("l1", cfg.l1)
  _check_weight("l2", cfg.l2)
  if cfg.max_norm is not None:
    _check_max_norm("max_norm", cfg.max_norm)
  _tasks.task(cfg.loss)
  _check_probe(cfg)
  model = cfg.network
  overrides = {name: _override(cfg, name, values) for name, values in
               (cfg.overrides or {}).items()}
  model_h, regularisers, optimizer_h = _step.split_hparams(model, overrides)
  for name, values in regularisers.items():
    (_check_max_norm if name == "max_norm" else _check_weight)(f"overrides[{name!r}]", values)
  if "dropout" in model_h and isinstance(cfg.model, nn.MLPConfig):
    if not np.all((model_h["dropout"] >= 0) & (model_h["dropout"] < 1)):
      raise ValueError(f"overrides['dropout']: expected rates in [0, 1), got {model_h['dropout']}")
  _check_optimizer(cfg, optimizer_h)


def _check_probe(cfg):
  if cfg.probe is None:
    if cfg.probe_every is not None:
      raise ValueError(f"probe_every: expected None without a probe, got {cfg.probe_every}")
    return
  if not callable(cfg.probe):
    raise ValueError("probe: expected a callable probe(params, state, batch, step) -> pytree, "
                     f"got {type(cfg.probe).__name__}")
  _validation.check_int("probe_every", cfg.probe_every, 1)


def _check_averaging(cfg, total_steps):
  """Checks ``snapshot_every`` and ``swa_start``/``swa_every`` against the run's updates."""
  every = cfg.snapshot_every
  if isinstance(every, (list, tuple, np.ndarray)):
    steps = list(every)
    if (not steps or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                             for s in steps)
        or any(b <= a for a, b in zip(steps, steps[1:]))
        or not 1 <= steps[0] <= steps[-1] <= total_steps):
      raise ValueError(f"snapshot_every: expected increasing update counts in [1, {total_steps}] "
                       f"(epochs x steps per epoch), got {every!r}")
  elif every is not None:
    _validation.check_int("snapshot_every", every, 1, total_steps)
  if cfg.swa_start is None:
    if cfg.swa_every is not None:
      raise ValueError(f"swa_every: expected None without swa_start, got {cfg.swa_every}")
    return
  _validation.check_int("swa_start", cfg.swa_start, 1, total_steps)
  _validation.check_int("swa_every", cfg.swa_every, 1)


def check_snapshot_memory(n_bytes, device):
  """Raises a ``ValueError`` when ``n_bytes`` of snapshots exceed what ``device`` reports."""
  stats = device.memory_stats() or {}
  limit = stats.get("bytes_limit")
  if limit is None:  # A CPU reports nothing: its memory is the host's.
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if n_bytes > limit:
    raise ValueError(
        f"snapshot_every: the snapshots need {n_bytes / 2**30:.2f} GiB on {device}, which "
        f"reports {limit / 2**30:.2f} GiB; take fewer snapshots or train fewer members per "
        "device")


def probe_shapes(cfg, params, state, batch):
  """The shapes of one member's probe outputs, from the members' ``params`` and ``state``
  (leading member axis) and a ``batch`` without one; a failure names ``probe``."""
  def one_member(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), tree)

  batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)
  try:
    shapes = jax.eval_shape(cfg.probe, one_member(params), one_member(state), batch,
                            jax.ShapeDtypeStruct((), np.int32))
  except Exception as error:  # The user's probe: any failure is reported with its cause.
    raise ValueError(f"probe: failed on one member's params, state, batch and step: "
                     f"{error}") from error
  bad = [leaf for leaf in jax.tree.leaves(shapes)
         if not (jnp.issubdtype(leaf.dtype, jnp.number)
                 or leaf.dtype == jnp.bool_)]
  if bad:
    raise ValueError(f"probe: expected numeric outputs, got dtypes {[b.dtype for b in bad]}")
  return shapes


def _override(cfg, name, values):
  array = np.asarray(values)
  if array.shape != (cfg.n_members,) or not np.issubdtype(array.dtype, np.number):
    raise ValueError(f"overrides[{name!r}]: expected {cfg.n_members} numbers (one per member, "
                     f"n_members={cfg.n_members}), got shape {array.shape} of {array.dtype}")
  if not np.isfinite(array).all():
    raise ValueError(f"overrides[{name!r}]: expected finite values, got {array}")
  return array.astype(np.float32)


def _check_weight(name, value):
  if not np.all(np.asarray(value) >= 0):
    raise ValueError(f"{name}: expected a non-negative weight, got {value}")


def _check_max_norm(name, value):
  if not np.all(np.asarray(value) > 0):
    raise ValueError(f"{name}: expected a positive radius, got {value}")


def _check_optimizer(cfg, optimizer_overrides):
  """Builds the optimizer once with every member's values, so that its own range checks see
  the overrides exactly as they see ``optimizer_kwargs``."""
  optimizer = _step.resolve_optimizer(cfg.optimizer)
  if isinstance(optimizer, optax.GradientTransformation):
    if cfg.optimizer_kwargs is not None:
      raise ValueError("optimizer_kwargs: expected None with a ready "
                       "optax.GradientTransformation; pass a factory (e.g. optax.adam) instead")
    if optimizer_overrides:
      raise ValueError(f"overrides: {sorted(optimizer_overrides)} cannot vary per member with a "
                       "ready optax.GradientTransformation; pass a factory (e.g. optax.adam)")
    return
  try:
    _step.make_optimizer(cfg, optimizer_overrides)
  except TypeError as error:
    raise ValueError(f"optimizer_kwargs/overrides: the optimizer does not accept them: "
                     f"{error}") from error


def _as_arrays(pair, name):
  _validation.check_examples(pair, name, allow_empty=True)
  x, y = np.asarray(pair[0]), np.asarray(pair[1])
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"{name}: expected float or integer x, got dtype {x.dtype}")
  if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
    raise ValueError(f"{name}: x holds {np.size(x) - np.isfinite(x).sum()} non-finite values")
  return x, y


def _output_shape(model, x):
  """The model's output shape on two training examples; a failure names ``data.train``."""
  example = jax.ShapeDtypeStruct((min(2, len(x)),) + x.shape[1:], x.dtype)

  def forward(key, xb):
    params, state = model.init(key, xb)
    return model.apply(params, state, xb, train=False, rng=None)[0]

  try:
    out = jax.eval_shape(forward, jax.random.PRNGKey(0), example)
  except Exception as error:  # The user's model: any failure is reported with its cause.
    raise ValueError(f"data.train: the model cannot take x of shape (N,) + {x.shape[1:]} "
                     f"({x.dtype}): {error}") from error
  return out.shape
