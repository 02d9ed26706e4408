"""E4: large batches find sharp minima (Keskar et al. 2017), network F1 on MNIST.

    python -m experiments.sharpness_batch_size [--config=configs/sharpness_batch_size.py[:gpu]] \\
        [--config.<field>=<value> ...] [--workdir=runs/sharpness_batch_size]

Network F1 (784 -> 5 x [512, BN, ReLU] -> 10) is trained with Adam (learning rate 1e-3, the
optax/Keras default; the paper does not give one) in two regimes, each a vmapped ensemble of
5 seeds trained by one ``ensemble.train`` call: small batch (SB) 256 and large batch (LB)
6000, 10% of the 60,000 training images. Member ``i`` of both regimes starts from the same
initial weights. As in the paper, all 60,000 training images are trained on
(``val_fraction=0``, ``keep="last"``: the last epoch's weights) and the 10,000 test images are
the test set. The test set is also evaluated after every epoch, only to report the best test
accuracy over epochs, an oracle upper bound on what early stopping could give (the paper's
claim is that early stopping does not close the gap); it selects nothing.

Batch norm. After training, the BN population statistics of every member are re-estimated on
the whole training set (Ioffe & Szegedy's Algorithm 2, ``nn.population_statistics``, batches
of ``bn_batch_size``) instead of using the training's moving averages (momentum 0.99), which
lag the weights, most of all for LB with only 10 steps per epoch. Every number below uses
these statistics: ``f`` is a deterministic function of the weights (evaluation mode), so it
does not depend on how the training set is chunked; the paper leaves this choice open.
Accuracies with the moving averages are in ``summary.json`` too.

Sharpness (``jaxens.sharpness.keskar``, vmapped over the members):

.. math:: \\phi(\\epsilon, A) = 100 \\,
   \\frac{\\max_{|y_i| \\le \\epsilon (|(A^+ x)_i| + 1)} f(x + A y) - f(x)}{1 + f(x)},

with ``f`` the mean training cross-entropy, in the full space (``A = I``) at
``epsilon`` 1e-3 and 5e-4 and in a random 100-dimensional subspace (Rademacher ``A``, one
matrix shared by all members and both regimes) at 1e-3. Only the weights are perturbed.
How ``f`` treats BN, and how it is maximised, is the protocol (``bn_statistics``, ``solver``):
the population statistics held fixed while the weights move (``fixed``, the default) or the
batch statistics of ``f``'s chunk (``batch``; by default one chunk of all of ``f``'s images),
maximised by ``frank_wolfe`` (10 steps, vmapped over the members) or by the paper's
``lbfgsb`` (10 iterations of scipy's L-BFGS-B from ``y = 0``, on the host, member by
member). With ``compare_protocols`` every protocol of ``PROTOCOLS`` is measured, and a second
table sets fixed BN with Frank-Wolfe, batch BN with Frank-Wolfe and batch BN with L-BFGS-B
beside the paper. Also measured: one full-space call for one member on all training images,
its count of full forward-and-backward passes, and its wall time against that of one pass
(same chunking), both compiled ahead so that compilation is excluded.

Interpolation. ``f(alpha x_LB + (1 - alpha) x_SB)`` and test loss and accuracy for 25
values of ``alpha`` in [-1, 2], between member 0 of each regime; at every ``alpha`` the BN
statistics are re-estimated on the training set for the interpolated weights (with
``reestimate_bn=False`` the two members' statistics are interpolated instead).

Scale. The default is a reduced-scale CPU run: 15 epochs per regime, paper trains to
convergence. That is 3,510 SB and 150 LB steps, which reach 99.7-100% training accuracy
without converging; and ``f`` inside the sharpness is the mean over the first 10,000
training images instead of all 60,000 (the timing call and the interpolation use all of
them). It took 89 minutes on this project's 2-core VM, shared with other jobs, most of it the
protocol comparison (``--config.compare_protocols=False`` skips it). The ``gpu`` preset
(``--config=configs/sharpness_batch_size.py:gpu``) runs the full protocol: 100 epochs in each
regime (23,400 SB and 1,000 LB steps; the paper trains until the loss stops improving) and
``f`` over all 60,000 images. The printed output and
``summary.json`` say which one ran.

Writes ``metrics.csv`` and ``tensorboard/`` (per regime and member: training loss and
accuracy and test loss and accuracy per epoch), ``summary.json`` (per-member and mean +- std metrics beside the paper's, timing,
interpolation), ``sharpness.png`` (per seed and mean +- std per regime, log scale, paper
values marked), ``interpolation.png`` and ``curves.png`` (training loss and test accuracy per
epoch).

References:
  Keskar et al., 2017, On Large-Batch Training for Deep Learning: Generalization Gap and Sharp
  Minima (https://arxiv.org/abs/1609.04836).
  Ioffe & Szegedy, 2015, Batch Normalization (https://arxiv.org/abs/1502.03167).
"""

import dataclasses
import functools
import os
import statistics
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from absl import logging  # noqa: E402

from experiments import app  # noqa: E402
from experiments import reporting  # noqa: E402
from jaxens import _validation  # noqa: E402
from jaxens import data as data_lib  # noqa: E402
from jaxens import ensemble  # noqa: E402
from jaxens import losses  # noqa: E402
from jaxens import nn  # noqa: E402
from jaxens import sharpness  # noqa: E402

REGIMES = ("SB", "LB")
BN_STATISTICS = ("fixed", "batch")
#: The protocols E4's comparison table sets beside the paper: (BN statistics, solver).
PROTOCOLS = (("fixed", "frank_wolfe"), ("batch", "frank_wolfe"), ("batch", "lbfgsb"))
#: The full protocol's epochs per regime (the paper trains until the loss stops improving).
FULL_PROTOCOL_EPOCHS = 100
#: Keskar et al. (2017), network F1: (mean, std or None) over 5 runs; accuracies in %.
#: Sharpness keys are the names ``_sharpness_settings`` gives the paper's settings.
PAPER = {
    "train_accuracy": {"SB": (99.66, None), "LB": (99.92, None)},
    "test_accuracy": {"SB": (98.03, 0.07), "LB": (97.81, 0.07)},
    "full_0.001": {"SB": (1.23, 0.83), "LB": (205.14, 69.52)},
    "full_0.0005": {"SB": (0.61, None), "LB": (42.90, None)},
    "subspace_0.001": {"SB": (0.11, None), "LB": (9.22, None)},
}


@dataclasses.dataclass
class Config:
  """E4 configuration; the defaults are the reduced-scale CPU run (``configs/`` has the full
  protocol as the ``gpu`` preset).

  Attributes:
    hidden, norm: the network, 784 -> hidden -> 10 with ReLU (F1: five layers of 512 with
      BN).
    optimizer, learning_rate: shared by both regimes.
    n_members: seeds per regime.
    small_batch, large_batch: SB and LB batch sizes.
    small_batch_epochs, large_batch_epochs: passes over the training set per regime.
    seed: member ``i`` of both regimes starts from ``fold_in(PRNGKey(seed), i)``.
    data_source, data_dir: as in ``data.load_mnist``.
    n_train, n_test: subsets for quick runs (None: the whole split).
    reestimate_bn: re-estimate the BN population statistics on the training set after
      training and at every interpolation point (otherwise: the training's moving averages,
      interpolated linearly along the line).
    bn_batch_size: minibatch size of the re-estimation.
    epsilons: box sizes of the full-space sharpness.
    subspace_dim, subspace_epsilon: the random-subspace sharpness.
    sharpness_steps: solver steps of every sharpness call.
    sharpness_seed: seed of the random subspace matrix.
    sharpness_n_train: ``f`` in the sharpness is the mean over the first this many training
      images (None: all of them, the paper's definition).
    chunk_size: examples per chunk whenever ``f`` is evaluated.
    bn_statistics, solver: the protocol of the main sharpness measurements: ``f`` with the
      BN population statistics held fixed while the weights move (``fixed``) or with the
      batch statistics of ``f``'s chunk (``batch``), maximised by ``frank_wolfe`` or by the
      paper's ``lbfgsb`` (10 iterations of scipy's L-BFGS-B from ``y = 0``).
    compare_protocols: also measure every protocol of ``PROTOCOLS``, for the table that
      sets them beside the paper.
    bn_chunk_size: with batch statistics, examples per chunk of ``f`` (None: all of ``f``'s
      images in one chunk, the full-batch statistics).
    alpha_range, n_alphas: the interpolation grid, endpoints included.
  """
  hidden: tuple = (512,) * 5
  norm: str = "batch"
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  n_members: int = 5
  small_batch: int = 256
  large_batch: int = 6000
  small_batch_epochs: int = 15
  large_batch_epochs: int = 15
  seed: int = 0
  data_source: str = "auto"
  data_dir: Optional[str] = None
  n_train: Optional[int] = None
  n_test: Optional[int] = None
  reestimate_bn: bool = True
  bn_batch_size: int = 1000
  epsilons: tuple = (1e-3, 5e-4)
  subspace_dim: int = 100
  subspace_epsilon: float = 1e-3
  sharpness_steps: int = 10
  sharpness_seed: int = 0
  sharpness_n_train: Optional[int] = 10_000
  chunk_size: int = sharpness.DEFAULT_CHUNK_SIZE
  bn_statistics: str = "fixed"
  solver: str = "frank_wolfe"
  compare_protocols: bool = True
  bn_chunk_size: Optional[int] = None
  alpha_range: tuple = (-1.0, 2.0)
  n_alphas: int = 25

  def __post_init__(self):
    for name in ("n_members", "small_batch", "large_batch", "small_batch_epochs",
                 "large_batch_epochs", "sharpness_steps", "chunk_size", "subspace_dim"):
      _validation.check_int(name, getattr(self, name), 1)
    if self.sharpness_n_train is not None:
      _validation.check_int("sharpness_n_train", self.sharpness_n_train, 1)
    _validation.check_int("n_alphas", self.n_alphas, 2)
    if self.bn_statistics not in BN_STATISTICS:
      raise ValueError(f"bn_statistics: expected one of {BN_STATISTICS}, got "
                       f"{self.bn_statistics!r}")
    if self.solver not in sharpness.SOLVERS:
      raise ValueError(f"solver: expected one of {sharpness.SOLVERS}, got {self.solver!r}")
    if self.bn_chunk_size is not None:
      _validation.check_int("bn_chunk_size", self.bn_chunk_size, 1)
    if not self.epsilons or min(self.epsilons) <= 0 or self.subspace_epsilon <= 0:
      raise ValueError(f"epsilons, subspace_epsilon: expected positive box sizes, got "
                       f"{self.epsilons} and {self.subspace_epsilon}")

  def model(self):
    return nn.MLPConfig(sizes=(784, *self.hidden, 10), norm=self.norm)


def scale_note(config, n_train):
  """Says whether ``config`` is the full protocol or a reduced-scale run, and how."""
  reductions = []
  if min(config.small_batch_epochs, config.large_batch_epochs) < FULL_PROTOCOL_EPOCHS:
    reductions.append(f"SB {config.small_batch_epochs} epochs, LB {config.large_batch_epochs} "
                      f"epochs (full protocol: {FULL_PROTOCOL_EPOCHS} each)")
  if config.sharpness_n_train is not None and config.sharpness_n_train < n_train:
    reductions.append(f"f in the sharpness over the first {config.sharpness_n_train} of "
                      f"{n_train} training images")
  if config.n_train is not None or config.n_test is not None:
    reductions.append(f"data subsets n_train={config.n_train}, n_test={config.n_test}")
  if config.hidden != Config.hidden or config.norm != Config.norm:
    reductions.append(f"network {config.model().sizes} with norm {config.norm!r}, not F1")
  if config.n_members < 5:
    reductions.append(f"{config.n_members} seeds per regime, not 5")
  if not reductions:
    return (f"full protocol: SB {config.small_batch_epochs} epochs, LB "
            f"{config.large_batch_epochs} epochs, f over the whole training set (the paper "
            "trains to convergence)")
  return f"reduced-scale run: {'; '.join(reductions)}; paper trains to convergence"


def train_config(config, regime):
  batch, epochs = ((config.small_batch, config.small_batch_epochs) if regime == "SB"
                   else (config.large_batch, config.large_batch_epochs))
  return ensemble.TrainConfig(
      model=config.model(), optimizer=config.optimizer,
      optimizer_kwargs={"learning_rate": config.learning_rate}, n_members=config.n_members,
      batch_size=batch, epochs=epochs, seed=config.seed, keep="last")


def run(config, workdir):
  """Trains both regimes, measures them, writes the artefacts; returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  splits = data_lib.load_mnist(config.data_source, val_fraction=0.0, data_dir=config.data_dir)
  splits = data_lib.subset(splits, config.n_train, 0, config.n_test)
  # The test set rides along as the validation split only to log test accuracy per epoch;
  # keep="last" means it selects nothing.
  train_data = data_lib.Splits(splits.train, splits.test, splits.test)
  x_train, y_train = jnp.asarray(splits.train.x), jnp.asarray(splits.train.y)
  x_test, y_test = jnp.asarray(splits.test.x), jnp.asarray(splits.test.y)
  n_train = int(x_train.shape[0])
  n_sharp = n_train if config.sharpness_n_train is None else min(config.sharpness_n_train,
                                                                  n_train)
  sharp_data = (x_train[:n_sharp], y_train[:n_sharp])
  note = scale_note(config, n_train)
  logging.info(note)

  regimes, trained, metrics = {}, {}, []
  for regime in REGIMES:
    cfg = train_config(config, regime)
    with reporting.Stopwatch() as train_time:
      result = ensemble.train(cfg, train_data)
      jax.block_until_ready(result.params)
    state = result.state
    if config.reestimate_bn:
      state = _reestimate(cfg.model, result.params, result.state, x_train,
                          config.bn_batch_size)
    trained[regime] = (result.params, state)
    metrics += reporting.history_rows(
        {name.replace("val_", "test_"): values for name, values in result.history.items()},
        run=regime)
    regimes[regime] = _measure_regime(config, cfg, result, state, train_time.seconds,
                                      (x_train, y_train), (x_test, y_test), sharp_data)
    logging.info("%s: trained in %.1f s, sharpness in %.1f s", regime, train_time.seconds,
                 regimes[regime]["sharpness_seconds_including_compile"])

  lb_params, lb_state = trained["LB"]
  timing = _time_full_space(config, _member(lb_params, 0), _member(lb_state, 0),
                            (x_train, y_train))
  with reporting.Stopwatch() as interp_time:
    interpolation = _interpolation(config, trained, (x_train, y_train), (x_test, y_test))
  interpolation["seconds"] = interp_time.seconds

  summary = {
      "experiment": "E4: large batches find sharp minima (Keskar et al. 2017), F1 on MNIST",
      "scale": note,
      "config": config,
      "n_train": n_train,
      "n_test": int(x_test.shape[0]),
      "sharpness_n_train": n_sharp,
      "bn_statistics": (
          ("population statistics re-estimated on the training set after training (Ioffe & "
           "Szegedy Alg. 2)" if config.reestimate_bn else "the training's moving averages")
          + (", held fixed while the weights are perturbed" if config.bn_statistics == "fixed"
             else "; inside f, the batch statistics of f's chunk")),
      "solver": config.solver,
      "regimes": regimes,
      "paper": PAPER,
      "pattern": _pattern(regimes),
      "timing_full_space": timing,
      "interpolation": interpolation,
  }
  reporting.write_summary(workdir, summary)
  reporting.write_metrics(workdir, metrics)
  _plot_sharpness(config, regimes, os.path.join(workdir, "sharpness.png"))
  _plot_interpolation(interpolation, os.path.join(workdir, "interpolation.png"))
  _plot_curves(regimes, os.path.join(workdir, "curves.png"))
  return summary


def _member(tree, index):
  return jax.tree.map(lambda leaf: leaf[index], tree)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _reestimate(model_cfg, params, state, x, batch_size):
  """Every member's BN population statistics re-estimated on ``x``."""
  return jax.vmap(lambda p, s: nn.population_statistics(model_cfg, p, s, x, batch_size))(
      params, state)


@functools.partial(jax.jit, static_argnums=0)
def _ensemble_metrics(model_cfg, params, state, x, y):
  """Every member's eval-mode ``(mean cross-entropy, accuracy)``, as one compiled program."""
  return jax.vmap(lambda p, s: ensemble.evaluate(model_cfg, p, s, x, y))(params, state)


def _batch_bn_loss(model_cfg, state, params, x, y):
  """Mean cross-entropy with BN on the batch statistics of ``x``; ``state`` only feeds the
  moving averages, which are discarded."""
  logits, _ = nn.mlp_apply(model_cfg, params, state, x, train=True)
  return losses.log_loss_from_logits(logits, y)


def _loss_fn(model_cfg, state, bn_statistics):
  """``f``'s ``loss_fn(params, x, y)`` with the BN statistics held fixed or of the batch."""
  loss = ensemble.eval_loss if bn_statistics == "fixed" else _batch_bn_loss
  return functools.partial(loss, model_cfg, state)


@functools.partial(jax.jit, static_argnames=("model_cfg", "subspace_dim", "steps", "chunk_size",
                                             "bn_statistics"))
def _ensemble_sharpness(model_cfg, params, state, x, y, epsilon, key, *, subspace_dim, steps,
                        chunk_size, bn_statistics):
  """Frank-Wolfe ``keskar`` of every member; one compiled program serves both regimes and all
  epsilons."""
  def member(p, s):
    return sharpness.keskar(_loss_fn(model_cfg, s, bn_statistics), p, (x, y), epsilon=epsilon,
                            subspace_dim=subspace_dim, steps=steps, chunk_size=chunk_size,
                            key=key)
  return jax.vmap(member)(params, state)


def _protocol_sharpness(config, model_cfg, params, state, data, protocol):
  """``{setting: measure}`` of every member, ``protocol = (bn_statistics, solver)``."""
  bn_statistics, solver = protocol
  chunk_size = (config.chunk_size if bn_statistics == "fixed"
                else config.bn_chunk_size or int(data[1].shape[0]))
  key = jax.random.PRNGKey(config.sharpness_seed)
  n_members = len(jax.tree.leaves(params)[0])
  # Batch statistics never read the state, so one loss function (one compiled oracle) serves
  # every member of the host-side L-BFGS-B loop.
  shared_loss = _loss_fn(model_cfg, _member(state, 0), bn_statistics)
  measures = {}
  for name, epsilon, subspace_dim in _sharpness_settings(config):
    if solver == "frank_wolfe":
      out = _ensemble_sharpness(model_cfg, params, state, *data, jnp.float32(epsilon), key,
                                subspace_dim=subspace_dim, steps=config.sharpness_steps,
                                chunk_size=chunk_size, bn_statistics=bn_statistics)
      values, f0, fmax, n_passes = out.value, out.f0, out.fmax, out.n_passes
    else:  # L-BFGS-B runs on the host, one member at a time.
      outs = [sharpness.keskar(
          shared_loss if bn_statistics == "batch"
          else _loss_fn(model_cfg, _member(state, i), bn_statistics),
          _member(params, i), data, epsilon=epsilon, subspace_dim=subspace_dim,
          steps=config.sharpness_steps, chunk_size=chunk_size, key=key, solver=solver)
              for i in range(n_members)]
      values, f0, fmax = ([getattr(o, field) for o in outs] for field in ("value", "f0", "fmax"))
      n_passes = [o.n_passes for o in outs]
    measures[name] = {"epsilon": epsilon, "subspace_dim": subspace_dim,
                      "per_member": np.asarray(values, np.float64), "f0": np.asarray(f0),
                      "fmax": np.asarray(fmax), "solver": solver, "n_passes": n_passes,
                      "bn_statistics": bn_statistics, "chunk_size": chunk_size}
    measures[name].update(_mean_std(measures[name]["per_member"]))
  return measures


def _sharpness_settings(config):
  """``(name, epsilon, subspace_dim)`` of every sharpness measurement."""
  settings = [(f"full_{eps:g}", eps, None) for eps in config.epsilons]
  return settings + [(f"subspace_{config.subspace_epsilon:g}", config.subspace_epsilon,
                      config.subspace_dim)]


def _measure_regime(config, cfg, result, state, train_seconds, train, test, sharp_data):
  params, model = result.params, cfg.model
  train_loss, train_acc = map(np.asarray, _ensemble_metrics(model, params, state, *train))
  test_loss, test_acc = map(np.asarray, _ensemble_metrics(model, params, state, *test))
  _, moving_test_acc = _ensemble_metrics(model, params, result.state, *test)
  main = (config.bn_statistics, config.solver)
  protocols = list(dict.fromkeys([main, *PROTOCOLS])) if config.compare_protocols else [main]
  with reporting.Stopwatch() as timer:
    by_protocol = {"/".join(protocol): _protocol_sharpness(config, model, params, state,
                                                            sharp_data, protocol)
                   for protocol in protocols}
  test_per_epoch = np.asarray(result.history["val_accuracy"])
  per_member = {
      "train_loss": train_loss, "train_accuracy": 100 * train_acc,
      "test_loss": test_loss, "test_accuracy": 100 * test_acc,
      "test_accuracy_moving_average_bn": 100 * np.asarray(moving_test_acc),
      "best_test_accuracy_over_epochs": 100 * np.nanmax(test_per_epoch, axis=1),
  }
  return {
      "batch_size": cfg.batch_size, "epochs": cfg.epochs,
      "steps": cfg.epochs * (train[0].shape[0] // cfg.batch_size),
      "train_seconds_including_compile": train_seconds,
      "sharpness_seconds_including_compile": timer.seconds,
      "diverged": result.diverged,
      "metrics": {name: {"per_member": values, **_mean_std(values)}
                  for name, values in per_member.items()},
      "sharpness": by_protocol["/".join(main)],
      "protocols": by_protocol,
      "history": {"train_loss": result.history["train_loss"],
                  "test_accuracy": 100 * test_per_epoch},
  }


def _mean_std(values):
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1
          else 0.0}


def _time_full_space(config, params, state, data):
  """Wall time of one full-space ``keskar`` call against one forward-and-backward pass.

  The pass is what ``keskar`` repeats: value and gradient of the loss chunk by chunk, summed
  with ``mean_loss``'s weights. Both programs are compiled ahead, so no time includes
  compilation. On a shared machine the load drifts, so the pass is timed twice before and
  once after the ``keskar`` call (after one untimed warm-up) and its median is the unit.
  """
  model = config.model()

  def one_pass(p, s, x, y):
    # mean_loss averages whatever pytree the chunk function returns, here (value, gradient).
    chunk_value_and_grad = jax.value_and_grad(functools.partial(ensemble.eval_loss, model, s))
    return sharpness.mean_loss(chunk_value_and_grad, p, (x, y), chunk_size=config.chunk_size)

  def full_space(p, s, x, y):
    return sharpness.keskar(functools.partial(ensemble.eval_loss, model, s), p, (x, y),
                            epsilon=config.epsilons[0], steps=config.sharpness_steps,
                            chunk_size=config.chunk_size)

  args = (params, state, *data)
  pass_fn = jax.jit(one_pass).lower(*args).compile()
  keskar_fn = jax.jit(full_space).lower(*args).compile()

  reporting.seconds(pass_fn, *args)
  pass_seconds = [reporting.seconds(pass_fn, *args)[0], reporting.seconds(pass_fn, *args)[0]]
  keskar_seconds, result = reporting.seconds(keskar_fn, *args)
  pass_seconds.append(reporting.seconds(pass_fn, *args)[0])
  one_pass_seconds = statistics.median(pass_seconds)
  return {
      "member": "LB member 0", "n_examples": int(data[0].shape[0]),
      "epsilon": config.epsilons[0], "steps": config.sharpness_steps, "solver": result.solver,
      "n_passes": result.n_passes, "value": float(result.value),
      "keskar_seconds": keskar_seconds, "one_pass_seconds": one_pass_seconds,
      "one_pass_seconds_each": pass_seconds,
      "pass_equivalents": keskar_seconds / one_pass_seconds,
  }


@functools.partial(jax.jit, static_argnames=("model_cfg", "reestimate_bn", "bn_batch_size"))
def _interpolate(model_cfg, sb, lb, alphas, x_train, y_train, x_test, y_test, *,
                 reestimate_bn, bn_batch_size):
  """Train and test ``(loss, accuracy)`` at ``alpha x_LB + (1 - alpha) x_SB`` per ``alpha``."""
  def at(alpha):
    mix = lambda a, b: alpha * b + (1.0 - alpha) * a
    params = jax.tree.map(mix, sb[0], lb[0])
    state = jax.tree.map(mix, sb[1], lb[1])
    if reestimate_bn:
      state = nn.population_statistics(model_cfg, params, state, x_train, bn_batch_size)
    return (ensemble.evaluate(model_cfg, params, state, x_train, y_train)
            + ensemble.evaluate(model_cfg, params, state, x_test, y_test))
  return jax.lax.map(at, alphas)


def _interpolation(config, trained, train, test):
  alphas = np.linspace(*config.alpha_range, config.n_alphas)
  sb, lb = (_member(trained[regime], 0) for regime in REGIMES)
  train_loss, train_acc, test_loss, test_acc = map(np.asarray, _interpolate(
      config.model(), sb, lb, jnp.asarray(alphas, jnp.float32), *train, *test,
      reestimate_bn=config.reestimate_bn, bn_batch_size=config.bn_batch_size))
  bn = ("re-estimated on the training set at every α" if config.reestimate_bn
        else "moving averages interpolated along the line")
  return {"members": "member 0 of each regime", "bn_statistics": bn, "alpha": alphas,
          "train_loss": train_loss, "train_accuracy": 100 * train_acc,
          "test_loss": test_loss, "test_accuracy": 100 * test_acc}


def _pattern(regimes):
  """What a reproduction must show: LB sharper by >= 10x, and no better on the test set."""
  sb, lb = regimes["SB"], regimes["LB"]
  ratios = {name: lb["sharpness"][name]["mean"] / max(sb["sharpness"][name]["mean"], 1e-12)
            for name in sb["sharpness"]}
  gap = lambda name: sb["metrics"][name]["mean"] - lb["metrics"][name]["mean"]
  return {
      "sharpness_ratio_lb_over_sb": ratios,
      "lb_at_least_10x_sharper": {name: bool(r >= 10) for name, r in ratios.items()},
      "test_accuracy_gap_sb_minus_lb": gap("test_accuracy"),
      "lb_test_accuracy_not_higher": bool(gap("test_accuracy") >= 0),
      # Per-epoch test accuracies exist only with the training's moving-average BN statistics.
      "moving_average_bn_gap_sb_minus_lb": gap("test_accuracy_moving_average_bn"),
      "best_over_epochs_gap_sb_minus_lb": gap("best_test_accuracy_over_epochs"),
  }


def _fmt(mean, std, digits):
  return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def results_table(summary):
  """The markdown table of this run beside the paper's numbers."""
  regimes = summary["regimes"]
  rows = []
  metric_rows = (
      ("train accuracy (%)", "train_accuracy", 2),
      ("test accuracy (%)", "test_accuracy", 2),
      ("test accuracy, moving-average BN (%)", "test_accuracy_moving_average_bn", 2),
      ("best test accuracy over epochs, moving-average BN (%, oracle)",
       "best_test_accuracy_over_epochs", 2),
      ("train loss f(x)", "train_loss", 4))
  for label, name, digits in metric_rows:
    row = [label]
    for regime in REGIMES:
      stats = regimes[regime]["metrics"][name]
      row.append(_fmt(stats["mean"], stats["std"], digits))
      row.append(_fmt(*PAPER[name][regime], digits) if name in PAPER else "")
    rows.append(row)
  for name, measure in regimes["SB"]["sharpness"].items():
    space = "full space" if measure["subspace_dim"] is None else (
        f"subspace p={measure['subspace_dim']}")
    row = [f"sharpness, {space}, ε={measure['epsilon']:g}"]
    for regime in REGIMES:
      stats = regimes[regime]["sharpness"][name]
      row.append(_fmt(stats["mean"], stats["std"], 2))
      row.append(_fmt(*PAPER[name][regime], 2) if name in PAPER else "")
    rows.append(row)
  rows.append(["batch size / epochs / steps"] + [
      x for regime in REGIMES for x in (
          f"{regimes[regime]['batch_size']} / {regimes[regime]['epochs']} / "
          f"{regimes[regime]['steps']}", "256 / to convergence" if regime == "SB"
          else "6000 / to convergence")])
  return reporting.markdown_table(("E4 on MNIST, mean ± std over seeds", "SB (this run)", "SB (paper)",
                              "LB (this run)", "LB (paper)"), rows)


PROTOCOL_NAMES = {"fixed/frank_wolfe": "fixed BN, Frank-Wolfe",
                  "batch/frank_wolfe": "batch BN, Frank-Wolfe",
                  "batch/lbfgsb": "batch BN, L-BFGS-B (the paper's solver)",
                  "fixed/lbfgsb": "fixed BN, L-BFGS-B"}


def protocols_table(summary):
  """Sharpness under every measured protocol beside the paper, per regime and setting."""
  regimes = summary["regimes"]
  protocols = list(regimes["SB"]["protocols"])
  rows = []
  for regime in REGIMES:
    for name, measure in regimes[regime]["sharpness"].items():
      space = "full" if measure["subspace_dim"] is None else f"subspace p={measure['subspace_dim']}"
      row = [f"{regime}, {space}, ε={measure['epsilon']:g}"]
      for protocol in protocols:
        stats = regimes[regime]["protocols"][protocol][name]
        row.append(_fmt(stats["mean"], stats["std"], 2))
      row.append(_fmt(*PAPER[name][regime], 2) if name in PAPER else "")
      rows.append(row)
  headers = ["E4 sharpness, mean ± std over seeds",
             *(PROTOCOL_NAMES[protocol] for protocol in protocols), "paper"]
  return reporting.markdown_table(headers, rows)


def print_summary(summary):
  print(f"E4, Keskar et al. 2017 — {summary['scale']}")
  print(f"Train {summary['n_train']} images, test {summary['n_test']}; sharpness f = mean "
        f"training cross-entropy over {summary['sharpness_n_train']} training images; BN: "
        f"{summary['bn_statistics']}.\n")
  print(results_table(summary))
  if len(summary["regimes"]["SB"]["protocols"]) > 1:
    print()
    print(protocols_table(summary))
  pattern = summary["pattern"]
  ratios = ", ".join(f"{name} {ratio:.1f}x"
                     for name, ratio in pattern["sharpness_ratio_lb_over_sb"].items())
  sharper = ", ".join(f"{name} {'yes' if ok else 'no'}"
                      for name, ok in pattern["lb_at_least_10x_sharper"].items())
  print(f"\nLB/SB sharpness ratio of the means: {ratios}; LB at least 10x sharper: {sharper}")
  print(f"test accuracy SB - LB: {pattern['test_accuracy_gap_sb_minus_lb']:+.2f} points "
        f"(LB not higher: {'yes' if pattern['lb_test_accuracy_not_higher'] else 'no'}). With "
        f"the training's moving-average BN statistics (stale for LB, which takes few steps): "
        f"{pattern['moving_average_bn_gap_sb_minus_lb']:+.2f} points after the last epoch, "
        f"{pattern['best_over_epochs_gap_sb_minus_lb']:+.2f} at the best epoch (oracle early "
        f"stopping)")
  timing = summary["timing_full_space"]
  each = ", ".join(f"{t:.3f}" for t in timing["one_pass_seconds_each"])
  print(f"\nfull-space sharpness of one F1 member on all {timing['n_examples']} training "
        f"images, ε={timing['epsilon']:g}, {timing['steps']} {timing['solver']} steps: "
        f"n_passes = {timing['n_passes']} full forward-and-backward passes (limit 25); wall "
        f"time {timing['keskar_seconds']:.2f} s; one pass {timing['one_pass_seconds']:.3f} s; "
        f"ratio {timing['pass_equivalents']:.1f} pass-equivalents (compiled ahead, "
        f"compilation excluded; passes timed {each} s around the call); value "
        f"{timing['value']:.2f}")
  seconds = {regime: (summary["regimes"][regime]["train_seconds_including_compile"],
                      summary["regimes"][regime]["sharpness_seconds_including_compile"])
             for regime in REGIMES}
  print("training / sharpness seconds including compilation: " + "; ".join(
      f"{regime} {t:.0f} / {s:.0f}" for regime, (t, s) in seconds.items())
        + f"; interpolation {summary['interpolation']['seconds']:.0f} s")
  print(f"[{summary['scale']}]")


def _plot_sharpness(config, regimes, path):
  names = list(regimes["SB"]["sharpness"])
  fig, ax = plt.subplots(figsize=(7, 4.2))
  floor = 1e-4  # A value of 0 (no ascent step helped) is drawn at the floor of the log axis.
  for offset, regime, color in ((-0.15, "SB", "C0"), (0.15, "LB", "C3")):
    for i, name in enumerate(names):
      stats = regimes[regime]["sharpness"][name]
      values = np.maximum(stats["per_member"], floor)
      ax.scatter(np.full(values.shape, i + offset), values, color=color, alpha=0.5, s=14)
      ax.errorbar(i + offset + 0.05, max(stats["mean"], floor), yerr=stats["std"], fmt="o",
                  color=color, capsize=3, label=f"{regime} mean ± std" if i == 0 else None)
      if name in PAPER:
        ax.scatter(i + offset - 0.05, PAPER[name][regime][0], marker="*", s=90,
                   facecolors="none", edgecolors=color,
                   label=f"{regime} paper" if i == 0 else None)
  labels = [f"full, ε={regimes['SB']['sharpness'][n]['epsilon']:g}"
            if regimes["SB"]["sharpness"][n]["subspace_dim"] is None else
            f"subspace p={config.subspace_dim}, ε={regimes['SB']['sharpness'][n]['epsilon']:g}"
            for n in names]
  ax.set_xticks(range(len(names)), labels)
  ax.set_yscale("log")
  ax.set_ylabel("Keskar sharpness φ")
  ax.set_title("sharpness of F1 minima: small batch vs large batch")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot_interpolation(interpolation, path):
  alphas = interpolation["alpha"]
  fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
  for split, color in (("train", "C0"), ("test", "C1")):
    loss_ax.plot(alphas, interpolation[f"{split}_loss"], "o-", ms=3, color=color, label=split)
    acc_ax.plot(alphas, interpolation[f"{split}_accuracy"], "o-", ms=3, color=color, label=split)
  loss_ax.set_yscale("log")
  loss_ax.set_ylabel("cross-entropy")
  acc_ax.set_ylabel("accuracy (%)")
  for ax in (loss_ax, acc_ax):
    for alpha, name in ((0.0, "SB"), (1.0, "LB")):
      ax.axvline(alpha, color="gray", linestyle=":")
      ax.text(alpha, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom")
    ax.set_xlabel("α in α·x_LB + (1 − α)·x_SB")
    ax.legend()
  fig.suptitle(f"{interpolation['members']}; BN statistics {interpolation['bn_statistics']}",
               y=1.02)
  fig.tight_layout()
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)


def _plot_curves(regimes, path):
  fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
  for regime, color in (("SB", "C0"), ("LB", "C3")):
    history = regimes[regime]["history"]
    reporting.plot_members(loss_ax, history["train_loss"], regime, color=color)
    reporting.plot_members(acc_ax, history["test_accuracy"], regime, color=color)
  loss_ax.set_yscale("log")
  loss_ax.set_ylabel("training cross-entropy (epoch mean, batch statistics)")
  acc_ax.set_ylabel("test accuracy (%, moving-average BN)")
  for ax in (loss_ax, acc_ax):
    ax.set_xlabel("epoch")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  app.main("sharpness_batch_size", Config, run, print_summary)
