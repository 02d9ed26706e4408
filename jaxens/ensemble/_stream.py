"""The ``(N, E)`` true-class matrix of an ensemble, streamed member chunk by member chunk.

Log-loss selection (``select.greedy_from_true_class``) needs only each member's probability
of the true class. A large ensemble's ``(E, N, C)`` class probabilities need never exist:
each chunk of members is predicted on the device, reduced to its ``(chunk, N)`` true-class
probabilities there, and written to a host array or a memory-mapped ``.npy`` file.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxens import _validation
from jaxens import models
from jaxens.ensemble import _config
from jaxens.ensemble import _evaluate
from jaxens.ensemble import _tasks


def predict_true_class(cfg, params, state, x, y, *, member_chunk=64,
                       batch_size=_evaluate.EVAL_BATCH_SIZE, out=None):
  """Every member's probability of the true class, ``(N, E)``, models last.

  Equals ``take_along_axis(predict(cfg, params, state, x), y)`` transposed; the device holds
  one chunk's ``(member_chunk, batch_size, C)`` probabilities at a time and its
  ``(N, member_chunk)`` columns.

  Args:
    cfg, params, state, x, batch_size: as for :func:`jaxens.ensemble.predict` (cross-entropy
      models: class probabilities).
    y: ``(N,)`` integer labels.
    member_chunk: members predicted per device call, >= 1.
    out: where to write: ``None`` for a new float32 host array, a path ending in ``.npy``
      for a new memory-mapped file (``np.lib.format.open_memmap``), or an existing writable
      ``(N, E)`` array.

  Returns:
    The ``(N, E)`` array written (a ``np.memmap`` for a path).
  """
  n_members = jax.tree_util.tree_leaves(params)[0].shape[0]
  x, y = jnp.asarray(x), np.asarray(y)
  n_samples = x.shape[0] if x.ndim else 0
  if n_samples < 1:
    raise ValueError(f"x: expected at least one example, got shape {tuple(x.shape)}")
  if y.shape != (n_samples,) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"y: expected ({n_samples},) integer labels, got {y.dtype} {y.shape}")
  _validation.check_int("member_chunk", member_chunk, 1)
  if out is None:
    out = np.empty((n_samples, n_members), np.float32)
  elif isinstance(out, str):
    if not out.endswith(".npy"):
      raise ValueError(f"out: expected a path ending in .npy, got {out!r}")
    out = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32,
                                    shape=(n_samples, n_members))
  elif getattr(out, "shape", None) != (n_samples, n_members):
    raise ValueError(f"out: expected an (N, E) = {(n_samples, n_members)} array, got "
                     f"{getattr(out, 'shape', type(out).__name__)}")
  _validation.check_int("batch_size", batch_size, 1)
  if isinstance(cfg, _config.TrainConfig):
    model, loss = cfg.network, cfg.loss
  else:
    model, loss = models.resolve(cfg), "cross_entropy"
  output_fn = _tasks.task(loss).predict
  batch_size = min(batch_size, n_samples)
  one_member = jax.tree_util.tree_map(lambda leaf: leaf[0], (params, state))
  probs = jax.eval_shape(lambda p, s: output_fn(model.apply(p, s, x[:batch_size], train=False,
                                                            rng=None)[0]), *one_member)
  if probs.ndim != 2 or y.size and int(y.max()) >= probs.shape[-1]:
    raise ValueError(f"y: labels must index the classes of (N, C) probabilities, got "
                     f"predictions of shape {probs.shape} per batch")
  labels = jnp.asarray(y)
  # A host loop over member chunks: each chunk's output must reach the host before the next
  # is computed, which is the point of streaming.
  for start in range(0, n_members, member_chunk):
    members = slice(start, min(start + member_chunk, n_members))
    chunk = jax.tree_util.tree_map(lambda leaf, m=members: leaf[m], (params, state))
    out[:, members] = np.asarray(_true_class_columns(model, output_fn, *chunk, x, labels,
                                                     batch_size))
  if isinstance(out, np.memmap):
    out.flush()
  return out


@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def _true_class_columns(model, output_fn, params, state, x, labels, batch_size):
  """``(N, chunk)``: each member's probability of the true class, reduced batch by batch, so
  that no ``(chunk, N, C)`` probabilities exist; the device holds ``(chunk, batch, C)``."""
  n_samples = x.shape[0]
  n_batches = -(-n_samples // batch_size)
  pad = n_batches * batch_size - n_samples
  x_batches = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape(
      (n_batches, batch_size) + x.shape[1:])
  label_batches = jnp.pad(labels, (0, pad)).reshape(n_batches, batch_size)

  def member(p, s):
    def batch(inputs):
      xb, yb = inputs
      probs = output_fn(model.apply(p, s, xb, train=False, rng=None)[0])
      return jnp.take_along_axis(probs, yb[:, None], axis=1)[:, 0]
    return jax.lax.map(batch, (x_batches, label_batches)).reshape(-1)[:n_samples]

  return jax.vmap(member)(params, state).T
