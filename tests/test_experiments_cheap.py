"""experiments.cheap_ensembles: its metrics by hand, and an end-to-end run on tiny data."""

import os

import numpy as np
import pandas as pd

from experiments import cheap_ensembles


def test_metrics_by_size_are_those_of_the_first_k_models():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(3), size=(2, 4, 30)).astype(np.float32)
  labels = rng.integers(0, 3, 30)
  got = cheap_ensembles.metrics_by_size(probs, labels)
  for seed in range(2):
    for k in range(1, 5):
      mean = probs[seed, :k].mean(0)
      np.testing.assert_allclose(got["accuracy"][seed, k - 1],
                                 np.mean(mean.argmax(-1) == labels), rtol=1e-6)
      np.testing.assert_allclose(got["nll"][seed, k - 1],
                                 -np.mean(np.log(mean[np.arange(30), labels])), rtol=1e-5)
      pairs = [np.mean(probs[seed, a].argmax(-1) != probs[seed, b].argmax(-1))
               for a in range(k) for b in range(a + 1, k)]
      np.testing.assert_allclose(got["disagreement"][seed, k - 1],
                                 np.mean(pairs) if pairs else 0.0, rtol=1e-6)


def test_cheap_ensembles_tiny(digits_npz, tmp_path):
  config = cheap_ensembles.Config(
      data_source="npz", data_dir=str(digits_npz(800, 200)), n_seeds=2, n_models=3,
      epochs_per_model=1, batch_size=50, fge_pretrain_epochs=1, fge_cycle_epochs=1,
      greedy_steps=4)
  summary = cheap_ensembles.run(config, str(tmp_path))
  cheap_ensembles.print_summary(summary)
  methods = summary["methods"]
  # 600 training images: 12 steps an epoch, 36 per seed; FGE collects at 18 and 30.
  assert summary["fge_collection_steps"] == (18, 30)
  assert methods["independent"]["accuracy"].shape == (2, 3)
  assert methods["fge"]["accuracy"].shape == (2, 2)
  # SWA starts at epoch 1 (step 12) and averages every epoch: steps 12, 24, 36.
  np.testing.assert_array_equal(summary["swa_models_averaged"], [3, 3])
  # Member 0 of the snapshot run and of the independent ensemble share their key and their
  # first cycle, so the first snapshot is the first independent model.
  accuracy = summary["model_test_accuracy"]
  np.testing.assert_allclose(accuracy["snapshot"][0, 0], accuracy["independent"][0, 0],
                             rtol=1e-6)
  # Ensembles of size 1: the first independent member, the most recent snapshot.
  np.testing.assert_allclose(methods["independent"]["accuracy"][:, 0],
                             accuracy["independent"][:, 0], rtol=1e-6)
  np.testing.assert_allclose(methods["snapshot"]["accuracy"][:, 0], accuracy["snapshot"][:, -1],
                             rtol=1e-6)
  assert ((summary["greedy_distinct_models"] >= 1)
          & (summary["greedy_distinct_models"] <= 8)).all()
  metrics = pd.read_csv(tmp_path / "metrics.csv")
  assert set(metrics["run"]) == {"independent", "snapshot", "fge", "swa", "swa_last_iterate",
                                 "greedy_union"}
  assert os.path.getsize(tmp_path / "error_vs_size.png") > 0
