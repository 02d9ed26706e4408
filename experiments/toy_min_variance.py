"""E1 toy check: greedy selection approaches the closed-form minimum-variance weights.

    python -m experiments.toy_min_variance [--config=configs/toy_min_variance.py] \\
        [--config.<field>=<value> ...] [--workdir=DIR]

Ten models predict a target of 0 with independent N(0, sigma_i^2) errors, sigma_i^2 running
linearly from 10 down to 1, and the loss is MSE. The minimum-variance weights
w = Sigma^-1 1 / (1^T Sigma^-1 1) are w_i proportional to 1/sigma_i^2 in the population;
``select.min_variance_weights`` computes them from the sample's error second moments. Greedy
selection with replacement (Caruana et al. 2004) can only reach multiples of 1/(k + 1), so
it should approach the closed form as the number of steps grows.

Writes ``summary.json``, ``metrics.csv`` and ``tensorboard/`` (greedy loss and L1 distance to
the closed form at every step), ``weights.png`` (greedy, empirical closed-form and population
weights side by side, and the greedy weights per step) and ``loss.png`` (greedy loss per
step against the best single model, the plain average and the closed form).
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from experiments import app
from experiments import reporting
from jaxens import losses
from jaxens import select


@dataclasses.dataclass
class Config:
  """The toy problem of E1 (the published "toy check").

  Attributes:
    n_models: pool size.
    variance_high: error variance of the first model.
    variance_low: error variance of the last model (linear in between).
    n_samples: samples the selection and the closed form see.
    max_iter: greedy steps (with replacement, sorted initialisation of one model).
    checkpoints: steps at which the L1 distance to the closed form is reported.
    seed: PRNG seed of the predictions.
  """
  n_models: int = 10
  variance_high: float = 10.0
  variance_low: float = 1.0
  n_samples: int = 10_000
  max_iter: int = 1000
  checkpoints: tuple = (10, 100, 1000)
  seed: int = 0


def make_pool(config):
  """Returns ``(preds (M, N), targets (N,), variances (M,))``."""
  variances = np.linspace(config.variance_high, config.variance_low, config.n_models)
  noise = jax.random.normal(jax.random.key(config.seed), (config.n_models, config.n_samples))
  preds = jnp.sqrt(jnp.asarray(variances, jnp.float32))[:, None] * noise
  return preds, jnp.zeros(config.n_samples, jnp.float32), variances


def run(config: Config, workdir: str) -> dict:
  """Runs the toy check, writes the figures and ``summary.json``, returns the summary."""
  with reporting.Stopwatch() as watch:
    preds, targets, variances = make_pool(config)
    selection = select.greedy(preds, targets, loss="mse", max_iter=config.max_iter)
    closed_form = select.min_variance_weights(preds, targets)
    jax.block_until_ready((selection, closed_form))
  population = (1 / variances) / np.sum(1 / variances)
  greedy_weights = np.asarray(selection.weights, np.float64)
  closed_form = np.asarray(closed_form, np.float64)

  def ensemble_mse(weights):
    return float(losses.mse(jnp.asarray(weights, jnp.float32) @ preds, targets))

  single = np.asarray(losses.mse(preds, targets[None, :]))
  steps = sorted({t for t in config.checkpoints if t <= config.max_iter} | {config.max_iter})
  l1 = {str(t): {"closed_form": float(np.abs(greedy_weights[t] - closed_form).sum()),
                 "population": float(np.abs(greedy_weights[t] - population).sum())}
        for t in steps}
  summary = {
      "config": dataclasses.asdict(config),
      "variances": variances,
      "weights": {"greedy": greedy_weights[-1], "closed_form": closed_form,
                  "population": population},
      "l1_to_closed_form": l1,
      "loss": {
          "greedy": {str(t): float(selection.loss[t]) for t in steps},
          "best_single": float(single.min()),
          "plain_average": ensemble_mse(np.full(config.n_models, 1 / config.n_models)),
          "closed_form": ensemble_mse(closed_form),
          "population_weights": ensemble_mse(population),
          "population_optimum": float(1 / np.sum(1 / variances)),
      },
      "seconds": watch.seconds,
  }
  os.makedirs(workdir, exist_ok=True)
  _plot_weights(os.path.join(workdir, "weights.png"), greedy_weights, closed_form, population)
  _plot_loss(os.path.join(workdir, "loss.png"), np.asarray(selection.loss), summary["loss"])
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, [
      {"run": "greedy", "member": 0, "step": t, "loss": float(selection.loss[t]),
       "l1_to_closed_form": float(np.abs(greedy_weights[t] - closed_form).sum())}
      for t in range(1, config.max_iter + 1)])
  return summary


def _plot_weights(path, greedy_weights, closed_form, population):
  fig, (bars, paths) = plt.subplots(1, 2, figsize=(11, 4))
  models = np.arange(len(closed_form))
  width = 0.27
  bars.bar(models - width, greedy_weights[-1], width,
           label=f"greedy, {len(greedy_weights) - 1} steps")
  bars.bar(models, closed_form, width, label="closed form (sample)")
  bars.bar(models + width, population, width, label=r"$\propto 1/\sigma_i^2$ (population)")
  bars.set(xlabel=r"model ($\sigma_i^2$ from 10 down to 1)", ylabel="weight",
           xticks=models, title="Final weights")
  bars.legend()
  steps = np.arange(1, len(greedy_weights))
  for m in models:
    line, = paths.plot(steps, greedy_weights[1:, m], lw=1)
    paths.axhline(closed_form[m], color=line.get_color(), ls=":", lw=1)
  paths.set(xscale="log", xlabel="step", ylabel="weight",
            title="Greedy weights per step (dotted: closed form)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot_loss(path, greedy_loss, reference):
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(np.arange(1, len(greedy_loss)), greedy_loss[1:], label="greedy")
  for name, style in (("best_single", "--"), ("plain_average", "-."), ("closed_form", ":")):
    ax.axhline(reference[name], ls=style, color="k", lw=1,
               label=f"{name.replace('_', ' ')} ({reference[name]:.4f})")
  ax.set(xscale="log", yscale="log", xlabel="step", ylabel="MSE", title="Ensemble loss per step")
  ax.legend(loc="center right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def markdown(summary):
  loss = summary["loss"]
  rows = [(t, f"{d['closed_form']:.4f}", f"{d['population']:.4f}", f"{loss['greedy'][t]:.4f}")
          for t, d in summary["l1_to_closed_form"].items()]
  table = reporting.markdown_table(
      ["steps", "L1 to closed form (sample)", "L1 to 1/sigma^2", "greedy MSE"], rows)
  references = reporting.markdown_table(
      ["reference", "MSE"],
      [(name.replace("_", " "), f"{loss[name]:.4f}") for name in (
          "best_single", "plain_average", "closed_form", "population_weights",
          "population_optimum")])
  return table + "\n\n" + references


def print_summary(summary):
  print(markdown(summary))


if __name__ == "__main__":
  app.main("toy_min_variance", Config, run, print_summary)
