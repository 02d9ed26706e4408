"""Log-loss selection over a host-resident ``(N, M)`` true-class matrix, read in row chunks.

The matrix (a NumPy array or a memory-mapped ``.npy``) stays on the host. A pass over it
hands each chunk of ``chunk_size`` rows to one jitted call (:func:`_chunk_sweep`), which
first adds the previous step's pick to that chunk's running sum (so no column of the matrix
is ever gathered separately) and then adds the chunk's log-likelihood of every candidate.
The device holds one chunk and the ``(N,)`` running sum. Used by
:func:`jaxens.select.greedy_from_true_class` with ``chunk_size``.

On the CPU backend ``jax.device_put`` of a 64-byte-aligned float32 chunk (every chunk of an
``np.save``'d file whose row length is a multiple of 16 bytes) aliases the host memory, so a
chunk costs no copy at all; otherwise it costs one chunk-sized copy, freed with the chunk.
Dispatch is asynchronous: the host loop only queues calls, and on an accelerator the next
chunk's transfer overlaps the current chunk's compute.
"""

import functools

import jax
import jax.numpy as jnp

from jaxens import select as _select


@functools.partial(jax.jit, static_argnames=("group", "dtype"))
def _chunk_sweep(chunk, part, log_sums, pending, size, clip, *, group, dtype):
  """Adds column ``pending`` (if >= 0) of ``chunk`` to its running sum ``part``; returns it
  and ``log_sums`` plus every candidate's summed log-likelihood over the chunk."""
  chunk = chunk.astype(dtype)
  column = jax.lax.dynamic_index_in_dim(chunk, jnp.maximum(pending, 0), 1, False)
  part = part + jnp.where(pending >= 0, column, 0)
  return part, log_sums + _select._grouped_log_sum(chunk, part, size, clip, group=group)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _step_pick(log_sums, n_samples, penalty_sum, counts, size, step_key, penalty, scalars, *,
               cfg):
  """One step's pick from the candidates' summed log-likelihoods: ``(best, score,
  penalty_sum, counts)`` after adding it."""
  scores = -log_sums / n_samples + scalars.penalty_weight * (penalty_sum + penalty) / size
  usable = (counts == 0) | cfg.replacement
  best, best_score = _select._pick(scores, usable, counts > 0, step_key,
                                   scalars.tie_tolerance, cfg.tie_breaker)
  return best, best_score, penalty_sum + penalty[best], counts.at[best].add(1)


def greedy_chunked(true_class, penalty, scalars, key, *, cfg, use_best, chunk_size):
  """One selection, as :func:`jaxens.select._greedy_path` on the whole matrix; returns the
  arrays of :class:`jaxens.select.Selection`.

  A Python loop over steps and chunks, unlike the in-memory path's ``lax.scan``: the matrix
  does not fit on the device, so each chunk must be handed over from the host every step.
  (The earlier route, a ``lax.scan`` fetching each chunk through ``jax.pure_callback``,
  copied every chunk every step and ran 2.3x the in-memory step.)
  """
  n_samples, n_models = true_class.shape
  dtype = _select._compute_dtype(true_class.dtype)
  starts = range(0, n_samples, chunk_size)
  n_samples_f = jnp.asarray(n_samples, dtype)

  def sweep(parts, pending, size):
    log_sums = jnp.zeros(n_models, dtype)
    new_parts = []
    for start, part in zip(starts, parts):
      chunk = jax.device_put(true_class[start:start + chunk_size])
      part, log_sums = _chunk_sweep(chunk, part, log_sums, pending, size, scalars.clip,
                                    group=cfg.log_group, dtype=dtype)
      new_parts.append(part)
    return new_parts, log_sums

  init_size, n_steps = cfg.init_size, cfg.n_steps
  keys = jax.random.split(jax.random.fold_in(key, 1), n_steps + 1)
  one = jnp.ones((), dtype)
  parts = [jnp.zeros(min(chunk_size, n_samples - start), dtype) for start in starts]
  none = jnp.asarray(-1)
  no_counts = jnp.zeros(n_models, jnp.int32)  # for the first pick
  _, single = sweep(parts, none, one)
  if init_size == 1:
    init = _step_pick(single, n_samples_f, jnp.zeros((), dtype), no_counts, one, keys[0],
                      penalty, scalars, cfg=cfg)[0][None]
  else:
    single_scores = -single / n_samples_f + scalars.penalty_weight * penalty
    init = jnp.argsort(single_scores, stable=True)[:init_size]
  for member in init:  # the initial ensemble's running sum, one pick per pass
    parts, _ = sweep(parts, member, one)
  init_loss, penalty_sum, counts = _init_state(tuple(parts), init, penalty, scalars)

  pending, order, step_loss = none, [], []
  sizes = jnp.arange(init_size + 1, init_size + n_steps + 1).astype(dtype)
  for step in range(n_steps):
    parts, log_sums = sweep(parts, pending, sizes[step])
    pending, score, penalty_sum, counts = _step_pick(
        log_sums, n_samples_f, penalty_sum, counts, sizes[step], keys[step + 1], penalty,
        scalars, cfg=cfg)
    order.append(pending)
    step_loss.append(score)
  return _path_arrays(init, tuple(order), init_loss, tuple(step_loss), use_best,
                      n_models=n_models, n_steps=n_steps)


@jax.jit
def _init_state(parts, init, penalty, scalars):
  """The initial ensemble's loss, penalty sum and counts from its chunked running sums."""
  size = jnp.asarray(init.shape[0], penalty.dtype)
  penalty_sum = jnp.sum(penalty[init])
  probs = jnp.clip(jnp.concatenate(parts) / size, scalars.clip, 1 - scalars.clip)
  loss = -jnp.mean(jnp.log(probs)) + scalars.penalty_weight * penalty_sum / size
  counts = jnp.zeros(penalty.shape[0], jnp.int32).at[init].add(1)
  return loss, penalty_sum, counts


@functools.partial(jax.jit, static_argnames=("n_models", "n_steps"))
def _path_arrays(init, order, init_loss, step_loss, use_best, *, n_models, n_steps):
  order = jnp.stack(order) if order else jnp.zeros(0, init.dtype)
  step_loss = jnp.stack(step_loss) if step_loss else jnp.zeros(0, init_loss.dtype)
  return _select._path_arrays(init, order, init_loss, step_loss, n_models, init.shape[0],
                              n_steps, use_best, init_loss.dtype)
