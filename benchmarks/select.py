"""Greedy ensemble selection: the published loop, an auto-sklearn-style numpy loop, jaxens.

    python -m benchmarks.select [--models 10,100,1000] [--samples 10000] [--classes 10]
        [--steps 100] [--repeats 3] [--loop-budget 20]

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


def numpy_running_sum(preds, y, loss, steps, budget_s, *, true_class=False):
  """auto-sklearn's fast mode, vectorised over candidates; (seconds per step, steps)."""
  pool = np.take_along_axis(preds, y[None, :, None], axis=2)[..., 0] if true_class else preds
  running_sum = pool[int(np.argmin(_pool_loss(loss, pool, y, true_class)))].copy()
  candidates = np.empty_like(pool)
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


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--models", default="10,100,1000")
  parser.add_argument("--samples", type=int, default=10_000)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--loop-budget", type=float, default=20.0)
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
  for n_models in [int(m) for m in args.models.split(",")]:
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
        return f"{1e3 * seconds:.3g}" + ("" if steps == args.steps else f" [{steps}]")

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


if __name__ == "__main__":
  main()
