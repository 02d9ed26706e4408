"""The prepared GPU check (``benchmarks/device_check.sh``) in its CPU dry-run mode, so that it
keeps working as the trainer changes; on a lent GPU machine it runs without ``--dry-run``."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_prints_one_table_of_every_size_and_e4(tmp_path):
  env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
  env.pop("XLA_FLAGS", None)
  done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh"), "--dry-run"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert "nvidia-smi" not in done.stdout + done.stderr
  tables = re.findall(r"^\| run \|", done.stdout, flags=re.MULTILINE)
  assert len(tables) == 1, done.stdout
  rows = [line.split("|")[1:-1] for line in done.stdout.splitlines()
          if line.startswith("| E")]
  assert [row[0].strip() for row in rows[:3]] == [f"E={e}, 1 epoch" for e in (1, 2, 4)]
  for row in rows[:3]:
    seconds, rate, matmul, loop = (cell.strip() for cell in row[1:])
    assert float(seconds) > 0 and float(rate) > 0
    assert matmul.endswith("%") and loop.endswith("x")
  assert rows[3][0].strip().startswith("E4 GPU preset") and len(rows) == 4
  assert (tmp_path / "table.md").read_text().count("| E") == 4
