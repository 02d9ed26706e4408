"""End-to-end run of experiments.toy_min_variance on a tiny config."""

import json
import os

import numpy as np
import pytest

from experiments import toy_min_variance


def test_toy_min_variance_tiny(tmp_path, capsys):
  workdir = str(tmp_path / "toy")
  toy_min_variance.main([f"--workdir={workdir}", "--config.n_models=4",
                         "--config.n_samples=400", "--config.max_iter=40",
                         "--config.checkpoints=(10, 1000)"])
  assert "L1 to closed form" in capsys.readouterr().out
  for name in ("summary.json", "weights.png", "loss.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)

  assert summary["config"]["max_iter"] == 40
  assert set(summary["l1_to_closed_form"]) == {"10", "40"}  # 1000 > max_iter is dropped
  assert summary["l1_to_closed_form"]["40"]["closed_form"] < 0.2
  # More steps bring greedy closer to the closed form.
  assert (summary["l1_to_closed_form"]["40"]["closed_form"]
          < summary["l1_to_closed_form"]["10"]["closed_form"])

  loss = summary["loss"]
  # The closed form is the optimum over weights summing to 1 on this very sample.
  assert loss["closed_form"] <= loss["greedy"]["40"] * (1 + 1e-5)
  assert loss["greedy"]["40"] <= min(loss["plain_average"], loss["best_single"])
  # sigma^2 runs from 10 to 1, so the best single model has error variance near 1, and the
  # sample's optimum lies near the population's 1 / sum(1 / sigma^2) (sampling error on 400
  # draws is a few percent; a wrong variance schedule moves it by tens of percent).
  assert 0.6 < loss["best_single"] < 1.4
  assert loss["closed_form"] == pytest.approx(1 / np.sum(1 / np.linspace(10, 1, 4)), rel=0.15)
