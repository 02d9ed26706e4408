"""End-to-end run of the E4 experiment (Keskar sharpness, SB against LB) on a tiny config."""

import json
import os
import runpy

import numpy as np
import pandas as pd
import pytest

from experiments import sharpness_batch_size

ARTEFACTS = ("summary.json", "sharpness.png", "interpolation.png", "curves.png", "metrics.csv")
CONFIG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "sharpness_batch_size.py")
N_MEMBERS = 2
N_ALPHAS = 7  # alpha = -1, -0.5, ..., 2: both endpoints 0 and 1 lie on the grid.
STEPS = 3


@pytest.mark.filterwarnings("ignore:MNIST from the files")
def test_tiny_run_writes_consistent_artefacts(tmp_path, capsys, digits_npz):
  npz = digits_npz(400, 200)
  workdir = tmp_path / "run"
  # 400 = 3 x 128 + 16: every chunked pass over the training set ends on a short chunk.
  config = sharpness_batch_size.Config(
      data_source="npz", data_dir=str(npz), hidden=(32, 32), n_members=N_MEMBERS,
      small_batch=32, large_batch=200, small_batch_epochs=1, large_batch_epochs=2,
      bn_batch_size=100, chunk_size=128, subspace_dim=10, sharpness_steps=STEPS,
      sharpness_n_train=None, n_alphas=N_ALPHAS, bn_chunk_size=100)
  sharpness_batch_size.print_summary(sharpness_batch_size.run(config, str(workdir)))
  out = capsys.readouterr().out
  assert "| E4 on MNIST, mean ± std over seeds | SB (this run) |" in out
  assert "n_passes = " in out and "reduced-scale" in out
  for name in ARTEFACTS:
    assert (workdir / name).stat().st_size > 0, name
  summary = json.loads((workdir / "summary.json").read_text())
  assert "reduced-scale" in summary["scale"]
  assert summary["n_train"] == summary["sharpness_n_train"] == 400

  metrics_csv = pd.read_csv(workdir / "metrics.csv")
  for regime, epochs, steps in (("SB", 1, 12), ("LB", 2, 4)):
    result = summary["regimes"][regime]
    assert (result["epochs"], result["steps"]) == (epochs, steps)
    assert np.shape(result["history"]["train_loss"]) == (N_MEMBERS, epochs)
    logged = metrics_csv[metrics_csv["run"] == regime]
    np.testing.assert_allclose(
        100 * logged.pivot(index="member", columns="step", values="test_accuracy").to_numpy(),
        result["history"]["test_accuracy"], rtol=1e-6)
    metrics = result["metrics"]
    for name in ("train_accuracy", "test_accuracy"):
      values = np.asarray(metrics[name]["per_member"])
      assert values.shape == (N_MEMBERS,) and np.all((0 <= values) & (values <= 100))
    assert set(result["sharpness"]) == {"full_0.001", "full_0.0005", "subspace_0.001"}
    for measure in result["sharpness"].values():
      phi, f0 = np.asarray(measure["per_member"]), np.asarray(measure["f0"])
      assert phi.shape == (N_MEMBERS,)
      # f(x) from the chunked sharpness pass is the evaluation-mode training loss.
      np.testing.assert_allclose(f0, metrics["train_loss"]["per_member"], rtol=1e-4)

  for regime in ("SB", "LB"):
    protocols = summary["regimes"][regime]["protocols"]
    assert list(protocols) == ["fixed/frank_wolfe", "batch/frank_wolfe", "batch/lbfgsb"]
    assert protocols["fixed/frank_wolfe"] == summary["regimes"][regime]["sharpness"]
    # Both batch protocols maximise the same f, on the BN statistics of 100-image chunks:
    # their f(x) agree, and differ from f(x) on the population statistics.
    batch_f0 = np.asarray(protocols["batch/frank_wolfe"]["full_0.001"]["f0"])
    np.testing.assert_allclose(protocols["batch/lbfgsb"]["full_0.001"]["f0"], batch_f0,
                               rtol=1e-5)
    assert not np.allclose(batch_f0, protocols["fixed/frank_wolfe"]["full_0.001"]["f0"],
                           rtol=1e-3)
    assert protocols["batch/lbfgsb"]["full_0.001"]["solver"] == "lbfgsb"
  assert "| batch BN, L-BFGS-B (the paper's solver) | paper |" in out

  timing = summary["timing_full_space"]
  assert timing["n_examples"] == 400
  assert timing["keskar_seconds"] > 0 and timing["one_pass_seconds"] > 0

  interpolation = summary["interpolation"]
  alphas = np.asarray(interpolation["alpha"])
  np.testing.assert_allclose(alphas, np.linspace(-1, 2, N_ALPHAS))
  for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
    assert np.shape(interpolation[key]) == (N_ALPHAS,)
  # The line's endpoints are member 0 of each regime, BN statistics re-estimated the same way.
  for alpha, regime in ((0.0, "SB"), (1.0, "LB")):
    i = int(np.argmin(np.abs(alphas - alpha)))
    metrics = summary["regimes"][regime]["metrics"]
    assert interpolation["train_loss"][i] == pytest.approx(
        metrics["train_loss"]["per_member"][0], rel=1e-4)
    assert interpolation["test_accuracy"][i] == pytest.approx(
        metrics["test_accuracy"]["per_member"][0], abs=1e-3)

  pattern = summary["pattern"]
  ratio = pattern["sharpness_ratio_lb_over_sb"]["full_0.001"]
  assert ratio == pytest.approx(summary["regimes"]["LB"]["sharpness"]["full_0.001"]["mean"]
                                / summary["regimes"]["SB"]["sharpness"]["full_0.001"]["mean"])


def test_presets_of_the_config_file():
  get_config = runpy.run_path(CONFIG_FILE)["get_config"]
  assert sharpness_batch_size.scale_note(get_config("gpu"), 60_000).startswith("full protocol")
  assert sharpness_batch_size.scale_note(get_config(), 60_000).startswith("reduced-scale")
  with pytest.raises(ValueError, match="preset: expected one of .'cpu', 'gpu'., got 'tpu'"):
    get_config("tpu")


def test_bad_config_is_rejected():
  with pytest.raises(ValueError, match="n_alphas"):
    sharpness_batch_size.Config(n_alphas=1)
