"""E3: Ioffe & Szegedy's MNIST experiment, batch norm against none, with in-training probes.

    python -m experiments.batchnorm_ioffe [--config=configs/batchnorm_ioffe.py]
        [--config.<field>=<value> ...] [--workdir=runs/batchnorm_ioffe]

The network of the paper's section 4.1: 784 -> 3 x [100 sigmoid] -> 10, small Gaussian initial
weights (``init``, N(0, 0.1^2); zero biases), cross-entropy, batch 60, 50,000 steps on the
60,000 training images. The paper gives no optimizer: plain SGD at ``learning_rate`` 0.5 (one
reproduction's choice; a 8,000-step pilot at 0.5 trained all three variants), the same for
every variant. Three variants, each 5 seeds trained as one vmapped ensemble:

- ``none``: no normalisation;
- ``pre``: BN of ``Wu`` before the sigmoid, the paper's placement;
- ``post``: BN after the sigmoid.

Two probes run inside the compiled epoch every ``probe_every`` steps
(``TrainConfig.probe``): the test accuracy on the first ``n_probe_test`` test images
(evaluation mode, population statistics), and the 15th, 50th and 85th percentiles of the input
to every sigmoid of the last hidden layer on a fixed batch of ``n_percentile_examples`` test
images (training mode: the batch's own statistics, as a training step sees them), as in the
paper's Figure 1.

Reported: the test accuracy from the probes at a few steps and, from the trained weights, on
all test images at the end (mean ± std over seeds), the first probed step at which the seeds' mean reaches ``speed_threshold``, and the
drift of the sigmoid inputs: for each unit, how far its median moves after the first 10% of
training (mean of ``|median(t) - median(t_10%)|`` over t, units and seeds), and the same as a
share of the unit's 15-85 spread. ``patterns`` in ``summary.json`` states whether the paper's
claims hold: BN (``pre``) trains faster, ends higher, and keeps the distribution stabler.

Writes ``summary.json``, ``metrics.csv`` and ``tensorboard/`` (per variant and member: the
probes at their steps) and ``figure1.png`` ((a) test accuracy against step, band over seeds;
(b-d) the percentiles of unit ``unit`` of member 0 for each variant).

Reference:
  Ioffe & Szegedy, 2015, Batch Normalization: Accelerating Deep Network Training by Reducing
  Internal Covariate Shift (https://arxiv.org/abs/1502.03167), section 4.1 and Figure 1.
"""

import dataclasses
import os

import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

from experiments import _mnist
from experiments import app
from experiments import reporting
from jaxens import ensemble
from jaxens import losses
from jaxens import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

VARIANTS = {"none": dict(norm=None), "pre": dict(norm="batch", norm_position="pre"),
            "post": dict(norm="batch", norm_position="post")}
PERCENTILES = (15, 50, 85)
# Test accuracy at these steps goes into the table (those a run reaches).
REPORTED_STEPS = (1000, 5000, 10000, 20000)


@dataclasses.dataclass
class Config(_mnist.MnistData):
  """MNIST as in :class:`_mnist.MnistData` (all 60,000 images train: ``val_fraction=0``).

  Attributes:
    n_members: seeds per variant, one vmapped ensemble each.
    steps: SGD steps (epochs of ``len(train) // batch_size`` steps, rounded up).
    batch_size: examples per step (the paper's 60).
    learning_rate: plain SGD's rate, the same for every variant.
    init: the kernels' initialiser (``nn.MLPConfig.init``).
    probe_every: steps between two probes.
    n_probe_test: test images of the accuracy probe.
    n_percentile_examples: the fixed test batch of the percentile probe.
    unit: the sigmoid of the last hidden layer drawn in the figure.
    speed_threshold: test accuracy whose first probed step measures speed.
    seed: member ``i`` of every variant starts from ``fold_in(PRNGKey(seed), i)``.
  """
  val_fraction: float = 0.0
  n_members: int = 5
  steps: int = 50_000
  batch_size: int = 60
  learning_rate: float = 0.5
  init: str = "normal:0.1"
  probe_every: int = 500
  n_probe_test: int = 10_000
  n_percentile_examples: int = 1000
  unit: int = 0
  speed_threshold: float = 0.97
  seed: int = 0

  def model(self, variant):
    return nn.MLPConfig(sizes=(784, 100, 100, 100, 10), activation="sigmoid", init=self.init,
                        **VARIANTS[variant])


def probe(model, x_test, y_test, x_fixed):
  """The probe of one member: test accuracy and the sigmoid inputs' percentiles."""
  last_hidden = f"activation_input_{model.n_hidden - 1}"

  def measure(params, state, batch, step):
    del batch, step
    logits, _ = nn.mlp_apply(model, params, state, x_test, train=False)
    inputs = nn.mlp_intermediates(model, params, state, x_fixed, train=True)[last_hidden]
    return {"test_accuracy": losses.accuracy(logits, y_test),
            "percentiles": jnp.percentile(inputs, jnp.array(PERCENTILES), axis=0)}
  return measure


def drift(percentiles, steps):
  """How far the medians move after the first 10% of training, per member.

  ``percentiles`` is (members, probes, 3, units). Returns ``(absolute, relative)``: the mean
  over later probes and units of ``|median(t) - median(t0)|``, and the same divided by the
  unit's final 15-85 spread.
  """
  start = int(np.searchsorted(steps, 0.1 * steps[-1]))
  median = percentiles[:, :, 1, :]
  moved = np.abs(median[:, start:] - median[:, start:start + 1])
  spread = percentiles[:, -1, 2, :] - percentiles[:, -1, 0, :]
  return moved.mean(axis=(1, 2)), (moved / spread[:, None, :]).mean(axis=(1, 2))


def first_step_reaching(accuracy, steps, threshold):
  """The first probed step where the members' mean accuracy reaches ``threshold``, or None."""
  reached = np.flatnonzero(accuracy.mean(axis=0) >= threshold)
  return int(steps[reached[0]]) if reached.size else None


def run(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  splits = _mnist.load(config)
  x_test, y_test = jnp.asarray(splits.test.x), jnp.asarray(splits.test.y)
  steps_per_epoch = len(splits.train.y) // config.batch_size
  epochs = -(-config.steps // steps_per_epoch)
  variants, rows = {}, []
  for name in VARIANTS:
    model = config.model(name)
    train_config = ensemble.TrainConfig(
        model, optimizer=optax.sgd, optimizer_kwargs={"learning_rate": config.learning_rate},
        n_members=config.n_members, batch_size=config.batch_size, epochs=epochs,
        seed=config.seed, keep="last", data_order="independent",
        probe=probe(model, x_test[:config.n_probe_test], y_test[:config.n_probe_test],
                    x_test[:config.n_percentile_examples]),
        probe_every=config.probe_every)
    with reporting.Stopwatch() as watch:
      # The test set is the trainer's validation split only for its per-epoch history;
      # ``keep="last"`` selects nothing on it.
      result = ensemble.train(train_config, (tuple(splits.train), tuple(splits.test)))
    # The last probe precedes the last step: the end of training is scored from the result.
    probs = ensemble.predict(train_config, result.params, result.state, x_test)
    final = np.asarray(losses.accuracy(probs, y_test), np.float64)
    accuracy = np.asarray(result.probes["test_accuracy"], np.float64)
    percentiles = np.asarray(result.probes["percentiles"], np.float64)
    absolute, relative = drift(percentiles, result.probe_steps)
    variants[name] = {
        "seconds_including_compile": watch.seconds, "diverged": result.diverged,
        "test_accuracy": accuracy, "percentiles_of_unit": percentiles[:, :, :, config.unit],
        "final_test_accuracy": final,
        "first_step_reaching_threshold": first_step_reaching(
            accuracy, result.probe_steps, config.speed_threshold),
        "median_drift": absolute, "median_drift_relative_to_spread": relative}
    rows += reporting.history_rows({"test_accuracy": accuracy,
                                    **{f"unit{config.unit}_p{q}": percentiles[:, :, i, config.unit]
                                       for i, q in enumerate(PERCENTILES)}},
                                   run=name, steps=result.probe_steps)
  summary = {"experiment": "E3: Ioffe & Szegedy's MNIST experiment", "config": config,
             "steps_run": epochs * steps_per_epoch, "probe_steps": result.probe_steps,
             "variants": variants, "patterns": patterns(variants)}
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, rows)
  plot(summary, os.path.join(workdir, "figure1.png"))
  return summary


def patterns(variants):
  """The paper's claims, each as measured here (BN is the ``pre`` variant)."""
  none, bn = variants["none"], variants["pre"]
  speed = (none["first_step_reaching_threshold"], bn["first_step_reaching_threshold"])
  return {
      "bn_trains_faster": speed[1] is not None and (speed[0] is None or speed[1] < speed[0]),
      "bn_ends_higher": float(bn["final_test_accuracy"].mean())
                        > float(none["final_test_accuracy"].mean()),
      "bn_distribution_stabler": float(bn["median_drift_relative_to_spread"].mean())
                                 < float(none["median_drift_relative_to_spread"].mean()),
  }


def plot(summary, path):
  steps = np.asarray(summary["probe_steps"])
  variants = summary["variants"]
  fig, axes = plt.subplots(1, 1 + len(variants), figsize=(5 * (1 + len(variants)), 4))
  for name, values in variants.items():
    reporting.plot_band(axes[0], steps, values["test_accuracy"], name)
  axes[0].set(xlabel="step", ylabel="test accuracy", title="(a) test accuracy, ± std over seeds",
              ylim=(0.9, 1.0))
  axes[0].legend()
  for ax, (name, values) in zip(axes[1:], variants.items()):
    for i, q in enumerate(PERCENTILES):
      ax.plot(steps, values["percentiles_of_unit"][0, :, i], label=f"{q}th percentile")
    ax.set(xlabel="step", ylabel="input to the sigmoid",
           title=f"({'bcd'[list(variants).index(name)]}) {name}: unit "
                 f"{summary['config'].unit}, member 0")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def print_summary(summary):
  steps = np.asarray(summary["probe_steps"])
  reported = [s for s in REPORTED_STEPS if s in steps]
  config = summary["config"]
  print(f"E3 (Ioffe & Szegedy, MNIST): {summary['steps_run']} steps of batch "
        f"{config.batch_size}, SGD {config.learning_rate}, {config.n_members} seeds per variant")
  rows = []
  for name, values in summary["variants"].items():
    accuracy = np.asarray(values["test_accuracy"])
    rows.append((name, *(reporting.mean_std(accuracy[:, list(steps).index(s)])
                         for s in reported),
                 reporting.mean_std(values["final_test_accuracy"]),
                 values["first_step_reaching_threshold"],
                 reporting.mean_std(values["median_drift"], 3),
                 reporting.mean_std(values["median_drift_relative_to_spread"], 3),
                 f"{values['seconds_including_compile']:.0f}"))
  print(reporting.markdown_table(
      ("variant", *(f"test acc @ {s}" for s in reported), f"test acc @ {summary['steps_run']}",
       f"first step at {config.speed_threshold} (mean)", "median drift",
       "median drift / 15-85 spread", "train s"), rows))
  print("patterns:", ", ".join(f"{k}={v}" for k, v in summary["patterns"].items()))


if __name__ == "__main__":
  app.main("batchnorm_ioffe", Config, run, print_summary)
