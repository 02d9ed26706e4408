"""Greedy ensemble selection: the published loop, an auto-sklearn-style numpy loop, jaxens.

    python -m benchmarks.select [--models 10,100,1000] [--samples 10000] [--classes 10]
        [--steps 100] [--repeats 3] [--loop-budget 20] [--skip-models 1000]
        [--scale 10000x10000,1000x100000] [--chunk-rows 10000]

``--skip-models M`` adds accuracy with and without ``margin_skip`` on a random and on a
confident pool of M models (0 skips them), and on E1's validation pool (``--e1-pool``, the
``predictions.npz`` that ``make run`` writes) when that file exists.

``--scale MxN,...`` adds the AutoML-scale rows, run from the ``(N, M)`` float32 true-class
matrix alone (``select.greedy_from_true_class``; ``--scale ""`` skips them), as a device
array; where N > M also from a memory-mapped ``.npy`` in the page cache, handed to the device
once (``jax.device_put``, which on the CPU backend aliases the aligned file pages), and
streamed in chunks of ``--chunk-rows`` rows (``chunk_size``). Their ``numpy`` column is the
auto-sklearn-style loop on the whole ``(M, N, 10)`` float32 pool that the matrix was drawn
from (4 GB at M N = 10^8, plus as much again for its candidate buffer), the goal's baseline;
``numpy-tc`` (the loop on the true-class matrix) is the stricter one.

(Run it with ``-m``: as ``python benchmarks/select.py`` the file would shadow the standard
library's ``select`` module.)

Implementations, all on the same float32 (M, N, C) class probabilities:
1. ``published``: the tutorial's loop, a Python loop over steps and over candidate models,
   each candidate's ensemble formed as ``(k p + p_m) / (k + 1)`` and scored in full with numpy.
2. ``numpy``: auto-sklearn's "fast" mode (incremental running sum of the picks), vectorised
   over candidates with numpy: each step forms all ``(M, N, C)`` candidate ensembles and
   scores them.
3. ``numpy-tc`` (log-loss only): the same with the true-class probabilities gathered once,
   a step on ``(M, N)``; the strongest numpy baseline, to separate algorithm from compiler.
4. ``jaxens``: ``jaxens.select.greedy``; per-step time is the marginal cost
   ``(T(steps) - T(0)) / steps``, compile excluded (reported separately: JAX's trace, lowering
   and compile time of the first call), median of repeats.

The Python loops run for at most ``--loop-budget`` seconds per cell and a per-step time is
extrapolated from the steps done (the table says how many). Bandwidth is measured with a
jitted ``jnp.sum`` over a 400 MB float32 array; a log-loss step must read at least the
``(M, N)`` float32 true-class matrix, an accuracy step the ``(M, N, C)`` predictions.
"""

import argparse
import os
import statistics
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from experiments import reporting
from jaxens import losses
from jaxens import select

CLIP = losses.PROB_CLIP


def _numpy_loss(loss, candidates, y):
  """Loss of ``(..., N, C)`` candidate ensembles, computed on the full class axis."""
  if loss == "log_loss":
    labels = np.broadcast_to(y[:, None], candidates.shape[:-1] + (1,))
    p_true = np.take_along_axis(candidates, labels, axis=-1)[..., 0]
    return -np.mean(np.log(np.clip(p_true, CLIP, 1 - CLIP)), axis=-1)
  return 1.0 - np.mean(np.argmax(candidates, axis=-1) == y, axis=-1)


def published_loop(preds, y, loss, steps, budget_s):
  """Returns (seconds per step, steps timed). Python loops over steps and models."""
  mean_pred = preds[int(np.argmin([_numpy_loss(loss, p, y) for p in preds]))]
  k, done = 1, 0
  with reporting.Stopwatch() as clock:
    while done < steps and (done == 0 or clock.elapsed() < budget_s):
      scores = np.empty(len(preds))
      for m, candidate in enumerate(preds):
        scores[m] = _numpy_loss(loss, (k * mean_pred + candidate) / (k + 1), y)
      mean_pred = (k * mean_pred + preds[np.argmin(scores)]) / (k + 1)
      k, done = k + 1, done + 1
  return clock.seconds / done, done


def numpy_running_sum(preds, y, loss, steps, budget_s, *, true_class=False, pool=None):
  """auto-sklearn's fast mode, vectorised over candidates; (seconds per step, steps).

  ``pool``: the ``(M, N)`` true-class matrix itself, instead of gathering it from ``preds``.
  """
  if pool is None:
    pool = np.take_along_axis(preds, y[None, :, None], axis=2)[..., 0] if true_class else preds
  true_class = true_class or pool.ndim == 2
  running_sum = pool[int(np.argmin(_pool_loss(loss, pool, y, true_class)))].copy()
  candidates = np.empty_like(pool)
  candidates.fill(0)  # its pages faulted in before the clock starts (4 GB at scale)
  k, done = 1, 0
  with reporting.Stopwatch() as clock:
    while done < steps and (done == 0 or clock.elapsed() < budget_s):
      np.add(running_sum[None], pool, out=candidates)
      np.multiply(candidates, np.float32(1.0 / (k + 1)), out=candidates)
      running_sum += pool[int(np.argmin(_pool_loss(loss, candidates, y, true_class)))]
      k, done = k + 1, done + 1
  return clock.seconds / done, done


def _pool_loss(loss, candidates, y, true_class):
  if true_class:
    return -np.mean(np.log(np.clip(candidates, CLIP, 1 - CLIP)), axis=-1)
  return _numpy_loss(loss, candidates, y)


def _cell(seconds, steps, wanted):
  """Milliseconds per step, with the steps timed in brackets where a loop was cut short."""
  return f"{1e3 * seconds:.3g}" + ("" if steps == wanted else f" [{steps}]")


def _median_time(fn, repeats):
  return statistics.median(reporting.seconds(fn)[0] for _ in range(repeats))


class _CompileClock:
  """Sums JAX's trace, lowering and backend-compile durations (jax.monitoring events)."""

  def __init__(self):
    self.seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._record)

  def _record(self, event, duration, **kwargs):
    del kwargs
    if event.startswith("/jax/core/compile/"):
      self.seconds += duration


def jaxens_timing(preds, y, loss, steps, repeats, compile_clock):
  """Returns (marginal seconds per step, end-to-end seconds per step, compile seconds)."""
  run = lambda n: select.greedy(preds, y, loss=loss, max_iter=n)
  compiled_before = compile_clock.seconds
  jax.block_until_ready(run(steps))
  compile_s = compile_clock.seconds - compiled_before
  jax.block_until_ready(run(0))
  full = _median_time(lambda: run(steps), repeats)
  empty = _median_time(lambda: run(0), repeats)
  return (full - empty) / steps, full / steps, compile_s


def bandwidth(repeats, n_bytes=400 * 2**20):
  """Bytes per second of a jitted sum over an ``n_bytes`` float32 array."""
  x = jnp.ones(n_bytes // 4, jnp.float32)
  total = jax.jit(jnp.sum)
  jax.block_until_ready(total(x))
  return n_bytes / _median_time(lambda: total(x), max(repeats, 5))


def random_pool(n_models, n_samples, n_classes, seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.standard_normal((n_models, n_samples, n_classes), dtype=np.float32)
  probs = np.exp(2 * logits)
  probs /= probs.sum(axis=-1, keepdims=True)
  return probs, rng.integers(0, n_classes, size=n_samples)


def true_class_matrix(n_models, n_samples, seed=0, pool=None):
  """``(N, M)`` float32 true-class probabilities of a 10-class pool like ``random_pool``'s
  (the true class is class 0), drawn in row blocks to bound memory.

  ``pool``: an ``(M, N, 10)`` float32 array to fill with the whole pool too (``None``: the
  pool is never formed)."""
  rng = np.random.default_rng(seed)
  out = np.empty((n_samples, n_models), np.float32)
  for start in range(0, n_samples, 1000):
    logits = 2 * rng.standard_normal((min(1000, n_samples - start), n_models, 10),
                                     dtype=np.float32)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    out[start:start + len(logits)] = probs[..., 0]
    if pool is not None:
      pool[:, start:start + len(logits)] = probs.transpose(1, 0, 2)
  return out


def scale_rows(shapes, steps, repeats, budget_s, compile_clock, chunk_rows):
  """The AutoML-scale rows: selection from the true-class matrix; returns the goal lines."""
  headers = ["M", "N", "input", "numpy", "numpy-tc", "jaxens", "jaxens e2e", "compile s",
             "numpy/jaxens", "numpy-tc/jaxens", "bw GB/s", "step/floor",
             "e2e / in-memory e2e"]
  print("\nAutoML scale: log-loss from the (N, M) float32 true-class matrix, "
        f"{steps} steps; ms per step; 'numpy' is the auto-sklearn-style loop on the whole "
        "(M, N, 10) float32 pool (the pool and its candidate buffer: 8 GB at 10^8 M N)\n")
  print(reporting.markdown_table(headers, []))
  goals = []
  for n_models, n_samples in shapes:
    pool = np.empty((n_models, n_samples, 10), np.float32)
    tc = true_class_matrix(n_models, n_samples, pool=pool)
    sklearn_step, sklearn_steps = numpy_running_sum(
        pool, np.zeros(n_samples, np.int64), "log_loss", steps, budget_s)
    del pool
    numpy_step, numpy_steps = numpy_running_sum(None, None, "log_loss", steps, budget_s,
                                                pool=np.ascontiguousarray(tc.T))
    bytes_per_s = bandwidth(repeats)
    floor = tc.nbytes / bytes_per_s
    tc_dev = jax.device_put(tc)
    variants = [("device array", tc_dev, None)]
    path = None
    if n_samples > n_models:  # the streamed cases: the same matrix from a .npy in page cache
      path = os.path.join(tempfile.mkdtemp(), "true_class.npy")
      np.save(path, tc)
      mapped = np.load(path, mmap_mode="r")
      np.asarray(mapped).sum()  # into the page cache
      variants += [("memmap, one device_put", mapped, None),
                   (f"memmap, chunks of {chunk_rows} rows", mapped, chunk_rows)]
    results = []
    for name, pool, chunk_size in variants:
      run = lambda n, pool=pool, chunk_size=chunk_size: select.greedy_from_true_class(
          pool, max_iter=n, chunk_size=chunk_size)
      compiled_before = compile_clock.seconds
      jax.block_until_ready(run(steps))
      compile_s = compile_clock.seconds - compiled_before
      jax.block_until_ready(run(0))
      full = _median_time(lambda: run(steps), repeats)
      step = (full - _median_time(lambda: run(0), repeats)) / steps
      results.append((name, step, full, compile_s))
    del tc_dev
    in_memory_step, in_memory_full = results[0][1], results[0][2]
    for name, step, full, compile_s in results:
      row = [n_models, n_samples, name, _cell(sklearn_step, sklearn_steps, steps),
             _cell(numpy_step, numpy_steps, steps), f"{1e3 * step:.3g}",
             f"{1e3 * full / steps:.3g}", f"{compile_s:.2f}", f"{sklearn_step / step:.3g}x",
             f"{numpy_step / step:.3g}x", f"{bytes_per_s / 1e9:.1f}", f"{step / floor:.2f}",
             f"{full / in_memory_full:.2f}"]
      print(reporting.markdown_row(row), flush=True)
    step = in_memory_step
    label = f"M={n_models}, N={n_samples}"
    goals.append(
        f"{label}: numpy/jaxens {sklearn_step / step:.3g}x (goal >= 50x: "
        f"{'met' if sklearn_step >= 50 * step else 'missed'}), the stricter numpy-tc/jaxens "
        f"{numpy_step / step:.3g}x ({'met' if numpy_step >= 50 * step else 'missed'}); "
        f"step/floor {step / floor:.2f} (goal <= 2: "
        f"{'met' if step <= 2 * floor else 'missed'})")
    if path is not None:
      ratio = results[2][2] / in_memory_full
      goals.append(f"{label}: streamed (chunked memmap) / in-memory, whole call {ratio:.2f} "
                   f"(goal <= 1.5: {'met' if ratio <= 1.5 else 'missed'})")
      os.remove(path)
  return goals


def confident_pool(n_models, n_samples, n_classes, seed=0):
  """Like ``random_pool`` with the true class's logit raised by 4: single models about 85%
  accurate and ensembles near 100%, as on MNIST (a stand-in for E1's pool, which needs
  training)."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, n_classes, size=n_samples)
  logits = 2 * rng.standard_normal((n_models, n_samples, n_classes), dtype=np.float32)
  logits[:, np.arange(n_samples), y] += 4
  probs = np.exp(logits)
  probs /= probs.sum(axis=-1, keepdims=True)
  return probs, y


def e1_pool(path):
  """E1's validation pool as ``make run`` saves it: (10, 15000, 10) probabilities."""
  saved = np.load(path)
  return saved["val_probs"], saved["val_labels"]


def margin_skip_rows(n_models, n_samples, n_classes, steps, repeats, e1_path=None):
  """Accuracy with and without ``margin_skip`` on a random and a confident pool, and on E1's
  validation pool when ``e1_path`` (``make run``'s ``predictions.npz``) exists."""
  print(f"\nAccuracy, margin skip: M={n_models}, N={n_samples}, C={n_classes}, {steps} steps; "
        "ms per step (marginal)\n")
  print(reporting.markdown_table(["pool", "final error", "plain", "margin_skip",
                                  "plain/margin_skip", "same path"], []))
  pools = [(name, lambda make=make: make(n_models, n_samples, n_classes))
           for name, make in (("random", random_pool), ("confident", confident_pool))]
  if e1_path and os.path.exists(e1_path):
    pools.append(("E1 (M=10, N=15000, validation)", lambda: e1_pool(e1_path)))
  for name, make in pools:
    preds, y = make()
    preds, y = jax.device_put(preds), jax.device_put(y)
    times, paths = [], []
    for skip in (False, True):
      run = lambda n, skip=skip: select.greedy(preds, y, loss="accuracy", max_iter=n,
                                               margin_skip=skip)
      paths.append(jax.block_until_ready(run(steps)))
      jax.block_until_ready(run(0))
      full = _median_time(lambda: run(steps), repeats)
      times.append((full - _median_time(lambda: run(0), repeats)) / steps)
    same = all(np.array_equal(getattr(paths[0], f), getattr(paths[1], f))
               for f in ("order", "weights", "loss"))
    print(reporting.markdown_row([name, f"{float(paths[0].loss[-1]):.4f}",
                                  f"{1e3 * times[0]:.3g}", f"{1e3 * times[1]:.3g}",
                                  f"{times[0] / times[1]:.2f}x", "yes" if same else "NO"]),
          flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--models", default="10,100,1000")
  parser.add_argument("--samples", type=int, default=10_000)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--loop-budget", type=float, default=20.0)
  parser.add_argument("--scale", default="10000x10000,1000x100000",
                      help="M x N of the true-class rows, comma-separated; '' for none")
  parser.add_argument("--e1-pool", default="runs/ensemble_mnist/predictions.npz",
                      help="E1's pool (make run's predictions.npz) for the margin-skip rows")
  parser.add_argument("--skip-models", type=int, default=1000,
                      help="M of the accuracy margin-skip rows; 0 for none")
  parser.add_argument("--chunk-rows", type=int, default=10_000,
                      help="rows per chunk of the streamed (chunked memmap) selection")
  args = parser.parse_args()

  compile_clock = _CompileClock()
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}; 'bw GB/s' is the bandwidth of a "
        "jitted jnp.sum over 400 MB float32, measured beside each row")
  print(f"N={args.samples} samples, C={args.classes} classes, {args.steps} steps; "
        "times are ms per step (steps timed in brackets where a loop was cut short)\n")
  headers = ["loss", "M", "published", "numpy", "numpy-tc", "jaxens", "jaxens e2e",
             "compile s", "pub/jaxens", "numpy/jaxens", "numpy-tc/jaxens", "bw GB/s",
             "jaxens GB/s", "step/floor"]
  print(reporting.markdown_table(headers, []))
  goals = []
  for n_models in [int(m) for m in args.models.split(",") if m]:
    preds, y = random_pool(n_models, args.samples, args.classes)
    preds_dev, y_dev = jax.device_put(preds), jax.device_put(y)
    for loss in ("log_loss", "accuracy"):
      published, published_steps = published_loop(preds, y, loss, args.steps, args.loop_budget)
      numpy_step, numpy_steps = numpy_running_sum(preds, y, loss, args.steps, args.loop_budget)
      if loss == "log_loss":
        tc_step, tc_steps = numpy_running_sum(preds, y, loss, args.steps, args.loop_budget,
                                              true_class=True)
      # Re-measured beside each row: the bandwidth of a shared machine drifts.
      bytes_per_s = bandwidth(args.repeats)
      step, e2e, compile_s = jaxens_timing(preds_dev, y_dev, loss, args.steps, args.repeats,
                                             compile_clock)
      step_bytes = 4 * n_models * args.samples * (1 if loss == "log_loss" else args.classes)
      floor = step_bytes / bytes_per_s

      def cell(seconds, steps):
        return _cell(seconds, steps, args.steps)

      tc = (cell(tc_step, tc_steps), f"{tc_step / step:.3g}x") if loss == "log_loss" else (
          "n/a", "n/a")
      row = [loss, n_models, cell(published, published_steps), cell(numpy_step, numpy_steps),
             tc[0], f"{1e3 * step:.3g}", f"{1e3 * e2e:.3g}", f"{compile_s:.2f}",
             f"{published / step:.3g}x", f"{numpy_step / step:.3g}x", tc[1],
             f"{bytes_per_s / 1e9:.1f}", f"{step_bytes / step / 1e9:.1f}",
             f"{step / floor:.2f}"]
      print(reporting.markdown_row(row), flush=True)
      if n_models == 1000 and loss == "log_loss":
        speedup = numpy_step / step
        goals.append(f"log_loss: numpy/jaxens {speedup:.3g}x (goal >= 50x: "
                     f"{'met' if speedup >= 50 else 'missed'})")
        goals.append(f"log_loss: step/floor {step / floor:.2f} (goal <= 2: "
                     f"{'met' if step <= 2 * floor else 'missed'})")
      elif n_models == 1000:
        # A step must read all M N C values: numpy's step over that floor caps any speed-up.
        goals.append(f"accuracy: numpy/jaxens {numpy_step / step:.3g}x; reading the pool once "
                     f"at the measured bandwidth would allow at most {numpy_step / floor:.3g}x")
  print("\njaxens: marginal per-step time (T(steps) - T(0)) / steps; 'jaxens e2e' is the "
        "whole call (validation, gather, init, scan) / steps. step/floor: jaxens step over "
        "the time to read the bytes a step must read (log-loss: (M, N) float32; accuracy: "
        "(M, N, C) float32) at the measured bandwidth.")
  if goals:
    print("Goals at M=1000: " + "; ".join(goals))
  if args.skip_models:
    margin_skip_rows(args.skip_models, args.samples, args.classes, args.steps, args.repeats,
                     args.e1_pool)
  if args.scale:
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.scale.split(",")]
    scale_goals = scale_rows(shapes, args.steps, args.repeats, args.loop_budget, compile_clock,
                             args.chunk_rows)
    print("\njaxens: marginal per-step time as above; 'jaxens e2e' and 'e2e / in-memory e2e' "
          "are whole calls (for the memmaps, the transfer from the page cache included). "
          "step/floor: against reading the (N, M) float32 matrix once at the measured "
          "bandwidth.")
    print("Goals at scale: " + "; ".join(scale_goals))


if __name__ == "__main__":
  main()
