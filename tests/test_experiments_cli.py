"""Importing the experiments changes nothing; their entry points use every core."""

import os
import subprocess
import sys

_SCRIPT = """
import os
before = dict(os.environ)
import experiments.ensemble_mnist, experiments.cnn_mnist, experiments.sharpness_batch_size
assert dict(os.environ) == before, "importing the experiments changed the environment"
import jax
assert jax.config.jax_num_cpu_devices == -1
from experiments import _cli
_cli.use_every_core()
print(len(jax.devices()))
"""


def test_import_has_no_side_effects_and_entry_points_use_every_core():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", _SCRIPT], env=dict(env, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert int(out.stdout.strip().splitlines()[-1]) == len(os.sched_getaffinity(0))
