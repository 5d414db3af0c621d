#!/usr/bin/env bash
# One call on a machine with a CUDA GPU: the CUDA tests, then the training benchmark with its
# results file and a profile of one working set. Run from the repository root; results go to
# ${OUT:-gpu_out} (the device tool's $OUT comes back to the caller). Uses the machine's own
# torch (the lent machines carry a CUDA build); installs the few pure-Python packages the
# trainer needs only when they are missing.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
PY=${PYTHON:-python3}
$PY - <<'PY' || $PY -m pip install -q numpy tqdm matplotlib pytest 2>&1 | tail -2
import numpy, tqdm, matplotlib, pytest  # noqa: F401
PY
$PY -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" \
  | tee "$OUT/env.txt"
# 1. CUDA tests (streams, events, pinned copies; non-current device when there are two GPUs).
timeout 240 $PY -m pytest -q -p no:cacheprovider -k cuda tests/test_training_streams.py \
  tests/test_training_exactness.py tests/test_driver_schedule.py 2>&1 | tail -15 \
  | tee "$OUT/cuda_tests.txt"
# 2. The headline benchmark (docs/benchmarks.md), its JSON under docs/results and a profile.
mkdir -p "$OUT/results"
timeout ${BENCH_TIMEOUT:-420} $PY -m sw_driver.bench_training --results-dir "$OUT/results" \
  --profile "$OUT/results/profile-working-set.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt" \
  | tail -30
gzip -f "$OUT/results/profile-working-set.json" 2>/dev/null || true
