"""End-to-end runs of the E1 experiment: offline on generated data, and on real MNIST (slow)."""

import json

import numpy as np
import pytest

from experiments import ensemble_mnist

ARTEFACTS = ("summary.json", "predictions.npz", "members.png", "curves.png",
             "selection_weights.png", "selection_loss.png", "selection_accuracy.png")


def _tiny(**fields):
  config = ensemble_mnist.Config()
  overrides = [("train.n_members", 3), ("train.epochs", 2), ("long_max_iter", 20)]
  for name, value in overrides + list(fields.items()):
    config = ensemble_mnist._cli.override(config, name, value)
  return config


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
  return summary


def test_runs_offline_on_a_local_npz(tmp_path, capsys, digits_npz):
  npz = digits_npz(600, 300)
  workdir = tmp_path / "run"
  ensemble_mnist.main([f"--workdir={workdir}", "--config.data_source=npz",
                       f"--config.data_dir={npz}", "--config.train.n_members=3",
                       "--config.train.epochs=2", "--config.long_max_iter=20"])
  _check_run(workdir, 3)
  assert "| member | best epoch |" in capsys.readouterr().out


@pytest.mark.slow
def test_small_run_on_real_mnist(tmp_path):
  summary = ensemble_mnist.run(_tiny(n_train=6000, n_val=2000, n_test=2000), tmp_path)
  _check_run(tmp_path, 3)
  # Two epochs on 6000 real images already give a working classifier.
  assert summary["best_single_test_accuracy"] > 0.85
