"""The experiments' absl entry points: config files, typed overrides, -h; no import side effects."""

import importlib
import os
import subprocess
import sys

import pytest

from experiments import app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ("batchnorm_ioffe", "batchnorm_landscape", "cheap_ensembles", "cnn_mnist",
               "ensemble_mnist", "optimizers_mnist", "regression_diabetes",
               "regularisation_mnist", "regularisers_mnist", "sharpness_batch_size",
               "toy_min_variance")

_IMPORT_SCRIPT = """
import os
before = dict(os.environ)
import experiments.ensemble_mnist, experiments.cnn_mnist, experiments.sharpness_batch_size
assert dict(os.environ) == before, "importing the experiments changed the environment"
import jax
assert jax.config.jax_num_cpu_devices == -1
from experiments import app
app.use_every_core()
print(len(jax.devices()))
"""


def _entry_point(name, *args):
  return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_import_has_no_side_effects_and_entry_points_use_every_core():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", _IMPORT_SCRIPT],
                       env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                       check=True, cwd=ROOT)
  assert int(out.stdout.strip().splitlines()[-1]) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_help_lists_every_field_and_the_config_file_loads(name):
  config_type = importlib.import_module(f"experiments.{name}").Config
  out = _entry_point(name, "-h")  # Parsing the flags' defaults loads configs/<name>.py.
  assert "Traceback" not in out.stderr, out.stderr
  for path, _, _ in app.field_paths(config_type):
    assert f"\n    {path}: " in out.stdout, path
  assert f"configs/{name}.py" in out.stdout and "--workdir" in out.stdout


def test_override_of_the_wrong_type_names_the_field():
  out = _entry_point("toy_min_variance", "--config.max_iter=ten")
  assert out.returncode != 0
  assert "--config.max_iter=ten" in out.stderr and "int" in out.stderr


def test_override_follows_the_annotation_not_the_literal(tmp_path):
  # An Optional[str] field keeps "2024" as text; the data source then fails to find it.
  out = _entry_point("ensemble_mnist", f"--workdir={tmp_path}", "--config.data_source=npz",
                     "--config.data_dir=2024")
  assert "data_dir='2024'" in out.stderr
  assert out.returncode != 0


def test_unknown_field_and_unknown_preset_are_named():
  out = _entry_point("toy_min_variance", "--config.n_model=4")
  assert out.returncode != 0 and "--config.n_model: Config has no field 'n_model'" in out.stderr
  out = _entry_point("sharpness_batch_size", "--config=configs/sharpness_batch_size.py:tpu")
  assert out.returncode != 0 and "preset: expected one of ('cpu', 'gpu'), got 'tpu'" in out.stderr


def test_config_checks_rerun_on_the_overridden_values():
  out = _entry_point("sharpness_batch_size", "--config.n_alphas=1")
  assert out.returncode != 0
  assert "--config: n_alphas: expected an integer >= 2, got 1" in out.stdout + out.stderr
