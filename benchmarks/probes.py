"""What ``TrainConfig.probe`` costs inside the compiled epoch, and what the skipped steps cost.

    python -m benchmarks.probes [--members 5] [--epochs 1] [--probe-examples 2000]
        [--every 100] [--repeats 3]

The Ioffe & Szegedy network (784-100-100-100-10 sigmoid, batch 60, SGD) trains E members for
one epoch of real MNIST (1000 steps), with a probe that scores every member on the first
``--probe-examples`` test images (an accuracy, the costliest probe of the BN experiments).
Timed side by side in one process, compile excluded, median of ``--repeats``:
1. no probe;
2. one probe only (``probe_every`` = the steps of the run): the cost of the 999 skipped steps
   is this time less (1) less one probe;
3. a probe every ``--every`` steps, against (1) plus that many probes;
4. a probe on every step, what a ``select`` in place of ``lax.cond`` would cost on every step.
The probe's cost inside the program is ``((4) - (1)) / steps``; a jitted, vmapped call of it
alone (dispatch included) is printed beside.
"""

import argparse
import dataclasses
import statistics

import jax
import jax.numpy as jnp
import optax

from experiments import app
from experiments import batchnorm_ioffe
from experiments import reporting
from jaxens import data as data_lib
from jaxens import ensemble
from jaxens import losses
from jaxens import nn

MODEL = batchnorm_ioffe.Config().model("none")


def accuracy_probe(x_test, y_test):
  def probe(params, state, batch, step):
    del batch, step
    logits, _ = nn.mlp_apply(MODEL, params, state, x_test, train=False)
    return losses.accuracy(logits, y_test)
  return probe


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--members", type=int, default=5)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--probe-examples", type=int, default=2000)
  parser.add_argument("--every", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  app.use_every_core()
  splits = data_lib.load_mnist(val_fraction=0.0)
  x_test = jnp.asarray(splits.test.x[:args.probe_examples])
  y_test = jnp.asarray(splits.test.y[:args.probe_examples])
  probe = accuracy_probe(x_test, y_test)
  base = ensemble.TrainConfig(MODEL, optimizer=optax.sgd, optimizer_kwargs={"learning_rate": 0.5},
                              n_members=args.members, batch_size=60, epochs=args.epochs,
                              keep="last")
  data = (tuple(splits.train), tuple(splits.test))
  steps = args.epochs * (len(splits.train.y) // base.batch_size)
  variants = {
      "no probe": base,
      "one probe (step 0)": dataclasses.replace(base, probe=probe, probe_every=steps),
      f"a probe every {args.every} steps": dataclasses.replace(base, probe=probe,
                                                                probe_every=args.every),
      "a probe every step": dataclasses.replace(base, probe=probe, probe_every=1),
  }
  run = lambda cfg: ensemble.train(cfg, data, progress=False).params
  for cfg in variants.values():
    run(cfg)  # Compiles.
  times = {name: [] for name in variants}
  for _ in range(args.repeats):  # Interleaved, so that drifts in the machine's load are shared.
    for name, cfg in variants.items():
      times[name].append(reporting.seconds(run, cfg)[0])
  median = {name: statistics.median(t) for name, t in times.items()}

  params = run(base)
  one_probe = jax.jit(jax.vmap(probe, in_axes=(0, 0, None, None)))
  one_probe(params, {}, None, 0).block_until_ready()
  alone_seconds = statistics.median(
      reporting.seconds(one_probe, params, {}, None, 0)[0] for _ in range(20))
  probe_seconds = (median["a probe every step"] - median["no probe"]) / steps

  print(f"E={args.members}, {steps} steps, probe: accuracy on {args.probe_examples} test images, "
        f"{1e3 * probe_seconds:.2f} ms for all members inside the program "
        f"({1e3 * alone_seconds:.2f} ms as a call of its own); compile excluded, median of "
        f"{args.repeats}")
  rows = []
  for name, cfg in variants.items():
    n_probes = cfg.n_probes(steps // args.epochs) if cfg.probe is not None else 0
    predicted = median["no probe"] + n_probes * probe_seconds
    rows.append((name, n_probes, f"{median[name]:.3f}", f"{predicted:.3f}",
                 f"{median[name] / predicted:.3f}"))
  print(reporting.markdown_table(
      ("run", "probes", "s", "predicted: no probe + probes x probe cost", "measured / predicted"),
      rows))
  skipped = median["one probe (step 0)"] - median["no probe"] - probe_seconds
  print(f"The {steps - 1} skipped steps cost {1e6 * skipped / (steps - 1):+.1f} us per step "
        f"against a {1e6 * median['no probe'] / steps:.1f} us step "
        f"({100 * skipped / median['no probe']:+.1f}% of the run without a probe); "
        f"evaluating the probe on every step would add "
        f"{100 * (median['a probe every step'] / median['no probe'] - 1):.0f}%.")


if __name__ == "__main__":
  main()
