"""jaxens.select against numpy transcriptions of the AutoML libraries' selection loops, and its
AutoML options: use_best, tie breakers and tolerance, sample weights, subsamples, log-loss
clipping and renormalisation, binary pools, regression with k outputs, MAE and pinball.

Nothing is vendored and nothing needs the network: the two loops below are transcribed by
hand, each names its source file and version. Their only stubs are the metric (a numpy loss
given to the loop) and, where ties are decided, the random choice (the first tied index).
"""

from collections import Counter

import jax
import numpy as np
import pytest

from jaxens import select
from test_select import random_pool

EPS64 = float(np.finfo(np.float64).eps)  # the AutoML libraries' clip, about 2.2e-16


class FirstChoice:
  """Stands in for ``np.random.RandomState`` in the loops: ``choice`` takes the first tied
  index, so a tie is decided like ``tie_breaker="first"`` (after AutoGluon's used-model
  preference, like ``"fewest_models"``)."""

  @staticmethod
  def choice(candidates):
    return candidates[0]


def autosklearn_fast(predictions, labels, ensemble_size, metric, rand):
  """auto-sklearn's ``EnsembleSelection._fast`` and ``_calculate_weights``, transcribed from
  ``autosklearn/ensembles/ensemble_selection.py`` (auto-sklearn 0.15.0). ``calculate_losses``
  is the stub ``metric(labels, prediction)``. Returns (order, trajectory, weights)."""
  ensemble, trajectory, order = [], [], []
  weighted_ensemble_prediction = np.zeros(predictions[0].shape, dtype=np.float64)
  fant_ensemble_prediction = np.zeros(weighted_ensemble_prediction.shape, dtype=np.float64)
  for _ in range(ensemble_size):
    losses = np.zeros((len(predictions)), dtype=np.float64)
    s = len(ensemble)
    if s > 0:
      np.add(weighted_ensemble_prediction, ensemble[-1], out=weighted_ensemble_prediction)
    for j, pred in enumerate(predictions):
      np.add(weighted_ensemble_prediction, pred, out=fant_ensemble_prediction)
      np.multiply(fant_ensemble_prediction, (1.0 / float(s + 1)), out=fant_ensemble_prediction)
      losses[j] = metric(labels, fant_ensemble_prediction)
    all_best = np.argwhere(losses == np.nanmin(losses)).flatten()
    best = rand.choice(all_best)
    ensemble.append(predictions[best])
    trajectory.append(losses[best])
    order.append(best)
    if len(predictions) == 1:
      break
  weights = np.zeros((len(predictions),), dtype=np.float64)
  for member, count in Counter(order).most_common():
    weights[member] = float(count) / ensemble_size
  if np.sum(weights) < 1:
    weights = weights / np.sum(weights)
  return np.array(order), np.array(trajectory), weights


def autogluon_fit(predictions, labels, ensemble_size, metric, random_state, use_best,
                  multiclass):
  """AutoGluon's ``EnsembleSelection._fit`` and ``_calculate_weights``, transcribed from
  ``autogluon/core/models/greedy_ensemble/ensemble_selection.py`` (AutoGluon 1.1; without a
  subsample, a time limit or the ``"second_metric"`` tie breaker). ``_calculate_regret`` is
  the stub ``metric(labels, prediction)``. Returns (order, trajectory, weights)."""
  ensemble, trajectory, order, used_models = [], [], [], set()
  round_scores, epsilon, round_decimals = False, 1e-4, 6
  ensemble_prediction = np.zeros(predictions[0].shape)
  weighted_ensemble_prediction = np.zeros(predictions[0].shape)
  fant_ensemble_prediction = np.zeros(predictions[0].shape)
  for i in range(ensemble_size):
    scores = np.zeros((len(predictions)))
    s = len(ensemble)
    if s != 0:
      ensemble_prediction *= (s - 1) / s
      ensemble_prediction += ensemble[-1] / s
      weighted_ensemble_prediction[:] = (s / float(s + 1)) * ensemble_prediction
    for j, pred in enumerate(predictions):
      fant_ensemble_prediction[:] = weighted_ensemble_prediction + (1.0 / float(s + 1)) * pred
      if multiclass:  # Renormalize
        fant_ensemble_prediction /= fant_ensemble_prediction.sum(axis=1)[:, np.newaxis]
      scores[j] = metric(labels, fant_ensemble_prediction)
      if round_scores:
        scores[j] = scores[j].round(round_decimals)
    all_best = np.argwhere(scores == np.nanmin(scores)).flatten()
    if (len(all_best) > 1) and used_models:
      new_all_best = [m for m in all_best if m in used_models]
      if new_all_best:
        all_best = new_all_best
    best = random_state.choice(all_best)
    best_score = scores[best]
    if i == 0 and np.abs(best_score) > epsilon:
      round_scores = True
      best_score = best_score.round(round_decimals)
    ensemble.append(predictions[best])
    trajectory.append(best_score)
    order.append(best)
    used_models.add(best)
    if len(predictions) == 1:
      break
  first_index_of_best = trajectory.index(np.min(trajectory))
  if use_best:
    order, trajectory = order[:first_index_of_best + 1], trajectory[:first_index_of_best + 1]
    ensemble_size = first_index_of_best + 1
  weights = np.zeros((len(predictions),), dtype=float)
  for member, count in Counter(order).most_common():
    weights[member] = float(count) / ensemble_size
  if np.sum(weights) < 1:
    weights = weights / np.sum(weights)
  return np.array(order), np.array(trajectory), weights


def numpy_metric(loss, *, clip=1e-8, renormalise=False, quantile=0.5, sample_weight=None):
  """``metric(labels, prediction)`` of one ensemble, float64 numpy."""

  def mean(per_sample):
    if sample_weight is None:
      return np.mean(per_sample)
    return np.sum(sample_weight * per_sample) / np.sum(sample_weight)

  def metric(labels, pred):
    if loss in ("log_loss", "accuracy") and pred.ndim == 1:  # binary: P(class 1)
      pred = np.stack([1 - pred, pred], axis=-1)
    if loss == "log_loss":
      probs = np.clip(pred, clip, 1 - clip)
      if renormalise:
        probs = probs / probs.sum(axis=-1, keepdims=True)
      return mean(-np.log(probs[np.arange(len(labels)), labels]))
    if loss == "accuracy":
      return mean(np.argmax(pred, axis=-1) != labels)
    error = (pred - labels).reshape(len(labels), -1)
    per_value = {"mse": error**2, "mae": np.abs(error),
                 "pinball": np.maximum((1 - quantile) * error, -quantile * error)}[loss]
    return mean(per_value.mean(axis=1))

  return metric


def sharp_pool(seed, n_models=6, n_samples=40, n_classes=3):
  """Probabilities with exact zeros and ones, where the clip bound decides."""
  preds, y = random_pool(seed, n_models, n_samples, n_classes)
  preds = np.where(preds < 0.05, 0.0, preds)
  return preds / preds.sum(axis=-1, keepdims=True), y


def regression_pool(seed, n_outputs=None, n_models=6, n_samples=40):
  rng = np.random.default_rng(seed)
  shape = (n_samples,) if n_outputs is None else (n_samples, n_outputs)
  y = rng.normal(size=shape)
  scales = rng.uniform(0.3, 2.0, size=(n_models,) + (1,) * len(shape))
  return y[None] + scales * rng.normal(size=(n_models,) + shape), y


WEIGHTS = np.random.default_rng(99).uniform(0, 2, size=40)
WEIGHTS[:5] = 0.0

# (pool, loss, greedy options also given to the numpy metric)
AUTOSKLEARN_CASES = {
    "log_loss_clip_eps": (lambda: sharp_pool(0), "log_loss", dict(clip=EPS64)),
    "log_loss_renormalised": (lambda: sharp_pool(1), "log_loss",
                              dict(clip=1e-3, renormalise=True)),
    "log_loss_binary": (lambda: (random_pool(2, 6, 40, 2)[0][..., 1],
                                 random_pool(2, 6, 40, 2)[1]), "log_loss", {}),
    "log_loss_weighted": (lambda: random_pool(3, 6, 40), "log_loss",
                          dict(sample_weight=WEIGHTS)),
    "accuracy_weighted": (lambda: random_pool(4, 6, 40), "accuracy",
                          dict(sample_weight=WEIGHTS)),
    "mse_2_outputs": (lambda: regression_pool(5, 2), "mse", {}),
    "mae_weighted": (lambda: regression_pool(6), "mae", dict(sample_weight=WEIGHTS)),
    "pinball_0.9_3_outputs": (lambda: regression_pool(7, 3), "pinball", dict(quantile=0.9)),
}


@pytest.mark.parametrize("case", list(AUTOSKLEARN_CASES))
def test_matches_autosklearn_fast(case):
  make_pool, loss, options = AUTOSKLEARN_CASES[case]
  preds, y = make_pool()
  preds = np.concatenate([preds, preds[1:2]])  # a copy of model 1: exact ties, to index 1
  ensemble_size = 12
  order, trajectory, weights = autosklearn_fast(
      list(preds), y, ensemble_size, numpy_metric(loss, **options), FirstChoice())
  with jax.enable_x64(True):
    sel = select.greedy(preds, y, loss=loss, max_iter=ensemble_size - 1, **options)
    np.testing.assert_array_equal(np.concatenate([sel.init, sel.order]), order)
    np.testing.assert_allclose(sel.loss, trajectory, rtol=1e-12)
    np.testing.assert_allclose(sel.final_weights, weights, rtol=1e-14)
  assert preds.shape[0] - 1 not in order  # the copy loses every tie


AUTOGLUON_CASES = {
    # AutoGluon renormalises the mean rows; the stub metric clips and renormalises again, as
    # scikit-learn's log_loss up to 1.4 did with its default eps=1e-15.
    "log_loss": (lambda: random_pool(10, 6, 40), "log_loss",
                 dict(clip=1e-15, renormalise=True), True),
    "accuracy": (lambda: random_pool(11, 6, 40), "accuracy", {}, True),
    "mse": (lambda: regression_pool(12), "mse", {}, False),
}


@pytest.mark.parametrize("use_best", [True, False])
@pytest.mark.parametrize("case", list(AUTOGLUON_CASES))
def test_matches_autogluon_ensemble_selection(case, use_best):
  make_pool, loss, options, multiclass = AUTOGLUON_CASES[case]
  preds, y = make_pool()
  # Model 6 is a copy of model 2, tied with it at every step. Accuracy also ties distinct
  # models often: there AutoGluon's used-model preference picks models that "first" would
  # not (4 2 4 2 ... against 4 2 4 2 4 2 0 ...).
  preds = np.concatenate([preds, preds[2:3]])
  ensemble_size = 15
  order, trajectory, weights = autogluon_fit(
      list(preds), y, ensemble_size, numpy_metric(loss, **options), FirstChoice(), use_best,
      multiclass)
  with jax.enable_x64(True):
    # AutoGluon rounds scores to 6 decimals after the first pick: a 1e-6 tolerance ties
    # the same candidates on these pools.
    sel = select.greedy(preds, y, loss=loss, max_iter=ensemble_size - 1, use_best=use_best,
                        tie_breaker="fewest_models", tie_tolerance=1e-6, **options)
    picks = np.concatenate([sel.init, sel.order])
    best_step = int(sel.best_step)
    assert best_step == (len(order) - 1 if use_best else ensemble_size - 1)
    np.testing.assert_array_equal(picks[:best_step + 1], order)
    np.testing.assert_allclose(sel.loss[:best_step + 1], trajectory, rtol=0, atol=6e-7)
    np.testing.assert_allclose(sel.final_weights, weights, rtol=1e-14)
