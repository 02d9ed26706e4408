"""Snapshot ensembles, FGE and SWA against independent members at equal compute, on E1's MLP.

    python -m experiments.cheap_ensembles [--config=configs/cheap_ensembles.py[:gpu]]
        [--config.<field>=<value> ...] [--workdir=runs/cheap_ensembles]

E1's network (784-100-100-100-10 ReLU, PyTorch's initialisation) and data split (25% of the
training set held out for validation, the 10,000 test images for test), SGD with heavy-ball
momentum 0.9 (``optim.momentum``) at batch ``batch_size``. Every method spends the same
budget per seed, ``n_models x epochs_per_model`` member-epochs (30 by default), and runs
``n_seeds`` seeds as one vmapped ensemble:

- **independent**: ``n_models`` members per seed (``n_seeds x n_models`` members in one
  ensemble), each trained for ``epochs_per_model`` epochs with one cosine annealing from
  ``lr``;
- **snapshot** (Huang et al.): one run per seed of the whole budget with
  ``schedules.snapshot_cosine(lr, epochs_per_model epochs)``, a snapshot at the end of each of
  the ``n_models`` cycles (``TrainConfig.snapshot_every``);
- **FGE** (Garipov et al.): one run per seed, pre-trained for ``fge_pretrain_epochs`` with one
  cosine annealing from ``lr``, then ``schedules.fge_triangular(fge_lr_high, fge_lr_low,
  fge_cycle_epochs epochs)`` for the rest of the budget, a model collected at each cycle's
  lowest rate (``schedules.fge_collection_steps``);
- **SWA** (Izmailov et al.): one run per seed with ``schedules.swa(lr, swa_lr, s0)``, ``s0`` at
  ``swa_start_fraction`` of the budget, the weights averaged at ``s0`` and after every epoch
  from there (``TrainConfig.swa_start``/``swa_every``). E1's MLP has no batch norm, so there is
  no BN-recomputed form to report; ``TrainResult.swa_state`` gives it for a model that has;
- **greedy over the union pool** (independent, snapshot and FGE models of a seed): Caruana
  selection (``select.greedy``, log-loss, with replacement, ``greedy_steps`` steps) on the
  validation set.

On the test set, for ensembles of k = 1 ... ``n_models`` models of each method (the first k
independent members; the k most recent snapshots and FGE models, as Huang et al. count them;
SWA is one model): accuracy, NLL, ECE (15 bins), Brier and the mean pairwise
disagreement of the k members (mean ± std over seeds). Writes ``summary.json``,
``metrics.csv`` (run = method, step = k), ``tensorboard/`` and ``error_vs_size.png`` (test
error against ensemble size, a band over seeds).

References:
  Huang et al., 2017, Snapshot Ensembles: Train 1, get M for free
  (https://arxiv.org/abs/1704.00109).
  Garipov et al., 2018, Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs
  (https://arxiv.org/abs/1802.10026).
  Izmailov et al., 2018, Averaging Weights Leads to Wider Optima and Better Generalization
  (https://arxiv.org/abs/1803.05407).
"""

import dataclasses
import os

import jax
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
from jaxens import optim
from jaxens import schedules
from jaxens import select

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ("independent", "snapshot", "fge")
METRICS = ("accuracy", "nll", "ece", "brier", "disagreement")


@dataclasses.dataclass
class Config(_mnist.MnistData):
  """MNIST as in :class:`_mnist.MnistData` (E1's split).

  Attributes:
    n_seeds: seeds per method, one vmapped ensemble each.
    n_models: models per seed (independent members, snapshots, FGE models).
    epochs_per_model: the budget is ``n_models x epochs_per_model`` member-epochs per seed.
    batch_size: examples per step.
    lr: the peak rate of the cosine schedules and SWA's rate before its decay.
    momentum: heavy-ball momentum.
    fge_pretrain_epochs: FGE's pre-training; the cycles fill the rest of the budget.
    fge_cycle_epochs: FGE's cycle length, whose middle collects a model.
    fge_lr_high, fge_lr_low: FGE's triangular rates.
    swa_lr: SWA's constant rate.
    swa_start_fraction: where in the budget averaging starts.
    greedy_steps: steps of the selection over the union pool.
    seed: member ``i`` starts from ``fold_in(PRNGKey(seed), i)``.
  """
  n_seeds: int = 5
  n_models: int = 10
  epochs_per_model: int = 3
  batch_size: int = 128
  lr: float = 0.05
  momentum: float = 0.9
  fge_pretrain_epochs: int = 10
  fge_cycle_epochs: int = 2
  fge_lr_high: float = 0.05
  fge_lr_low: float = 0.0005
  swa_lr: float = 0.005
  swa_start_fraction: float = 0.5
  greedy_steps: int = 30
  seed: int = 0

  def __post_init__(self):
    budget = self.n_models * self.epochs_per_model
    if not 0 < self.fge_pretrain_epochs < budget:
      raise ValueError(f"fge_pretrain_epochs: expected a value in (0, {budget}) (the budget in "
                       f"epochs), got {self.fge_pretrain_epochs}")
    if not 0 < self.swa_start_fraction < 1:
      raise ValueError(f"swa_start_fraction: expected a value in (0, 1), got "
                       f"{self.swa_start_fraction}")

  def model(self):
    return nn.MLPConfig(sizes=(784, 100, 100, 100, 10), init="torch")


def gpu():
  """Longer training per model, 10 seeds."""
  return Config(n_seeds=10, epochs_per_model=10, fge_pretrain_epochs=40, fge_cycle_epochs=4)


def _train(config, splits, n_members, epochs, schedule, **kwargs):
  train_config = ensemble.TrainConfig(
      config.model(), optimizer=optim.momentum(schedule, mu=config.momentum),
      optimizer_kwargs=None, n_members=n_members, batch_size=config.batch_size, epochs=epochs,
      seed=config.seed, keep="last", **kwargs)
  with reporting.Stopwatch() as watch:
    result = ensemble.train(train_config, splits)
  return train_config, result, watch.seconds


def _predict(train_config, params, state, x):
  """Probabilities (n_seeds, K, N, C) of params with leaves (n_seeds, K, ...)."""
  n_seeds, k = jax.tree.leaves(params)[0].shape[:2]
  flat = lambda tree: jax.tree.map(lambda a: a.reshape((n_seeds * k,) + a.shape[2:]), tree)
  probs = ensemble.predict(train_config, flat(params), flat(state), x)
  return np.asarray(probs).reshape((n_seeds, k) + probs.shape[1:])


def metrics_by_size(probs, labels):
  """Every metric of the ensembles of the first k models, k = 1 ... K, per seed.

  ``probs`` is (seeds, K, N, C); returns ``{metric: (seeds, K)}``.
  """
  probs = jnp.asarray(probs)
  labels = jnp.asarray(labels)
  sizes = jnp.arange(1, probs.shape[1] + 1, dtype=probs.dtype)
  means = jnp.cumsum(probs, axis=1) / sizes[None, :, None, None]  # (seeds, K, N, C)
  # Size 1 has no pairs; each larger size is one call vmapped over the seeds.
  disagreement = np.stack(
      [np.zeros(probs.shape[0])] + [np.asarray(jax.vmap(losses.pairwise_disagreement)(
          probs[:, :k])) for k in range(2, probs.shape[1] + 1)], axis=1)
  return {"accuracy": np.asarray(losses.accuracy(means, labels)),
          "nll": np.asarray(losses.log_loss(means, labels)),
          "ece": np.asarray(losses.expected_calibration_error(means, labels)),
          "brier": np.asarray(losses.brier(means, labels)),
          "disagreement": disagreement}


def run(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  splits = _mnist.load(config)
  steps_per_epoch = len(splits.train.y) // config.batch_size
  per_model = config.epochs_per_model * steps_per_epoch
  budget_epochs = config.n_models * config.epochs_per_model
  budget_steps = budget_epochs * steps_per_epoch
  pools = {"val": {}, "test": {}}
  timing = {}

  # Independent: member s * n_models + m is model m of seed s.
  train_config, result, timing["independent"] = _train(
      config, splits, config.n_seeds * config.n_models, config.epochs_per_model,
      schedules.snapshot_cosine(config.lr, per_model))
  grouped = lambda tree: jax.tree.map(
      lambda a: a.reshape((config.n_seeds, config.n_models) + a.shape[1:]), tree)
  for split in pools:
    pools[split]["independent"] = _predict(train_config, grouped(result.params),
                                           grouped(result.state), getattr(splits, split).x)

  train_config, result, timing["snapshot"] = _train(
      config, splits, config.n_seeds, budget_epochs,
      schedules.snapshot_cosine(config.lr, per_model), snapshot_every=per_model)
  for split in pools:
    pools[split]["snapshot"] = _predict(train_config, result.snapshots["params"],
                                        result.snapshots["state"], getattr(splits, split).x)

  pretrain = config.fge_pretrain_epochs * steps_per_epoch
  fge_schedule = optax.join_schedules(
      [schedules.snapshot_cosine(config.lr, pretrain),
       schedules.fge_triangular(config.fge_lr_high, config.fge_lr_low,
                                config.fge_cycle_epochs * steps_per_epoch)], [pretrain])
  collect = schedules.fge_collection_steps(config.fge_cycle_epochs * steps_per_epoch,
                                           budget_steps, start=pretrain)
  train_config, result, timing["fge"] = _train(config, splits, config.n_seeds, budget_epochs,
                                               fge_schedule, snapshot_every=collect)
  for split in pools:
    pools[split]["fge"] = _predict(train_config, result.snapshots["params"],
                                   result.snapshots["state"], getattr(splits, split).x)

  swa_start = int(config.swa_start_fraction * budget_epochs) * steps_per_epoch
  train_config, result, timing["swa"] = _train(
      config, splits, config.n_seeds, budget_epochs,
      schedules.swa(config.lr, config.swa_lr, swa_start), swa_start=swa_start,
      swa_every=steps_per_epoch)
  swa_probs = {split: np.asarray(ensemble.predict(
      train_config, result.swa_params, result.swa_state, getattr(splits, split).x))[:, None]
               for split in pools}
  last_probs = np.asarray(ensemble.predict(train_config, result.params, result.state,
                                           splits.test.x))[:, None]

  # Snapshot and FGE ensembles of size k hold the k most recent models.
  methods = {name: metrics_by_size(pools["test"][name][:, ::-1] if name != "independent"
                                   else pools["test"][name], splits.test.y)
             for name in METHODS}
  methods["swa"] = metrics_by_size(swa_probs["test"], splits.test.y)
  methods["swa_last_iterate"] = metrics_by_size(last_probs, splits.test.y)
  methods["greedy_union"], greedy_sizes = greedy_union(config, pools, splits)
  summary = {
      "experiment": "Snapshot, FGE and SWA against independent members at equal compute",
      "config": config, "budget_member_epochs_per_seed": budget_epochs,
      "steps_per_epoch": steps_per_epoch, "fge_collection_steps": collect,
      "swa_start_step": swa_start, "swa_models_averaged": result.swa_count,
      "train_seconds_including_compile": timing, "greedy_distinct_models": greedy_sizes,
      "model_test_accuracy": {  # (seeds, K) in training order.
          name: np.asarray(losses.accuracy(jnp.asarray(pools["test"][name]),
                                           jnp.asarray(splits.test.y))) for name in METHODS},
      "methods": methods, "patterns": patterns(methods)}
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, [
      row for name, values in methods.items()
      for row in reporting.history_rows(values, run=name)])
  plot(summary, os.path.join(workdir, "error_vs_size.png"))
  return summary


def greedy_union(config, pools, splits):
  """Greedy selection per seed over the union of its independent, snapshot and FGE models,
  on validation; returns the test metrics of each seed's selection (seeds, 1) and the number
  of distinct models each picked."""
  union = {split: np.concatenate([pools[split][m] for m in METHODS], axis=1) for split in pools}
  selected, sizes = [], []
  for seed in range(config.n_seeds):
    selection = select.greedy(union["val"][seed], splits.val.y, max_iter=config.greedy_steps)
    weights = np.asarray(selection.final_weights)
    sizes.append(int((weights > 0).sum()))
    selected.append(np.einsum("m,mnc->nc", weights, union["test"][seed]))
  probs = jnp.asarray(np.stack(selected))[:, None]
  values = metrics_by_size(probs, splits.test.y)
  return values, np.asarray(sizes)


def patterns(methods):
  """The papers' claims, each as measured here (means over seeds; each method's ensemble of
  all its models, and its single model: the first independent member, the last snapshot)."""
  accuracy = lambda name, k: float(np.mean(np.asarray(methods[name]["accuracy"])[:, k]))
  return {
      "snapshot_ensemble_beats_its_single_model":
          accuracy("snapshot", -1) > accuracy("snapshot", 0),
      "snapshot_accuracy_gap_to_independent":
          accuracy("independent", -1) - accuracy("snapshot", -1),
      "fge_accuracy_gap_to_independent": accuracy("independent", -1) - accuracy("fge", -1),
      "swa_accuracy_gap_to_fge": accuracy("fge", -1) - accuracy("swa", 0),
  }


def plot(summary, path):
  methods = summary["methods"]
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for name in METHODS:
    error = 1.0 - np.asarray(methods[name]["accuracy"])
    reporting.plot_band(ax, np.arange(1, error.shape[1] + 1), error, name, marker="o",
                        markersize=3)
  for name, marker in (("swa", "*"), ("greedy_union", "D")):
    error = 1.0 - np.asarray(methods[name]["accuracy"])[:, 0]
    size = 1 if name == "swa" else np.mean(summary["greedy_distinct_models"])
    ax.errorbar([size], [error.mean()], yerr=[error.std()], marker=marker, markersize=9,
                linestyle="none", capsize=3, label=f"{name} (size: models used)")
  ax.set(xlabel="ensemble size (models)", ylabel="test error",
         title=f"equal compute: {summary['budget_member_epochs_per_seed']} member-epochs per "
               "seed, ± std over seeds")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def print_summary(summary):
  config = summary["config"]
  methods = summary["methods"]
  print(f"Budget per seed: {summary['budget_member_epochs_per_seed']} member-epochs "
        f"({config.n_models} models x {config.epochs_per_model} epochs), {config.n_seeds} "
        "seeds; test set, mean ± std over seeds")
  rows = []
  for name, values in methods.items():
    sizes = [1, np.asarray(values["accuracy"]).shape[1]]
    for k in sorted(set(sizes)):
      label = (f"{name} (greedy: {np.mean(summary['greedy_distinct_models']):.1f} distinct)"
               if name == "greedy_union" else f"{name}, {k} model(s)")
      rows.append((label, *(reporting.mean_std(np.asarray(values[m])[:, k - 1], 4)
                            for m in METRICS)))
  print(reporting.markdown_table(("method", "accuracy", "NLL", "ECE", "Brier",
                                  "mean pairwise disagreement"), rows))
  seconds = summary["train_seconds_including_compile"]
  print("train s (incl. compile): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
  print("patterns:", ", ".join(f"{k}={v}" for k, v in summary["patterns"].items()))


if __name__ == "__main__":
  app.main("cheap_ensembles", Config, run, print_summary)
