"""E3: why batch norm works (Santurkar et al. 2018), measured by probes during training.

    python -m experiments.batchnorm_landscape [--config=configs/batchnorm_landscape.py[:gpu]]
        [--config.<field>=<value> ...] [--workdir=runs/batchnorm_landscape]

The network is an MLP 784 -> ``hidden`` ReLU -> 10 (Glorot-uniform kernels) trained with
plain SGD at batch ``batch_size`` on all 60,000 MNIST training images; the test set is the
trainer's validation split for its per-epoch history only (``keep="last"``: nothing is
selected on it). Four parts, each ensemble one vmapped ``ensemble.train`` call:

(a) **Learning rates.** For each architecture (standard, BN before the ReLU, and LN), one
    ensemble of ``len(learning_rates) x sweep_seeds`` members whose ``learning_rate`` is a
    per-member override. The probe records the training-mode loss of each step's minibatch
    every ``probe_every`` steps. The same for the Flax examples' CNN (``cnn_mnist.CNN``, with a
    ``linen.BatchNorm`` before each hidden ReLU or without) on the first ``cnn_train`` images
    (``cnn_train=0`` skips it). A member *trains* when its final minibatch loss (mean of the
    last 5 probes) is below ``trains_below`` and it did not diverge.

(b-d) **Landscape, ICS and noisy BN**, at ``learning_rate``, ``n_members`` seeds per arm: standard,
    BN, noisy BN (Santurkar's noise after every BN: per step and unit mu ~ U(-0.5, 0.5),
    sigma ~ U(1, 1.25), then per example +-0.1, the ``noise_*`` fields; ``nn.BNNoise``) and LN.
    Every ``probe_every`` steps the probe measures, on that step's minibatch and in training
    mode (the loss is that of the network without noise):

    - along the gradient (``landscape.along_gradient``, step sizes ``eta_factors x
      learning_rate``; with the default rate 0.1 that is 0.05 ... 0.4): the loss variation, the
      gradient predictiveness (range of ``|grad L(w) - grad L(w - eta g)|``) and the effective
      beta-smoothness;
    - ICS, the optimisation view (``landscape.ics`` with the SGD update): per layer
      ``|G - G'|`` and ``cos(G, G')``, a layer's BN parameters moving with its kernel;
    - the test accuracy on the first ``n_probe_test`` test images (evaluation mode);
    - the 15th, 50th and 85th percentiles of the input to every ReLU of hidden layer
      ``layer`` on a fixed batch of ``n_fixed`` test images, in training mode with the noise
      (a key fixed per step), as the network's next layer sees them. Their movement is the
      mean over units and consecutive probes of ``|median(t) - median(t - 1)|`` divided by the
      unit's mean 15-85 spread.

``patterns`` in ``summary.json`` states each published claim as measured: BN trains at more
learning rates; noisy BN still beats the standard network and stays near BN while its
distributions move more; BN does not reduce ICS; the three landscape measures are smaller
with BN. Writes ``summary.json``, ``metrics.csv``, ``tensorboard/``,
``learning_rates.png``, ``noisy_bn.png``, ``ics.png`` and ``landscape.png``.

The default is this project's 2-core CPU size (stated in the README with its time); the
``gpu`` preset trains the MLP arms 5x longer with 5 seeds, and the CNN on all images.

Reference:
  Santurkar, Tsipras, Ilyas & Madry, 2018, How Does Batch Normalization Help Optimization?
  (https://arxiv.org/abs/1805.11604).
"""

import dataclasses
import os

import flax.linen as linen
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

from experiments import _mnist
from experiments import app
from experiments import cnn_mnist
from experiments import reporting
from jaxens import ensemble
from jaxens import landscape
from jaxens import losses
from jaxens import models
from jaxens import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ARCHITECTURES = {"standard": dict(norm=None), "batch_norm": dict(norm="batch"),
                 "layer_norm": dict(norm="layer")}
ARMS = ("standard", "batch_norm", "noisy_batch_norm", "layer_norm")
PERCENTILES = (15, 50, 85)
LANDSCAPE = ("loss_variation", "gradient_predictiveness", "beta_smoothness")
# Probes averaged for a member's final minibatch loss.
FINAL_PROBES = 5


@dataclasses.dataclass
class Config(_mnist.MnistData):
  """MNIST as in :class:`_mnist.MnistData` (all 60,000 images train: ``val_fraction=0``).

  Attributes:
    hidden: the MLP's hidden widths.
    architectures: (a) the MLPs of the sweep, from ``ARCHITECTURES`` (standard and batch_norm
      at least).
    arms: (b-d) the arms, from ``ARMS`` (standard and batch_norm at least).
    batch_size: examples per SGD step.
    seed: member ``i`` of every ensemble starts from ``fold_in(PRNGKey(seed), i)``.
    probe_every: steps between two probes.
    learning_rates: (a) the swept rates.
    sweep_seeds: (a) seeds per rate.
    sweep_epochs: (a) epochs of the MLP sweep.
    trains_below: (a) the final minibatch loss under which a member counts as training.
    cnn_train: (a) training images of the CNN sweep; 0 skips it.
    cnn_epochs: (a) epochs of the CNN sweep.
    cnn_learning_rates: (a) the CNN's swept rates.
    n_members: (b-d) seeds per arm.
    epochs: (b-d) epochs per arm.
    learning_rate: (b-d) SGD's rate.
    eta_factors: (d) the step sizes along the gradient, in multiples of ``learning_rate``.
    noise_mean_range, noise_scale_low, noise_scale_high, noise_jitter: (b) ``nn.BNNoise``.
    layer: (b) the hidden layer whose activation inputs are tracked.
    n_fixed: (b) the fixed test batch of the distribution probe.
    n_probe_test: test images of the accuracy probe.
  """
  val_fraction: float = 0.0
  hidden: tuple = (100, 100, 100)
  architectures: tuple = tuple(ARCHITECTURES)
  arms: tuple = ARMS
  batch_size: int = 128
  seed: int = 0
  probe_every: int = 50
  learning_rates: tuple = (0.1, 0.5, 2.0, 4.0)
  sweep_seeds: int = 2
  sweep_epochs: int = 3
  trains_below: float = 0.5
  cnn_train: int = 12800
  cnn_epochs: int = 3
  cnn_learning_rates: tuple = (0.1, 0.5, 2.0)
  n_members: int = 3
  epochs: int = 3
  learning_rate: float = 0.1
  eta_factors: tuple = (0.5, 1.0, 2.0, 3.0, 4.0)
  noise_mean_range: float = 0.5
  noise_scale_low: float = 1.0
  noise_scale_high: float = 1.25
  noise_jitter: float = 0.1
  layer: int = 1
  n_fixed: int = 512
  n_probe_test: int = 2000

  def __post_init__(self):
    for name, chosen, known in (("architectures", self.architectures, tuple(ARCHITECTURES)),
                                ("arms", self.arms, ARMS)):
      if not {"standard", "batch_norm"} <= set(chosen) <= set(known):
        raise ValueError(f"{name}: expected a subset of {known} with 'standard' and "
                         f"'batch_norm', got {chosen}")
    if not 0 <= self.layer < len(self.hidden):
      raise ValueError(f"layer: expected a hidden layer in [0, {len(self.hidden)}), "
                       f"got {self.layer}")

  def mlp(self, arm):
    noise = nn.BNNoise(self.noise_mean_range, self.noise_scale_low, self.noise_scale_high,
                       self.noise_jitter) if arm == "noisy_batch_norm" else None
    norm = ARCHITECTURES["batch_norm" if arm == "noisy_batch_norm" else arm]
    return nn.MLPConfig(sizes=(784, *self.hidden, 10), bn_noise=noise, **norm)


def gpu():
  """The MLP arms 5x longer with 5 seeds, and the CNN sweep on all 60,000 images."""
  return Config(sweep_seeds=5, sweep_epochs=15, cnn_train=60000, cnn_epochs=5, n_members=5,
                epochs=15, probe_every=100, n_probe_test=10000)


class CNN(linen.Module):
  """``cnn_mnist.CNN`` with an optional ``linen.BatchNorm`` before each hidden ReLU."""
  batch_norm: bool

  @linen.compact
  def __call__(self, x, train):
    def norm(h):
      if not self.batch_norm:
        return h
      # Momentum 0.9: the sweep's few hundred steps would leave 0.99's averages lagging.
      return linen.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3)(h)

    x = linen.avg_pool(linen.relu(norm(linen.Conv(32, (3, 3))(x))), (2, 2), strides=(2, 2))
    x = linen.avg_pool(linen.relu(norm(linen.Conv(64, (3, 3))(x))), (2, 2), strides=(2, 2))
    x = linen.relu(norm(linen.Dense(256)(x.reshape(x.shape[0], -1))))
    return linen.Dense(10)(x)


def batch_loss_probe(model):
  """The training-mode loss of each step's minibatch (no dropout or noise in these nets)."""
  def measure(params, state, batch, step):
    logits, _ = model.apply(params, state, batch[0], train=True,
                            rng=jax.random.PRNGKey(0))
    return losses.log_loss_from_logits(logits, batch[1])
  return measure


def layer_groups(mlp):
  """The ICS layers: each Dense with the norm that follows it."""
  return tuple((f"dense_{l}", f"norm_{l}") if mlp.normalised(l) else (f"dense_{l}",)
               for l in range(mlp.n_hidden + 1))


def landscape_probe(config, mlp, x_test, y_test, x_fixed):
  """The (b-d) probe of one member; see the module docstring."""
  clean = dataclasses.replace(mlp, bn_noise=None)
  etas = jnp.asarray(config.eta_factors, jnp.float32) * config.learning_rate
  groups = layer_groups(mlp)

  def measure(params, state, batch, step):
    def loss_fn(p, x, y):
      logits, _ = nn.mlp_apply(clean, p, state, x, train=True)
      return losses.log_loss_from_logits(logits, y)

    along = landscape.along_gradient(loss_fn, params, batch, etas)
    shift = landscape.ics(loss_fn, params, batch, groups, lr=config.learning_rate)
    logits, _ = nn.mlp_apply(mlp, params, state, x_test, train=False)
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), step) if mlp.stochastic else None
    inputs = nn.mlp_intermediates(mlp, params, state, x_fixed, train=True, rng=rng)[
        f"activation_input_{config.layer}"]
    return {"batch_loss": along.loss, "loss_variation": along.loss_variation,
            "gradient_predictiveness": along.gradient_predictiveness,
            "beta_smoothness": along.beta_smoothness, "losses_along": along.losses,
            "grad_distances_along": along.grad_distances,
            "ics_distance": shift.distance, "ics_cosine": shift.cosine,
            "test_accuracy": losses.accuracy(logits, y_test),
            "percentiles": jnp.percentile(inputs, jnp.array(PERCENTILES), axis=0)}
  return measure


def movement(percentiles):
  """Per member: mean over units and consecutive probes of ``|median(t) - median(t-1)|``,
  divided by the unit's mean 15-85 spread; ``percentiles`` is (members, probes, 3, units)."""
  moved = np.abs(np.diff(percentiles[:, :, 1, :], axis=1)).mean(axis=1)
  spread = (percentiles[:, :, 2, :] - percentiles[:, :, 0, :]).mean(axis=1)
  return (moved / spread).mean(axis=-1)


def final_batch_loss(batch_losses):
  return np.asarray(batch_losses, np.float64)[:, -FINAL_PROBES:].mean(axis=1)


def _train(model, config, data, epochs, learning_rate, n_members, probe, overrides=None):
  train_config = ensemble.TrainConfig(
      model, optimizer=optax.sgd, optimizer_kwargs={"learning_rate": learning_rate},
      n_members=n_members, batch_size=config.batch_size, epochs=epochs, seed=config.seed,
      keep="last", overrides=overrides, probe=probe, probe_every=config.probe_every)
  with reporting.Stopwatch() as watch:
    result = ensemble.train(train_config, data)
  return train_config, result, watch.seconds


def sweep(config, model, data, learning_rates, seeds, epochs):
  """(a) One ensemble over ``learning_rates x seeds``; per rate, each seed's results."""
  rates = np.repeat(np.asarray(learning_rates, np.float32), seeds)
  _, result, seconds = _train(model, config, data, epochs, float(rates[0]), len(rates),
                              batch_loss_probe(model), {"learning_rate": rates})
  curves = np.asarray(result.probes, np.float64)
  final = final_batch_loss(curves)
  trains = (final < config.trains_below) & ~result.diverged
  by_rate = lambda values: np.asarray(values).reshape(len(learning_rates), seeds, *np.shape(
      values)[1:])
  return {"learning_rates": np.asarray(learning_rates), "seconds_including_compile": seconds,
          "batch_loss": by_rate(curves), "final_batch_loss": by_rate(final),
          "test_accuracy": by_rate(result.history["val_accuracy"][:, -1]),
          "diverged": by_rate(result.diverged), "trains": by_rate(trains),
          "probe_steps": result.probe_steps}


def run(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  splits = _mnist.load(config)
  data = (tuple(splits.train), tuple(splits.test))
  x_test, y_test = jnp.asarray(splits.test.x), jnp.asarray(splits.test.y)
  rows = []
  summary = {"experiment": "E3: Santurkar et al., how batch norm helps optimisation",
             "config": config, "sweep": {}, "arms": {}}

  for name in config.architectures:
    model = models.mlp(config.mlp(name))
    summary["sweep"][name] = result = sweep(config, model, data, config.learning_rates,
                                            config.sweep_seeds, config.sweep_epochs)
    rows += reporting.history_rows({"batch_loss": result["batch_loss"].reshape(
        -1, len(result["probe_steps"]))}, run=f"sweep_{name}", steps=result["probe_steps"])
  if config.cnn_train:
    images = cnn_mnist.as_images(splits)
    cnn_data = ((images.train.x[:config.cnn_train], images.train.y[:config.cnn_train]),
                tuple(images.test))
    for name, batch_norm in (("cnn_standard", False), ("cnn_batch_norm", True)):
      model = models.from_linen(CNN(batch_norm))
      summary["sweep"][name] = result = sweep(config, model, cnn_data,
                                              config.cnn_learning_rates, 1, config.cnn_epochs)
      rows += reporting.history_rows({"batch_loss": result["batch_loss"][:, 0]},
                                     run=f"sweep_{name}", steps=result["probe_steps"])

  for arm in config.arms:
    mlp = config.mlp(arm)
    probe = landscape_probe(config, mlp, x_test[:config.n_probe_test],
                            y_test[:config.n_probe_test], x_test[:config.n_fixed])
    train_config, result, seconds = _train(mlp, config, data, config.epochs,
                                           config.learning_rate, config.n_members, probe)
    probes = {k: np.asarray(v, np.float64) for k, v in result.probes.items()}
    probs = ensemble.predict(train_config, result.params, result.state, x_test)
    summary["arms"][arm] = {
        "seconds_including_compile": seconds, "diverged": result.diverged,
        "probe_steps": result.probe_steps, **probes,
        "final_test_accuracy": np.asarray(losses.accuracy(probs, y_test), np.float64),
        "final_batch_loss": final_batch_loss(probes["batch_loss"]),
        "distribution_movement": movement(probes["percentiles"])}
    scalars = {k: probes[k] for k in ("batch_loss", "test_accuracy", *LANDSCAPE)}
    for i, group in enumerate(layer_groups(mlp)):
      scalars[f"ics_distance_{group[0]}"] = probes["ics_distance"][:, :, i]
      scalars[f"ics_cosine_{group[0]}"] = probes["ics_cosine"][:, :, i]
    rows += reporting.history_rows(scalars, run=arm, steps=result.probe_steps)

  summary["patterns"] = patterns(summary)
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, rows)
  plot_learning_rates(summary, os.path.join(workdir, "learning_rates.png"))
  plot_noisy_bn(summary, os.path.join(workdir, "noisy_bn.png"))
  plot_ics(summary, os.path.join(workdir, "ics.png"))
  plot_landscape(summary, os.path.join(workdir, "landscape.png"))
  return summary


def patterns(summary):
  """Santurkar et al.'s claims, each as measured here."""
  sweeps, arms = summary["sweep"], summary["arms"]
  rates_training = {name: int(np.asarray(s["trains"]).all(axis=1).sum())
                    for name, s in sweeps.items()}
  mean = lambda arm, key: float(np.mean(arms[arm][key]))
  standard, bn, noisy = "standard", "batch_norm", "noisy_batch_norm"
  out = {
      "rates_where_every_seed_trains": rates_training,
      "bn_trains_at_more_rates": rates_training["batch_norm"] > rates_training["standard"],
      "bn_reduces_ics": (mean(bn, "ics_distance") < mean(standard, "ics_distance")
                         and mean(bn, "ics_cosine") > mean(standard, "ics_cosine")),
  }
  if noisy in arms:
    out.update({
        "noisy_bn_beats_standard": mean(noisy, "final_test_accuracy")
                                   > mean(standard, "final_test_accuracy"),
        "noisy_bn_closer_to_bn_than_standard": (
            abs(mean(noisy, "final_test_accuracy") - mean(bn, "final_test_accuracy"))
            < abs(mean(standard, "final_test_accuracy") - mean(bn, "final_test_accuracy"))),
        "noisy_bn_distributions_move_more": (
            mean(noisy, "distribution_movement")
            > max(mean(bn, "distribution_movement"), mean(standard, "distribution_movement"))),
    })
  if "cnn_standard" in sweeps:
    out["cnn_bn_trains_at_more_rates"] = (rates_training["cnn_batch_norm"]
                                          > rates_training["cnn_standard"])
  for measure in LANDSCAPE:
    out[f"bn_smaller_{measure}"] = mean(bn, measure) < mean(standard, measure)
  return out


def plot_learning_rates(summary, path):
  sweeps = summary["sweep"]
  fig, axes = plt.subplots(1, len(sweeps), figsize=(4.5 * len(sweeps), 3.8), sharey=True)
  for ax, (name, result) in zip(np.atleast_1d(axes), sweeps.items()):
    for rate, curves in zip(result["learning_rates"], result["batch_loss"]):
      diverged = " (NaN drawn at 10)" if np.isnan(curves).any() else ""
      reporting.plot_band(ax, result["probe_steps"], np.nan_to_num(curves, nan=10.0),
                          f"lr {rate:g}{diverged}")
    ax.set(title=f"(a) {name}", xlabel="step", yscale="log", ylim=(1e-2, 20))
    ax.legend(fontsize="small")
  np.atleast_1d(axes)[0].set_ylabel("minibatch training loss")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_noisy_bn(summary, path):
  arms = summary["arms"]
  layer = summary["config"].layer
  fig, axes = plt.subplots(1, 1 + len(arms), figsize=(4.5 * (1 + len(arms)), 3.8))
  for name, values in arms.items():
    reporting.plot_band(axes[0], values["probe_steps"], values["test_accuracy"], name)
  axes[0].set(title="(b) test accuracy, ± std over seeds", xlabel="step", ylim=(0.8, 1.0))
  axes[0].legend(fontsize="small")
  for ax, (name, values) in zip(axes[1:], arms.items()):
    for i, q in enumerate(PERCENTILES):
      ax.plot(values["probe_steps"], values["percentiles"][0, :, i, 0], label=f"{q}th")
    ax.set(title=f"{name}: unit 0 of layer {layer}, member 0", xlabel="step",
           ylabel="input to the ReLU")
    ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_ics(summary, path):
  arms = {k: v for k, v in summary["arms"].items() if k != "noisy_batch_norm"}
  n_layers = next(iter(arms.values()))["ics_distance"].shape[-1]
  fig, axes = plt.subplots(2, n_layers - 1, figsize=(4 * (n_layers - 1), 6.5), squeeze=False)
  for layer in range(1, n_layers):  # The first layer has nothing before it.
    for name, values in arms.items():
      steps = values["probe_steps"]
      reporting.plot_band(axes[0, layer - 1], steps, values["ics_distance"][:, :, layer], name)
      reporting.plot_band(axes[1, layer - 1], steps, values["ics_cosine"][:, :, layer], name)
    axes[0, layer - 1].set(title=f"(c) layer {layer}: |G - G'|", yscale="log")
    axes[1, layer - 1].set(title=f"layer {layer}: cos(G, G')", xlabel="step")
  axes[0, 0].legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_landscape(summary, path):
  arms = {k: v for k, v in summary["arms"].items() if k != "noisy_batch_norm"}
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  for name, values in arms.items():
    steps = values["probe_steps"]
    for ax, key in zip(axes[:2], ("losses_along", "grad_distances_along")):
      along = values[key].mean(axis=0)  # (probes, etas), the mean over seeds.
      fill = ax.fill_between(steps, along.min(axis=1), along.max(axis=1), alpha=0.35,
                             label=name)
      ax.plot(steps, along.mean(axis=1), color=fill.get_facecolor()[0], alpha=0.9)
    reporting.plot_band(axes[2], steps, values["beta_smoothness"], name)
  axes[0].set(title="(d) loss along the gradient: range over eta", xlabel="step",
              yscale="log")
  axes[1].set(title="gradient predictiveness: |g - g(eta)| range", xlabel="step",
              yscale="log")
  axes[2].set(title="effective beta-smoothness", xlabel="step", yscale="log")
  axes[0].legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def print_summary(summary):
  config = summary["config"]
  print("(a) learning rates: test accuracy at the end (mean ± std over seeds); '-' where a seed "
        f"did not train (final minibatch loss >= {config.trains_below} or diverged)")
  rows = []
  for name, result in summary["sweep"].items():
    cells = []
    for trains, accuracy, final in zip(result["trains"], result["test_accuracy"],
                                       result["final_batch_loss"]):
      text = reporting.mean_std(accuracy)
      loss = f"{np.mean(final[np.isfinite(final)]):.2f}" if np.isfinite(final).any() else "NaN"
      cells.append(text if np.all(trains) else f"- ({int(np.sum(trains))}/{len(trains)} "
                                                f"train, loss {loss})")
    rates = ", ".join(f"{r:g}" for r in result["learning_rates"])
    rows.append((name, rates, *cells, f"{result['seconds_including_compile']:.0f}"))
  width = max(len(r) for r in rows) - 3
  print(reporting.markdown_table(
      ("architecture", "learning rates", *(f"rate {i + 1}" for i in range(width)), "train s"),
      [r[:2] + r[2:-1] + ("",) * (width - len(r) + 3) + r[-1:] for r in rows]))
  print(f"\n(b-d) at learning rate {config.learning_rate}, {config.n_members} seeds per arm, "
        "means over the probes of the run (ICS: over layers 2 on)")
  rows = []
  for name, values in summary["arms"].items():
    rows.append((name, reporting.mean_std(values["final_test_accuracy"]),
                 reporting.mean_std(values["final_batch_loss"], 3),
                 reporting.mean_std(values["distribution_movement"], 3),
                 reporting.mean_std(values["ics_distance"][:, :, 1:].mean(axis=(1, 2)), 3),
                 reporting.mean_std(values["ics_cosine"][:, :, 1:].mean(axis=(1, 2)), 3),
                 *(reporting.mean_std(values[k].mean(axis=1), 3) for k in LANDSCAPE),
                 f"{values['seconds_including_compile']:.0f}"))
  print(reporting.markdown_table(
      ("arm", "test acc", "final minibatch loss", "distribution movement", "ICS |G - G'|",
       "ICS cos", "loss variation", "gradient predictiveness", "beta-smoothness", "train s"),
      rows))
  print("patterns:", ", ".join(f"{k}={v}" for k, v in summary["patterns"].items()))


if __name__ == "__main__":
  app.main("batchnorm_landscape", Config, run, print_summary)
