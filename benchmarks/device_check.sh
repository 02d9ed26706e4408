#!/bin/bash
# The prepared GPU check: run on a lent GPU machine from the repository root, with the MNIST
# cache carried in .gpu_data (see DEVELOPERS.md). It runs the training benchmark with the
# scaling table up to E = 1000, then E4's full protocol, and leaves the outputs in $OUT.
export JAXENS_DATA_DIR=$PWD/.gpu_data PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, optax, torch; print('jax', jax.__version__, jax.devices(), 'optax', optax.__version__, 'torch', torch.__version__)"
timeout 280 python3 -m benchmarks.ensemble_train --scaling 1,10,100,1000 --torch-device cuda \
  --torch-threads "$(nproc)" --cnn-train 0 \
  2>&1 | tee "$OUT/ensemble_train_gpu.txt"
echo "benchmark rc=${PIPESTATUS[0]}"
timeout 200 python3 -m experiments.sharpness_batch_size --config=configs/sharpness_batch_size.py:gpu --workdir /tmp/e4 \
  > "$OUT/e4_gpu_log.txt" 2>&1
echo "e4 rc=$?"
tail -30 "$OUT/e4_gpu_log.txt"
cp /tmp/e4/summary.json "$OUT/e4_summary.json" 2>/dev/null
cp /tmp/e4/*interpolation*.png "$OUT/" 2>/dev/null
