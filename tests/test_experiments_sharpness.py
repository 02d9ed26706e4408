"""End-to-end run of the E4 experiment (Keskar sharpness, SB against LB) on a tiny config."""

import json

import numpy as np
import pytest

from experiments import sharpness_batch_size

ARTEFACTS = ("summary.json", "sharpness.png", "interpolation.png", "curves.png")
N_MEMBERS = 2
N_ALPHAS = 7  # alpha = -1, -0.5, ..., 2: both endpoints 0 and 1 lie on the grid.
STEPS = 3


@pytest.mark.filterwarnings("ignore:MNIST from the files")
def test_tiny_run_writes_consistent_artefacts(tmp_path, capsys, digits_npz):
  npz = digits_npz(400, 200)
  workdir = tmp_path / "run"
  # 400 = 3 x 128 + 16: every chunked pass over the training set ends on a short chunk.
  argv = [f"--workdir={workdir}", "--config.data_source=npz", f"--config.data_dir={npz}",
          "--config.model.sizes=(784, 32, 32, 10)", f"--config.n_members={N_MEMBERS}",
          "--config.small_batch=32", "--config.large_batch=200",
          "--config.small_batch_epochs=1", "--config.large_batch_epochs=2",
          "--config.bn_batch_size=100", "--config.chunk_size=128",
          "--config.subspace_dim=10", f"--config.sharpness_steps={STEPS}",
          "--config.sharpness_n_train=None", f"--config.n_alphas={N_ALPHAS}"]
  sharpness_batch_size.main(argv)
  out = capsys.readouterr().out
  assert "| E4 on MNIST, mean ± std over seeds | SB (this run) |" in out
  assert "n_passes = " in out and "reduced-scale" in out
  for name in ARTEFACTS:
    assert (workdir / name).stat().st_size > 0, name
  summary = json.loads((workdir / "summary.json").read_text())
  assert "reduced-scale" in summary["scale"]
  assert summary["n_train"] == summary["sharpness_n_train"] == 400

  for regime, epochs, steps in (("SB", 1, 12), ("LB", 2, 4)):
    result = summary["regimes"][regime]
    assert (result["epochs"], result["steps"]) == (epochs, steps)
    assert np.shape(result["history"]["train_loss"]) == (N_MEMBERS, epochs)
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


def test_gpu_preset_is_the_full_protocol():
  config = sharpness_batch_size.gpu()
  assert config.model.sizes == (784,) + (512,) * 5 + (10,) and config.model.norm == "batch"
  assert (config.small_batch, config.large_batch, config.n_members) == (256, 6000, 5)
  assert config.sharpness_n_train is None
  assert sharpness_batch_size.scale_note(config, 60_000).startswith("full protocol")
  assert sharpness_batch_size.scale_note(sharpness_batch_size.Config(), 60_000).startswith(
      "reduced-scale CPU run")
  config, workdir = sharpness_batch_size.parse_args(
      ["--workdir=w", "--config.n_members=2", "--config.preset=gpu"])
  assert workdir == "w" and config.preset == "gpu" and config.n_members == 2
  assert (config.small_batch_epochs, config.large_batch_epochs) == (100, 100)
  assert "2 seeds per regime" in sharpness_batch_size.scale_note(config, 60_000)
  quoted, _ = sharpness_batch_size.parse_args(["--config.preset='gpu'"])
  assert quoted.preset == "gpu" and quoted.small_batch_epochs == 100


def test_bad_config_is_rejected():
  with pytest.raises(ValueError, match="preset"):
    sharpness_batch_size.Config(preset="tpu")
  with pytest.raises(ValueError, match="n_alphas"):
    sharpness_batch_size.Config(n_alphas=1)
