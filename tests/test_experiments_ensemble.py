"""End-to-end runs of the E1 experiment: offline on generated data, and on real MNIST (slow)."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from experiments import ensemble_mnist

ARTEFACTS = ("summary.json", "predictions.npz", "members.png", "curves.png",
             "selection_weights.png", "selection_loss.png", "selection_accuracy.png",
             "metrics.csv")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(**fields):
  return ensemble_mnist.Config(**{"n_members": 3, "epochs": 2, "long_max_iter": 20, **fields})


def _check_run(workdir, n_members):
  for name in ARTEFACTS:
    assert (workdir / name).stat().st_size > 0, name
  summary = json.loads((workdir / "summary.json").read_text())
  assert [m["member"] for m in summary["members"]] == list(range(n_members))
  with np.load(workdir / "predictions.npz") as predictions:
    assert predictions["val_probs"].shape[0] == n_members
    np.testing.assert_allclose(predictions["test_probs"].sum(-1), 1.0, rtol=1e-5)
  table = summary["ensembles"]
  # Greedy selection on validation log-loss never ends above its starting point, the best single.
  best = next(v for k, v in table.items() if k.startswith("best single"))
  assert table["greedy on log_loss, 10 steps"]["val_loss"] <= best["val_loss"] + 1e-9
  study = summary["sharpness"]
  assert len(study["per_member"]) == n_members and min(study["per_member"]) >= 0
  plain = study["selection_by_penalty_weight"]["0.0"]
  assert plain["val_loss"] == pytest.approx(table["greedy on log_loss, 10 steps"]["val_loss"])
  # metrics.csv holds every member's history, one row per member and epoch.
  metrics = pd.read_csv(workdir / "metrics.csv")
  for name, values in summary["history"].items():
    np.testing.assert_allclose(
        metrics.pivot(index="member", columns="step", values=name).to_numpy(), values)
  return summary


def test_entry_point_runs_offline_on_a_local_npz(tmp_path, digits_npz):
  npz = digits_npz(600, 300)
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "-m", "experiments.ensemble_mnist", f"--workdir={workdir}",
       "--config=configs/ensemble_mnist.py", "--config.data_source=npz",
       f"--config.data_dir={npz}", "--config.n_members=3", "--config.epochs=2",
       "--config.long_max_iter=20"], cwd=ROOT, capture_output=True, text=True, check=True)
  _check_run(workdir, 3)
  assert "| member | best epoch |" in out.stdout
  assert "wall time" in out.stderr  # absl.logging's status line


@pytest.mark.slow
def test_small_run_on_real_mnist(tmp_path):
  summary = ensemble_mnist.run(_tiny(n_train=6000, n_val=2000, n_test=2000), tmp_path)
  _check_run(tmp_path, 3)
  # Two epochs on 6000 real images already give a working classifier.
  assert summary["best_single_test_accuracy"] > 0.85
