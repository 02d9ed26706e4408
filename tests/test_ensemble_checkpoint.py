"""Checkpoints: resume across processes and with more epochs, ``load``, and the fingerprint."""

import json
import os
import subprocess
import sys

import numpy as np
import optax
import pytest

from jaxens import ensemble
from jaxens.ensemble import _checkpoint
from test_ensemble import _config
from test_ensemble import _max_diff
from test_ensemble import _splits

_PROCESS_SCRIPT = """
import json, sys
import jax, numpy as np, optax
sys.path.insert(0, {tests!r})
import test_ensemble_checkpoint as t
from jaxens import ensemble
from jaxens.ensemble import _checkpoint
mode, workdir = sys.argv[1], sys.argv[2]
if mode == "interrupt":
  save = _checkpoint.Checkpoints.save
  def save_then_stop(self, epoch, *args):
    save(self, epoch, *args)
    raise SystemExit(3)
  _checkpoint.Checkpoints.save = save_then_stop
result = ensemble.train(t.scheduled_config(), t._splits(), workdir=workdir, resume=True,
                        progress=False)
print(json.dumps([np.asarray(leaf).tolist() for leaf in jax.tree.leaves(result.params)]))
"""


def scheduled_config():
  """A config whose repr holds memory addresses: optax.adam and a schedule object."""
  return _config(optimizer=optax.adam, epochs=2, optimizer_kwargs={
      "learning_rate": optax.exponential_decay(3e-3, transition_steps=5, decay_rate=0.8)})


def _run_process(mode, workdir):
  script = _PROCESS_SCRIPT.format(tests=os.path.dirname(__file__))
  return subprocess.run([sys.executable, "-c", script, mode, str(workdir)],
                        capture_output=True, text=True, timeout=300)


def test_a_run_interrupted_in_one_process_resumes_in_another(tmp_path):
  interrupted = _run_process("interrupt", tmp_path)
  assert interrupted.returncode == 3, interrupted.stderr
  resumed = _run_process("resume", tmp_path)
  assert resumed.returncode == 0, resumed.stderr
  straight = ensemble.train(scheduled_config(), _splits(), progress=False)
  got = json.loads(resumed.stdout.strip().splitlines()[-1])
  for leaf, expected in zip(got, __import__("jax").tree.leaves(straight.params)):
    np.testing.assert_allclose(np.asarray(leaf), expected, atol=1e-6)


def test_fingerprint_is_stable_and_tells_configs_apart():
  cfg = scheduled_config()
  members = np.arange(4)
  assert _checkpoint.fingerprint(cfg, members) == _checkpoint.fingerprint(
      scheduled_config(), members)
  other_rate = _config(optimizer=optax.adam, epochs=2, optimizer_kwargs={
      "learning_rate": optax.exponential_decay(1e-3, transition_steps=5, decay_rate=0.8)})
  assert _checkpoint.fingerprint(other_rate, members) != _checkpoint.fingerprint(cfg, members)
  assert _checkpoint.fingerprint(_config(optimizer=optax.sgd), members) != _checkpoint.fingerprint(
      _config(optimizer=optax.adam), members)
  # Epochs may grow on resume, so they are not part of it.
  assert _checkpoint.fingerprint(_config(epochs=1), members) == _checkpoint.fingerprint(
      _config(epochs=5), members)


def test_resuming_with_more_epochs_continues_the_run(tmp_path):
  splits = _splits()
  straight = ensemble.train(_config(epochs=3), splits, progress=False)
  ensemble.train(_config(epochs=1), splits, workdir=tmp_path, progress=False)
  continued = ensemble.train(_config(epochs=3), splits, workdir=tmp_path, resume=True,
                             progress=False)
  assert _max_diff(continued.params, straight.params) <= 1e-6
  assert _max_diff(continued.best_params, straight.best_params) <= 1e-6
  np.testing.assert_allclose(continued.history["val_loss"], straight.history["val_loss"],
                             atol=1e-6)
  with pytest.raises(ValueError, match="resume"):
    ensemble.train(_config(epochs=3, seed=1), splits, workdir=tmp_path, resume=True,
                   progress=False)


def test_load_reads_a_run_without_training(tmp_path):
  splits = _splits()
  result = ensemble.train(_config(epochs=2), splits, workdir=tmp_path, members=[1, 3],
                          progress=False)
  loaded = ensemble.load(tmp_path)
  assert _max_diff(loaded.params, result.params) == 0.0
  assert _max_diff(loaded.best_params, result.best_params) == 0.0
  np.testing.assert_array_equal(loaded.members, [1, 3])
  np.testing.assert_array_equal(loaded.history["val_loss"], result.history["val_loss"])
  np.testing.assert_array_equal(loaded.best_epoch, result.best_epoch)
  with pytest.raises(ValueError, match="workdir: no checkpoint"):
    ensemble.load(tmp_path / "empty")
