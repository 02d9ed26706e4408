"""jaxens.optim against optax's built-in optimizers: one jitted update, and one MLP epoch.

    python -m benchmarks.optim_step [--repeats 15] [--calls 20] [--steps 1407]

Each jaxens optimizer is paired with the optax optimizer that computes the same update,
``optim.equivalent``'s (see ``PAIRS``). Two workloads, timed side by side in one run:

1. ``update``: one jitted ``update`` + ``apply_updates`` on a float32 pytree of 1,000,640
   parameters in four leaves (a 784x1024 and a 1024x192 kernel with their biases);
   ``--calls`` back-to-back calls per sample.
2. ``epoch``: one epoch of the seed MLP (784-100-100-100-10 ReLU, ``jaxens.nn``) with
   batch 32 on 45,000 synthetic MNIST-shaped examples, i.e. 1407 steps as one jitted
   ``lax.scan`` (the last batch wraps around to the first examples).

The ``lr_in_buffer`` rows time the Keras coupling of momentum against the optax chain
that computes it (``scale_by_learning_rate`` then ``trace``). Both are slower than
``optax.sgd`` on XLA:CPU (measured here: 1.4-1.5x on the update, 1.2x on the epoch),
because their last operation is a plain ``theta + v``, which XLA:CPU runs at half the
speed of the fused ``theta - eta * m``; that is why jaxens defaults to
``lr_in_buffer=False``.

Warm-up calls (compilation) are excluded. The repeats are interleaved (jaxens and optax
alternate, the order flipping every repeat) because the machine is shared and noisy; the
table gives medians and the ratio jaxens / optax (above 1: jaxens is slower).
"""

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import baselines
from experiments import reporting
from jaxens import nn
from jaxens import optim

# name -> (jaxens alias, its arguments); optax's side is ``optim.equivalent``'s.
PAIRS = {
    "momentum": ("momentum", dict(learning_rate=0.01, mu=0.9)),
    "nesterov": ("nesterov", dict(learning_rate=0.01, mu=0.9)),
    "momentum lr_in_buffer": ("momentum", dict(learning_rate=0.01, mu=0.9, lr_in_buffer=True)),
    "nesterov lr_in_buffer": ("nesterov", dict(learning_rate=0.01, mu=0.9, lr_in_buffer=True)),
    "rmsprop": ("rmsprop", dict(learning_rate=1e-3, rho=0.9, eps=1e-8)),
    "adam": ("adam", dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8)),
    "adagrad": ("adagrad", dict(learning_rate=0.01, eps=1e-7, initial_accumulator=0.1,
                                eps_in_sqrt=True)),
    "adadelta": ("adadelta", dict(learning_rate=1.0, rho=0.95, eps=1e-6)),
}
IMPLEMENTATIONS = ("jaxens", "optax")


def _million_parameters(key):
  shapes = {"w1": (784, 1024), "b1": (1024,), "w2": (1024, 192), "b2": (192,)}
  keys = dict(zip(shapes, jax.random.split(key, len(shapes))))
  return {name: jax.random.normal(keys[name], shape) for name, shape in shapes.items()}


def _update_step(opt):
  @jax.jit
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def _update_workload(opt, calls):
  """Returns ``(run, result)``: ``run()`` times ``calls`` jitted updates, in seconds."""
  params = _million_parameters(jax.random.PRNGKey(0))
  grads = _million_parameters(jax.random.PRNGKey(1))
  step, state = _update_step(opt), opt.init(params)
  first = jax.block_until_ready(step(params, state, grads))  # compiles

  def run():
    with reporting.Stopwatch() as watch:
      for _ in range(calls):
        out = step(params, state, grads)
      jax.block_until_ready(out)
    return watch.seconds / calls

  return run, first[0]


def _epoch_workload(opt, steps, batch_size=32, n_train=45_000):
  """Returns ``(run, result)``: ``run()`` times one jitted epoch of ``steps`` steps."""
  cfg = nn.MLPConfig()  # the seed MLP, 784-100-100-100-10 ReLU
  params, mlp_state = nn.mlp_init(jax.random.PRNGKey(0), cfg)
  rng = np.random.default_rng(0)
  x = rng.random((n_train, 784), dtype=np.float32)
  y = rng.integers(0, 10, n_train).astype(np.int32)
  order = rng.permutation(n_train)[np.arange(steps * batch_size) % n_train]
  x_batches = jnp.asarray(x[order].reshape(steps, batch_size, 784))
  y_batches = jnp.asarray(y[order].reshape(steps, batch_size))
  run_steps = baselines.scan_steps(baselines.optax_step(baselines.mlp_loss(cfg, mlp_state), opt))

  @jax.jit
  def epoch(params, state):
    return run_steps(params, state, x_batches, y_batches)[:2]

  state = opt.init(params)
  first = jax.block_until_ready(epoch(params, state))  # compiles

  def run():
    return reporting.seconds(epoch, params, state)[0]

  return run, first[0]


def _max_difference(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                            jax.tree.leaves(b)))


def _interleaved_medians(runs, repeats):
  """Medians of ``runs[impl]()`` over ``repeats``, alternating which goes first."""
  samples = {impl: [] for impl in runs}
  for repeat in range(repeats):
    order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
    for impl in order:
      samples[impl].append(runs[impl]())
  return {impl: statistics.median(times) for impl, times in samples.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--calls", type=int, default=20)
  parser.add_argument("--steps", type=int, default=1407)
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__}, optax {optax.__version__}, devices {jax.devices()}")
  print(f"repeats {args.repeats} (interleaved), update: {args.calls} calls per sample, "
        f"epoch: {args.steps} steps of batch 32\n")

  rows = []
  for name, (alias, kwargs) in PAIRS.items():
    factories = (functools.partial(getattr(optim, alias), **kwargs),
                 optim.equivalent(alias, "optax", **kwargs))
    row = [name]
    for workload, unit, scale in (
        (lambda opt: _update_workload(opt, args.calls), "ms", 1e3),
        (lambda opt: _epoch_workload(opt, args.steps), "s", 1.0)):
      built = {impl: workload(make()) for impl, make in zip(IMPLEMENTATIONS, factories)}
      medians = _interleaved_medians({impl: built[impl][0] for impl in built}, args.repeats)
      difference = _max_difference(built["jaxens"][1], built["optax"][1])
      row += [f"{medians['jaxens'] * scale:.3f} {unit}", f"{medians['optax'] * scale:.3f} {unit}",
              f"{medians['jaxens'] / medians['optax']:.3f}", f"{difference:.1e}"]
    rows.append(row)
    print(" | ".join(row), flush=True)

  headers = ["optimizer", "update jaxens", "update optax", "ratio", "max abs Δθ",
             "epoch jaxens", "epoch optax", "ratio", "max abs Δθ"]
  print("\n" + reporting.markdown_table(headers, rows))
  print("\nmax abs Δθ: largest parameter difference between the two after one update / one "
        "epoch (float32).")


if __name__ == "__main__":
  main()
