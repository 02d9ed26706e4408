import jax.numpy as jnp
import numpy as np
import pytest

from jaxens import losses

PROBS = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]])
LABELS = jnp.array([0, 1, 2])


def test_log_loss_from_probabilities_by_hand():
  # -(log 0.7 + log 0.1 + log 1e-8) / 3, the last clipped at 1e-8.
  expected = -(np.log(0.7) + np.log(0.1) + np.log(1e-8)) / 3
  np.testing.assert_allclose(losses.log_loss(PROBS, LABELS), expected, rtol=1e-6)


def test_log_loss_clips_without_renormalising():
  probs = jnp.array([[1.0, 0.0]])
  # In float32 the upper bound 1 - 1e-8 rounds to 1, so a certain, right answer costs 0.
  assert 0.0 <= float(losses.log_loss(probs, jnp.array([0]))) <= 1e-7
  np.testing.assert_allclose(losses.log_loss(probs, jnp.array([1]), eps=1e-4), -np.log(1e-4),
                             rtol=1e-6)


def test_log_loss_from_logits_by_hand():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
  log_z = np.log(np.exp(2.0) + 1.0 + np.exp(-1.0))
  expected = ((log_z - 2.0) + np.log(3.0)) / 2
  np.testing.assert_allclose(losses.log_loss_from_logits(logits, jnp.array([0, 2])), expected,
                             rtol=1e-6)


def test_accuracy_by_hand_with_ties_to_the_lowest_class():
  # Row 2 ties between classes 0 and 1: argmax gives 0, which is wrong for label 2.
  np.testing.assert_allclose(losses.accuracy(PROBS, LABELS), 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(losses.accuracy(PROBS, jnp.array([0, 2, 0])), 1.0)


def test_mse_and_brier_by_hand():
  np.testing.assert_allclose(losses.mse(jnp.array([1.0, 2.0, 4.0]), jnp.array([1.0, 0.0, 1.0])),
                             (0 + 4 + 9) / 3, rtol=1e-6)
  # (0.09 + 0.04 + 0.01 + 0.01 + 0.81 + 0.64 + 0.25 + 0.25 + 1.0) / 3
  np.testing.assert_allclose(losses.brier(PROBS, LABELS), 3.1 / 3, rtol=1e-6)


@pytest.mark.parametrize("metric", [losses.log_loss, losses.accuracy, losses.brier])
def test_leading_axes_broadcast_against_the_labels(metric):
  stacked = jnp.stack([PROBS, PROBS[::-1]])
  got = metric(stacked, LABELS)
  assert got.shape == (2,)
  np.testing.assert_allclose(got[0], metric(PROBS, LABELS), rtol=1e-6)
  np.testing.assert_allclose(got[1], metric(PROBS[::-1], LABELS), rtol=1e-6)


def _numpy_ece(probs, labels, n_bins):
  confidence, predicted = probs.max(-1), probs.argmax(-1)
  total = 0.0
  for b in range(n_bins):
    low, high = b / n_bins, (b + 1) / n_bins
    members = (confidence > low) & (confidence <= high) | ((b == 0) & (confidence == 0))
    if members.any():
      total += members.sum() / len(labels) * abs(
          (predicted[members] == labels[members]).mean() - confidence[members].mean())
  return total


def test_expected_calibration_error_by_hand_and_against_numpy():
  # Confidences 0.7 (right), 0.8 (wrong), 0.5 (wrong; ties to class 0). With 2 bins:
  # (0, 0.5] holds 0.5 -> |0 - 0.5|; (0.5, 1] holds 0.7 and 0.8 -> |1/2 - 0.75|.
  expected = 1 / 3 * 0.5 + 2 / 3 * 0.25
  np.testing.assert_allclose(losses.expected_calibration_error(PROBS, LABELS, n_bins=2),
                             expected, rtol=1e-6)
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(5) * 0.5, size=(3, 200)).astype(np.float32)
  labels = rng.integers(0, 5, 200)
  got = losses.expected_calibration_error(jnp.asarray(probs), jnp.asarray(labels))
  np.testing.assert_allclose(got, [_numpy_ece(p, labels, 15) for p in probs], rtol=1e-5)


def test_disagreement_and_pool_diversity_by_hand_and_against_numpy():
  other = jnp.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
  # Arg-maxes 0, 2, 0 against 1, 2, 0: one of three differs.
  np.testing.assert_allclose(losses.disagreement(PROBS, other), 1 / 3, rtol=1e-6)
  rng = np.random.default_rng(1)
  pool = rng.dirichlet(np.ones(4), size=(5, 50)).astype(np.float32)
  pairs = [np.mean(pool[a].argmax(-1) != pool[b].argmax(-1))
           for a in range(5) for b in range(a + 1, 5)]
  np.testing.assert_allclose(losses.pairwise_disagreement(jnp.asarray(pool)), np.mean(pairs),
                             rtol=1e-6)
  mean = pool.mean(0)
  kl = np.mean(np.sum(pool * (np.log(pool) - np.log(mean)), axis=-1))
  np.testing.assert_allclose(losses.mean_kl_to_ensemble(jnp.asarray(pool)), kl, rtol=1e-5)
  labels = rng.integers(0, 4, 50)
  onehot = np.eye(4)[labels]
  np.testing.assert_allclose(losses.brier(jnp.asarray(pool), jnp.asarray(labels)),
                             np.mean(np.sum((pool - onehot) ** 2, axis=-1), axis=-1), rtol=1e-5)
  # Identical models: no diversity.
  same = jnp.stack([PROBS, PROBS])
  assert float(losses.pairwise_disagreement(same)) == 0.0
  np.testing.assert_allclose(losses.mean_kl_to_ensemble(same), 0.0, atol=1e-7)
