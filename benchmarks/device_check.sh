#!/bin/bash
# The prepared GPU check: run on a lent GPU machine from the repository root, with the MNIST
# cache carried in .gpu_data (see DEVELOPERS.md):
#
#   bash benchmarks/device_check.sh            # the GPU check, < 8 minutes on an H200
#   bash benchmarks/device_check.sh --dry-run  # CPU, tiny sizes, random data, no nvidia-smi
#
# It times one epoch of E = 1, 10, 100 and 1000 members (`benchmarks.ensemble_train
# --device-table`, at most 200 s), then runs E4's GPU preset (at most 240 s), and prints one
# table: member-epochs per second, the % of the matmul rate measured in the same run, the
# speed-up over a loop of single-member runs, and E4's wall time. The outputs stay in $OUT.
# The dry run (the test suite runs it: tests/test_device_check.py) keeps the steps but shrinks
# them: E = 1, 2, 4 on 256 random images, and E4's preset is loaded from its config file, not
# run.
set -u
DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
PYTHON=${PYTHON:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
rm -f "$OUT/device_table.json"
if [ "$DRY_RUN" = 1 ]; then
  export JAX_PLATFORMS=cpu
  TABLE_ARGS=(--device-table 1,2,4 --synthetic 256 --matmul-size 256 --single-runs 2)
  BENCH_TIMEOUT=120
else
  export JAXENS_DATA_DIR=$PWD/.gpu_data
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PYTHON" -c "import jax, optax; print('jax', jax.__version__, jax.devices(), 'optax', optax.__version__)"
  TABLE_ARGS=(--device-table 1,10,100,1000)
  BENCH_TIMEOUT=200
fi
timeout "$BENCH_TIMEOUT" "$PYTHON" -m benchmarks.ensemble_train "${TABLE_ARGS[@]}" \
  --json "$OUT/device_table.json" 2>&1 | tee "$OUT/ensemble_train_device.txt" | grep -v '^|'
BENCH_RC=${PIPESTATUS[0]}  # Its table is printed once, below, with E4's row.
echo "benchmark rc=$BENCH_RC"

E4_RC=0 E4_START=0 E4_END=0  # In the dry run, the table's step below loads the preset.
if [ "$DRY_RUN" = 0 ]; then
  E4_START=$(date +%s.%N)
  timeout 240 "$PYTHON" -m experiments.sharpness_batch_size \
    --config=configs/sharpness_batch_size.py:gpu --workdir /tmp/e4 > "$OUT/e4_log.txt" 2>&1
  E4_RC=$?
  E4_END=$(date +%s.%N)
  cp /tmp/e4/summary.json "$OUT/e4_summary.json" 2>/dev/null
  cp /tmp/e4/*interpolation*.png "$OUT/" 2>/dev/null
  echo "e4 rc=$E4_RC"
  tail -30 "$OUT/e4_log.txt"
fi

echo
echo "Device check:"
"$PYTHON" - "$OUT/device_table.json" "$DRY_RUN" "$E4_RC" "$E4_START" "$E4_END" <<'PY' | tee "$OUT/table.md"
import importlib.util, json, os, sys, time
from benchmarks import ensemble_train
path, dry_run, rc, start, end = sys.argv[1:]
rows = json.load(open(path))["rows"] if os.path.exists(path) else [{"run": "benchmark failed"}]
if dry_run == "1":
  start = time.time()
  spec = importlib.util.spec_from_file_location("e4_config", "configs/sharpness_batch_size.py")
  config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config)
  print(config.get_config("gpu"), file=sys.stderr)
  run, seconds = "E4 GPU preset (dry run: config loaded, not run)", time.time() - start
else:
  run, seconds = f"E4 GPU preset (sharpness_batch_size.py:gpu), rc={rc}", float(end) - float(start)
print(ensemble_train.device_markdown(rows + [{"run": run, "seconds": seconds}]))
PY
TABLE_RC=${PIPESTATUS[0]}
[ "$BENCH_RC" = 0 ] && [ "$E4_RC" = 0 ] && [ "$TABLE_RC" = 0 ]
