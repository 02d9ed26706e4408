"""End-to-end run of experiments.toy_min_variance on a tiny config."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_toy_min_variance_tiny(tmp_path):
  workdir = str(tmp_path / "toy")
  out = subprocess.run(
      [sys.executable, "-m", "experiments.toy_min_variance", f"--workdir={workdir}",
       "--config=configs/toy_min_variance.py", "--config.n_models=4", "--config.n_samples=400",
       "--config.max_iter=40", "--config.checkpoints=(10, 1000)"],
      cwd=ROOT, capture_output=True, text=True, check=True)
  assert "L1 to closed form" in out.stdout
  for name in ("summary.json", "weights.png", "loss.png", "metrics.csv"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)

  assert summary["config"]["max_iter"] == 40
  assert set(summary["l1_to_closed_form"]) == {"10", "40"}  # 1000 > max_iter is dropped
  metrics = pd.read_csv(os.path.join(workdir, "metrics.csv")).set_index("step")
  assert list(metrics.index) == list(range(1, 41))
  for step in ("10", "40"):
    assert metrics.loc[int(step), "l1_to_closed_form"] == pytest.approx(
        summary["l1_to_closed_form"][step]["closed_form"])
    assert metrics.loc[int(step), "loss"] == pytest.approx(summary["loss"]["greedy"][step])
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
