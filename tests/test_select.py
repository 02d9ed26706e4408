"""Tests of jaxens.select: the scan against a literal loop, properties, the E1 toy, errors."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxens import losses
from jaxens import select

CLIP = 1e-8


def reference_greedy(preds, y, *, loss, init_size=1, replacement=True, max_iter=10,
                     penalty=None, penalty_weight=0.0):
  """The published loop, literally: Python loops over steps and over candidate models.

  The running mean follows p <- (k p + p_new) / (k + 1); a candidate replaces the best
  only if strictly better, so ties go to the lowest index. Returns (order, weights, loss).
  """
  n_models, n_samples = preds.shape[:2]
  penalty = np.zeros(n_models) if penalty is None else penalty

  def loss_of(p):
    if loss == "log_loss":
      return -np.mean(np.log(np.clip(p[np.arange(n_samples), y], CLIP, 1 - CLIP)))
    if loss == "accuracy":
      return 1.0 - np.mean(np.argmax(p, axis=-1) == y)
    return np.mean((p - y) ** 2)

  def score(p, members):
    return loss_of(p) + penalty_weight * np.mean(penalty[members])

  single = [score(preds[m], [m]) for m in range(n_models)]
  ensemble = sorted(range(n_models), key=lambda m: single[m])[:init_size]  # stable sort
  mean_pred = np.mean(preds[ensemble], axis=0)
  path_loss = [score(mean_pred, ensemble)]
  pool = list(range(n_models)) if replacement else [
      m for m in range(n_models) if m not in ensemble]
  n_steps = max_iter if replacement else min(n_models - init_size, max_iter)
  order = []
  for _ in range(n_steps):
    k = len(ensemble)
    best, best_score = None, np.inf
    for m in pool:
      candidate_score = score((k * mean_pred + preds[m]) / (k + 1), ensemble + [m])
      if candidate_score < best_score:
        best, best_score = m, candidate_score
    mean_pred = (k * mean_pred + preds[best]) / (k + 1)
    ensemble.append(best)
    order.append(best)
    path_loss.append(best_score)
    if not replacement:
      pool.remove(best)
  sizes = np.arange(init_size, init_size + n_steps + 1)
  weights = np.stack([
      np.bincount(ensemble[:size], minlength=n_models) / size for size in sizes])
  return np.array(order, int), weights, np.array(path_loss)


def random_pool(seed, n_models=7, n_samples=40, n_classes=4, regression=False):
  rng = np.random.default_rng(seed)
  if regression:
    return rng.normal(size=(n_models, n_samples)), rng.normal(size=n_samples)
  logits = 2.0 * rng.normal(size=(n_models, n_samples, n_classes))
  probs = np.exp(logits) / np.sum(np.exp(logits), axis=-1, keepdims=True)
  return probs, rng.integers(0, n_classes, size=n_samples)


@pytest.mark.parametrize("loss", ["log_loss", "accuracy", "mse"])
@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("init_size", [1, 3])
def test_matches_published_loop(loss, replacement, init_size):
  preds, y = random_pool(init_size + 10 * replacement, regression=loss == "mse")
  kwargs = dict(loss=loss, init_size=init_size, replacement=replacement, max_iter=12)
  order, weights, path_loss = reference_greedy(preds, y, **kwargs)
  with jax.enable_x64(True):  # float64 on both sides, so rounding cannot flip a near-tie
    sel = select.greedy(preds, y, **kwargs)
    np.testing.assert_array_equal(sel.order, order)
    np.testing.assert_allclose(sel.weights, weights, rtol=1e-12)
    # The error rate is an exact count divided in float64, like the loop's.
    np.testing.assert_allclose(sel.loss, path_loss, rtol=1e-10)
    np.testing.assert_array_equal(sel.final_weights, sel.weights[-1])
  assert sel.n_steps == len(order)


def test_second_call_does_not_recompile():
  preds, y = random_pool(11)
  select.greedy(preds, y, max_iter=4)
  cache_size = select._greedy_jit._cache_size()
  other_preds, other_y = random_pool(12)
  select.greedy(other_preds, other_y, max_iter=4)
  assert select._greedy_jit._cache_size() == cache_size


def test_accuracy_ties_go_to_lowest_index():
  # Model 0 is a copy of model 2 and model 1 of model 3: every step ties in pairs.
  preds, y = random_pool(5, n_models=4, n_samples=30)
  preds[2], preds[3] = preds[0], preds[1]
  sel = select.greedy(preds, y, loss="accuracy", max_iter=20)
  assert set(np.asarray(sel.order).tolist()) <= {0, 1}
  assert int(sel.init[0]) in (0, 1)


@pytest.mark.parametrize("loss", ["log_loss", "mse"])
def test_penalty_matches_published_loop(loss):
  preds, y = random_pool(3, regression=loss == "mse")
  penalty = np.random.default_rng(4).uniform(0, 1, size=preds.shape[0])
  kwargs = dict(loss=loss, init_size=2, max_iter=10, penalty=penalty, penalty_weight=0.3)
  order, weights, path_loss = reference_greedy(preds, y, **kwargs)
  with jax.enable_x64(True):
    sel = select.greedy(preds, y, **kwargs)
    np.testing.assert_array_equal(sel.order, order)
    np.testing.assert_allclose(sel.weights, weights, rtol=1e-12)
    np.testing.assert_allclose(sel.loss, path_loss, rtol=1e-10)


def test_custom_loss_equals_named_loss():
  preds, y = random_pool(6)
  named = select.greedy(preds, y, loss="log_loss", max_iter=8)
  custom = select.greedy(preds, y, loss=losses.log_loss, max_iter=8)
  np.testing.assert_array_equal(custom.order, named.order)
  np.testing.assert_allclose(custom.loss, named.loss, rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_error_rate_equals_one_minus_argmax_accuracy_with_ties(seed):
  # Sums on a coarse grid tie often, so the lowest-class rule is exercised in both directions.
  rng = np.random.default_rng(seed)
  n_models, n_samples, n_classes = 6, 200, 5
  sums = rng.integers(0, 3, (n_models, n_samples, n_classes)).astype(np.float32) / 2
  y = rng.integers(0, n_classes, n_samples)
  rows = select._scoring_pool("accuracy", jnp.asarray(sums), jnp.asarray(y))
  # The error rate is the exact count of wrong arg-maxes divided by N, rounded once.
  n_wrong = np.sum(np.argmax(sums, axis=-1) != y, axis=-1)
  np.testing.assert_array_equal(select._error_rate(rows, jnp.asarray(y)),
                                (n_wrong / n_samples).astype(np.float32))


@pytest.mark.parametrize("n_samples", [1, 3, 8, 37])
@pytest.mark.parametrize("size", [1, 3])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_grouped_log_loss_equals_the_direct_formula(n_samples, size, dtype, rtol):
  # Models 0 and 1 put candidate means at 0 and 1, the clip bounds; with size 1 every factor
  # of model 0 is 1e-8, a group's product 1e-32. 1, 3 and 37 samples leave rows outside the
  # groups of 4.
  rng = np.random.default_rng(n_samples)
  pool = rng.uniform(size=(5, n_samples)).astype(dtype)
  pool[0], pool[1] = 0.0, 1.0
  running_sum = (size - 1) * rng.integers(0, 2, size=n_samples).astype(dtype)
  with jax.enable_x64(dtype == np.float64):
    expected = losses.log_loss_true_class((running_sum[None] + pool) / size)
    got = select._grouped_log_loss(jnp.asarray(pool.T), jnp.asarray(running_sum),
                                   jnp.asarray(size, dtype), jnp.asarray(losses.PROB_CLIP, dtype))
    # Rounding a product of factors near 1 is an absolute error of its log, hence atol.
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_log_group_products_stay_normal_numbers(dtype):
  group = select._log_group(dtype)
  assert group == 1 or losses.PROB_CLIP ** group >= jnp.finfo(dtype).tiny
  assert group == (1 if dtype == jnp.float16 else 4)


def test_nan_scores_never_win():
  preds, y = random_pool(7, n_models=5, regression=True)
  preds[2] += 1000.0  # every ensemble holding model 2 scores NaN below
  nan_above_100 = lambda p, t: jnp.where(jnp.max(p) > 100, jnp.nan, jnp.mean((p - t) ** 2))
  sel = select.greedy(preds, y, loss=nan_above_100, max_iter=6)
  assert 2 not in np.asarray(sel.order).tolist() and int(sel.init[0]) != 2
  assert np.all(np.isfinite(sel.loss))


def ensemble_score(preds, y, weights, loss, penalty, penalty_weight):
  mean_pred = jnp.einsum("m,m...->...", weights, preds)
  value = {"log_loss": lambda: losses.log_loss(mean_pred, y),
           "accuracy": lambda: 1.0 - losses.accuracy(mean_pred, y),
           "mse": lambda: losses.mse(mean_pred, y)}[loss]()
  return value + penalty_weight * jnp.dot(weights, penalty)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    seed=st.integers(0, 2**16), n_models=st.integers(1, 6), n_samples=st.integers(1, 20),
    loss=st.sampled_from(["log_loss", "accuracy", "mse"]), replacement=st.booleans(),
    init_fraction=st.floats(0, 1), max_iter=st.integers(0, 8),
    penalty_weight=st.sampled_from([0.0, 0.5]))
def test_weights_and_loss_describe_the_same_ensemble(
    seed, n_models, n_samples, loss, replacement, init_fraction, max_iter, penalty_weight):
  preds, y = random_pool(seed, n_models, n_samples, 3, regression=loss == "mse")
  preds, y = jnp.asarray(preds, jnp.float32), jnp.asarray(y)
  penalty = jnp.asarray(np.random.default_rng(seed).uniform(size=n_models), jnp.float32)
  init_size = 1 + round(init_fraction * (n_models - 1))
  sel = select.greedy(preds, y, loss=loss, init_size=init_size, replacement=replacement,
                      max_iter=max_iter, penalty=penalty, penalty_weight=penalty_weight)
  n_steps = max_iter if replacement else min(n_models - init_size, max_iter)
  assert sel.n_steps == n_steps
  assert sel.weights.shape == (n_steps + 1, n_models) and sel.order.shape == (n_steps,)
  weights = np.asarray(sel.weights)
  assert np.all(weights >= 0)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
  if not replacement:
    counts = np.rint(weights * (init_size + np.arange(n_steps + 1))[:, None])
    assert np.all(counts <= 1)
  expected = jax.vmap(lambda w: ensemble_score(preds, y, w, loss, penalty, penalty_weight))(
      sel.weights)
  np.testing.assert_allclose(sel.loss, expected, rtol=2e-5, atol=2e-6)


@hypothesis.settings(max_examples=8, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), loss=st.sampled_from(["log_loss", "accuracy"]),
                  replacement=st.booleans(), init_size=st.integers(1, 3))
def test_one_bag_over_the_whole_pool_equals_no_bagging(seed, loss, replacement, init_size):
  preds, y = random_pool(seed, n_models=5, n_samples=20, n_classes=3)
  kwargs = dict(loss=loss, init_size=init_size, replacement=replacement, max_iter=6)
  plain = select.greedy(preds, y, **kwargs)
  bagged = select.greedy(preds, y, n_bags=1, bag_fraction=1.0, seed=seed, **kwargs)
  assert bagged.n_steps == plain.n_steps
  np.testing.assert_array_equal(bagged.order[0], plain.order)
  np.testing.assert_array_equal(bagged.init[0], plain.init)
  np.testing.assert_array_equal(bagged.weights[0], plain.weights)
  np.testing.assert_allclose(bagged.loss[0], plain.loss, rtol=1e-6)
  np.testing.assert_allclose(bagged.final_weights, plain.final_weights, rtol=1e-6)


def test_bags_select_inside_their_bag():
  preds, y = random_pool(2, n_models=10)
  # Without replacement every member of a 3-model bag gets picked in 2 steps.
  kwargs = dict(replacement=False, max_iter=5)
  sel = select.greedy(preds, y, n_bags=6, bag_fraction=0.3, seed=1, **kwargs)
  assert sel.n_steps == 2
  assert sel.weights.shape == (6, 3, 10) and sel.order.shape == (6, 2)
  bags = []
  for bag in range(6):
    members = np.flatnonzero(sel.weights[bag, -1])
    assert len(members) == 3
    bags.append(tuple(members))
    # Each bag's path is a plain selection on its sub-pool, in pool indices.
    sub = select.greedy(preds[members], y, **kwargs)
    np.testing.assert_array_equal(members[np.asarray(sub.init)], sel.init[bag])
    np.testing.assert_array_equal(members[np.asarray(sub.order)], sel.order[bag])
    np.testing.assert_allclose(sub.loss, sel.loss[bag], rtol=1e-6)
  assert len(set(bags)) > 1
  np.testing.assert_allclose(sel.final_weights, np.mean(sel.weights[:, -1], axis=0))
  np.testing.assert_allclose(np.sum(sel.final_weights), 1.0, rtol=1e-6)


def toy_pool(n_models=10, n_samples=10_000, seed=0):
  variances = np.linspace(10.0, 1.0, n_models)
  noise = jax.random.normal(jax.random.key(seed), (n_models, n_samples))
  return jnp.sqrt(jnp.asarray(variances, jnp.float32))[:, None] * noise, variances


def test_toy_greedy_approaches_min_variance_weights():
  preds, variances = toy_pool()
  y = jnp.zeros(preds.shape[1])
  closed_form = np.asarray(select.min_variance_weights(preds, y))
  sel = select.greedy(preds, y, loss="mse", max_iter=1000)
  # Measured: 0.0027; a selector twice as far off fails.
  assert np.sum(np.abs(np.asarray(sel.final_weights) - closed_form)) <= 0.004
  # The empirical closed form is near the population one, w_i proportional to 1/sigma_i^2.
  population = (1 / variances) / np.sum(1 / variances)
  assert np.sum(np.abs(closed_form - population)) <= 0.05
  assert sel.loss[-1] < sel.loss[0]


def test_min_variance_weights_closed_form():
  # Orthogonal error rows make the second-moment matrix exactly diagonal.
  rng = np.random.default_rng(0)
  n_models, n_samples = 4, 64
  basis, _ = np.linalg.qr(rng.normal(size=(n_samples, n_models)))
  scales = np.array([1.0, 2.0, 0.5, 3.0])
  y = rng.normal(size=n_samples)
  preds = y[None, :] + scales[:, None] * basis.T * np.sqrt(n_samples)
  weights = np.asarray(select.min_variance_weights(preds, y))
  expected = (1 / scales**2) / np.sum(1 / scales**2)
  np.testing.assert_allclose(weights, expected, rtol=1e-4)


def test_min_variance_weights_minimise_mse():
  rng = np.random.default_rng(1)
  common = rng.normal(size=200)
  preds = np.stack([common + s * rng.normal(size=200) for s in (0.5, 1.0, 2.0)])
  preds = np.concatenate([preds, preds[:1]])  # a duplicate model: singular second moment
  y = np.zeros(200)
  weights = np.asarray(select.min_variance_weights(preds, y), np.float64)
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(weights[0], weights[3], rtol=1e-4)
  best = np.mean((weights @ preds) ** 2)
  for _ in range(20):
    direction = rng.normal(size=4)
    direction -= direction.mean()  # stays on sum(w) = 1
    assert best <= np.mean(((weights + 0.05 * direction) @ preds) ** 2) + 1e-6


def test_zero_penalty_weight_is_plain_greedy():
  preds, y = random_pool(8)
  penalty = np.random.default_rng(8).uniform(size=preds.shape[0])
  plain = select.greedy(preds, y, init_size=2, max_iter=10)
  penalised = select.greedy(preds, y, init_size=2, max_iter=10, penalty=penalty,
                            penalty_weight=0.0)
  for field in ("weights", "loss", "order", "init"):
    np.testing.assert_array_equal(getattr(penalised, field), getattr(plain, field))


def test_huge_penalty_weight_picks_the_least_penalised_model():
  preds, y = random_pool(9)
  penalty = np.random.default_rng(9).uniform(size=preds.shape[0])
  flattest = int(np.argmin(penalty))
  sel = select.greedy(preds, y, max_iter=6, penalty=penalty, penalty_weight=1e6)
  assert sel.init.tolist() == [flattest]
  assert np.asarray(sel.order).tolist() == [flattest] * 6
  np.testing.assert_array_equal(sel.final_weights, np.eye(preds.shape[0])[flattest])


def test_no_steps():
  preds, y = random_pool(1)
  sel = select.greedy(preds, y, init_size=3, max_iter=0)
  assert sel.n_steps == 0 and sel.order.shape == (0,) and sel.weights.shape == (1, 7)
  np.testing.assert_allclose(np.sort(sel.final_weights)[-3:], 1 / 3)


GOOD_PROBS, GOOD_LABELS = random_pool(0, n_models=3, n_samples=5, n_classes=3)


def _probs_with(index, value):
  probs = GOOD_PROBS.copy()
  probs[index] = value
  return probs


@pytest.mark.parametrize("kwargs, argument", [
    (dict(preds=_probs_with((0, 0, 0), np.nan)), "preds"),
    (dict(preds=_probs_with((0, 0, 0), 1.5)), "preds"),
    (dict(preds=_probs_with((0, 0, 0), -0.1)), "preds"),
    (dict(preds=GOOD_PROBS * 1.01), "preds"),
    (dict(preds=np.zeros((0, 5, 3))), "preds"),
    (dict(preds=GOOD_PROBS[0, 0]), "preds"),
    (dict(preds=GOOD_PROBS[..., None]), "preds"),
    (dict(loss="mse", preds=GOOD_PROBS[..., None]), "preds"),
    (dict(y=np.array([0, 1, 2, 3, 0])), "y"),
    (dict(y=np.array([0, 1, 2, -1, 0])), "y"),
    (dict(y=GOOD_LABELS[:4]), "y"),
    (dict(y=GOOD_LABELS.astype(float)), "y"),
    (dict(loss="hinge"), "loss"),
    (dict(loss=lambda p, y: jnp.mean(p, axis=0)), "loss"),
    (dict(init_size=0), "init_size"),
    (dict(init_size=4), "init_size"),
    (dict(max_iter=-1), "max_iter"),
    (dict(n_bags=0), "n_bags"),
    (dict(n_bags=2, bag_fraction=0.0), "bag_fraction"),
    (dict(bag_fraction=1.5), "bag_fraction"),
    (dict(penalty=np.ones(2), penalty_weight=1.0), "penalty"),
    (dict(penalty=np.array([1.0, np.inf, 0.0]), penalty_weight=1.0), "penalty"),
    (dict(penalty_weight=1.0), "penalty_weight"),
    (dict(penalty=np.ones(3), penalty_weight=-1.0), "penalty_weight"),
])
def test_bad_input_raises_value_error_naming_the_argument(kwargs, argument):
  args = dict(preds=GOOD_PROBS, y=GOOD_LABELS) | kwargs
  with pytest.raises(ValueError, match=f"^{argument}:"):
    select.greedy(args.pop("preds"), args.pop("y"), **args)


@pytest.mark.parametrize("preds, y, argument", [
    (np.ones((3, 4)), np.zeros(5), "y"),
    (np.ones(4), np.zeros(4), "preds"),
    (np.full((3, 4), np.inf), np.zeros(4), "preds"),
])
def test_min_variance_weights_bad_input(preds, y, argument):
  with pytest.raises(ValueError, match=f"^{argument}:"):
    select.min_variance_weights(preds, y)
