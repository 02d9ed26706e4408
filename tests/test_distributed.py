"""Two processes on JAX's distributed runtime train one ensemble, as on a cluster.

The test starts two Python processes on 127.0.0.1. Each calls ``jax.distributed.initialize``
with JAX's CPU collectives (gloo) and 2 CPU devices, so the global mesh has 4 devices. Both
processes run this file as a script (``_worker``). They train E=8 and E=7 members, write and
resume orbax checkpoints, and run ``predict`` and ``select.greedy`` on the global arrays. The
E=7 run is padded to 8 members and trains them in blocks of one member per device.
Process 0 then writes the gathered results. The test compares them with this process's
1-device runs of the same configs, and each resume with its straight run.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import traceback

import jax
import numpy as np
import pytest

import test_ensemble as t
from jaxens import ensemble
from jaxens import select
from jaxens import nn
from jaxens.ensemble import _checkpoint
from jaxens.ensemble import _config
from jaxens.ensemble import _train

N_PROCESSES, DEVICES_PER_PROCESS = 2, 2
TIMEOUT_S = 420  # Both processes together: ~40 s on the idle 2-core VM, ~150 s when loaded.
CONFIGS = {"e8": dict(n_members=8, epochs=2), "e7": dict(n_members=7, epochs=2)}


class _Interrupted(Exception):
  pass


@contextlib.contextmanager
def _crash_after_first_save():
  """Makes ``train`` stop with ``_Interrupted`` right after its epoch-1 checkpoint."""
  original = _checkpoint.Checkpoints.save

  def save_then_crash(self, epoch, *args):
    original(self, epoch, *args)
    raise _Interrupted

  _checkpoint.Checkpoints.save = save_then_crash
  try:
    yield
  except _Interrupted:
    pass
  finally:
    _checkpoint.Checkpoints.save = original


def _half_run(cfg, splits, workdir):
  """Leaves the epoch-1 checkpoint of ``cfg`` in ``workdir``."""
  with _crash_after_first_save():
    ensemble.train(cfg, splits, workdir=workdir, progress=False)


def _flat(prefix, result):
  leaves = {f"{prefix}/params/{i}": leaf for i, leaf in enumerate(jax.tree.leaves(result.params))}
  leaves |= {f"{prefix}/best_params/{i}": leaf
             for i, leaf in enumerate(jax.tree.leaves(result.best_params))}
  leaves |= {f"{prefix}/history/{name}": column for name, column in result.history.items()}
  return leaves


def _worker(process_id, port, workdir):
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_num_cpu_devices", DEVICES_PER_PROCESS)
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                             num_processes=N_PROCESSES, process_id=process_id)
  from jax.experimental import multihost_utils

  splits = t._splits()
  cfg = t._config(**CONFIGS["e8"])
  full = ensemble.train(cfg, splits, workdir=os.path.join(workdir, "two"), progress=False)
  _half_run(cfg, splits, os.path.join(workdir, "two_half"))
  resumed = ensemble.train(cfg, splits, workdir=os.path.join(workdir, "one_half"), resume=True,
                           progress=False)
  e7 = ensemble.train(t._config(**CONFIGS["e7"], member_block=1), splits, progress=False)
  preds = ensemble.predict(cfg, full.best_params, full.best_state, splits.val.x)
  selection = select.greedy(preds, splits.val.y, max_iter=5)

  local_rows = [sum(shard.data.shape[0] for shard in leaf.addressable_shards)
                for leaf in jax.tree.leaves(full.params) + [preds]]
  out = {**_flat("two", full), **_flat("resumed", resumed), **_flat("e7", e7),
         "preds": preds, "weights": selection.weights}
  out = {name: np.asarray(multihost_utils.process_allgather(value, tiled=True))
         if isinstance(value, jax.Array) else np.asarray(value) for name, value in out.items()}
  info = {"process": jax.process_index(), "n_devices": [full.n_devices, e7.n_devices],
          "global_devices": jax.device_count(), "local_rows": local_rows,
          "sharded": [not leaf.is_fully_addressable for leaf in jax.tree.leaves(full.params)]}
  with open(os.path.join(workdir, f"info{process_id}.json"), "w") as f:
    json.dump(info, f)
  if process_id == 0:
    np.savez(os.path.join(workdir, "two.npz"), **out)
  jax.distributed.shutdown()


def _free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_workers(workdir):
  """Runs both processes; on a failure or past ``TIMEOUT_S`` kills them and fails with their
  output."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  logs = [open(os.path.join(workdir, f"log{i}.txt"), "w+") for i in range(N_PROCESSES)]
  procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port), str(workdir)],
                            stdout=logs[i], stderr=subprocess.STDOUT, env=env,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
           for i in range(N_PROCESSES)]
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while any(p.poll() is None for p in procs):
      if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  codes = [p.returncode for p in procs]
  if codes != [0] * N_PROCESSES:
    tails = []
    for i, log in enumerate(logs):
      log.seek(0)
      tails.append(f"--- process {i} (exit {codes[i]}) ---\n" + log.read()[-3000:])
    pytest.fail("the distributed run failed or timed out:\n" + "\n".join(tails))
  for log in logs:
    log.close()
  return (dict(np.load(os.path.join(workdir, "two.npz"))),
          [json.load(open(os.path.join(workdir, f"info{i}.json"))) for i in range(N_PROCESSES)])


def _assert_close(got, expected, what):
  assert set(got) == set(expected), what
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], atol=1e-6, rtol=0,
                               err_msg=f"{what}: {name}")


def _drop_prefix(flat, prefix):
  return {name.split("/", 1)[1]: value for name, value in flat.items()
          if name.startswith(prefix + "/")}


def test_two_processes_train_one_ensemble_like_one_device(tmp_path, monkeypatch):
  assert jax.process_count() == 1 and len(jax.devices()) == 1
  splits = t._splits()
  cfg = t._config(**CONFIGS["e8"])
  _half_run(cfg, splits, tmp_path / "one_half")  # Resumed by the two processes.
  two, infos = _run_workers(tmp_path)

  single = ensemble.train(cfg, splits, progress=False)
  expected = _drop_prefix(_flat("x", single), "x")
  _assert_close(_drop_prefix(two, "two"), expected, "2 processes vs 1 device")
  _assert_close(_drop_prefix(two, "resumed"), expected,
                "2 processes resuming a 1-process checkpoint")
  # Here in 3 blocks of 3 members (2 padded), as the automatic member_block picks when 3
  # members' parameters fill MEMBER_BLOCK_BYTES and a device holds at least MIN_BLOCKS
  # blocks; there in 2 blocks of 1 member per device.
  cfg7 = t._config(**CONFIGS["e7"])
  member_bytes = sum(leaf.size * 4 for leaf in jax.tree.leaves(nn.mlp_init(
      jax.random.PRNGKey(0), cfg7.model)[0]))
  monkeypatch.setattr(_config, "MEMBER_BLOCK_BYTES", 3 * member_bytes)
  monkeypatch.setattr(_config, "MIN_BLOCKS", 2)
  assert _train._member_block(cfg7, splits.train.x[:2], 7) == 3
  assert _train._member_block(cfg7, splits.train.x[:2], 5) is None  # Fewer than 2 blocks.
  e7 = ensemble.train(cfg7, splits, progress=False)
  _assert_close(_drop_prefix(two, "e7"), _drop_prefix(_flat("x", e7), "x"),
                "E=7, padded over 4 devices, vs 1 device")
  alone = ensemble.train(t._config(**CONFIGS["e7"]), splits, members=[5], progress=False)
  assert t._max_diff(t._member(e7.params, 5), t._member(alone.params, 0)) <= 1e-6
  # A 2-process checkpoint, resumed or loaded in 1 process.
  resumed = ensemble.train(cfg, splits, workdir=tmp_path / "two_half", resume=True,
                           progress=False)
  _assert_close(_drop_prefix(_flat("x", resumed), "x"), expected,
                "1 process resuming a 2-process checkpoint")
  loaded = ensemble.load(tmp_path / "two")
  _assert_close(_drop_prefix(_flat("x", loaded), "x"), expected,
                "ensemble.load of a 2-process checkpoint")

  preds = ensemble.predict(cfg, single.best_params, single.best_state, splits.val.x)
  np.testing.assert_allclose(two["preds"], preds, atol=1e-6, rtol=0)
  weights = select.greedy(preds, splits.val.y, max_iter=5).weights
  np.testing.assert_array_equal(two["weights"], weights)

  for info in infos:
    assert info["global_devices"] == 4 and info["n_devices"] == [4, 4]
    assert all(info["sharded"])
    # Each process holds its own devices' members only: 4 of the 8.
    assert info["local_rows"] == [4] * len(info["local_rows"])
  # The comparisons are not trivially true: members differ.
  assert np.abs(two["two/params/0"][0] - two["two/params/0"][1]).max() > 1e-2


if __name__ == "__main__":
  try:
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
  except BaseException:  # Exit at once: the other process may wait in a collective forever.
    traceback.print_exc()
    sys.stdout.flush()
    os._exit(1)
