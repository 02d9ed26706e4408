"""End-to-end run of the regression example on sklearn's diabetes data (the `examples` extra)."""

import json

import pytest

pytest.importorskip("sklearn")
from experiments import regression_diabetes  # noqa: E402


def test_regression_ensemble_learns_and_selection_reports_every_ensemble(tmp_path):
  config = regression_diabetes.Config(n_members=4, epochs=30, learning_rate=3e-3, max_iter=5)
  summary = regression_diabetes.run(config, str(tmp_path))
  written = json.loads((tmp_path / "summary.json").read_text())
  assert written["ensembles"] == summary["ensembles"]
  _, y_scale = regression_diabetes.load_diabetes(config)
  # Predicting the training mean scores an RMSE of about the target's scale (~77); every
  # ensemble must do much better on held-out rows.
  for name, row in summary["ensembles"].items():
    assert row["test_rmse"] < 0.8 * y_scale, name
  assert len(summary["member_test_rmse"]) == 4
