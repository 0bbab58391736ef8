#!/usr/bin/env bash
# The whole GPU check in one go (meant to stay under ten minutes on one H100):
#   1. build the extension in place (CUDA kernels included when nvcc is found),
#   2. the full test suite with CUDA (every backend, the triton one compiled for real),
#   2b. compute-sanitizer memcheck/racecheck on backend='cuda',
#   3. the GPU benchmarks (bench_gpu.py) and the largest batch per method (max_batch.py),
#   4. a markdown table appended to benchmarks/RESULTS.md (device name and date).
# Usage: bash benchmarks/gpu_check.sh        QUICK=1 shrinks the benchmark grid to d = 768.
# Outputs land in $OUT if set (e.g. on the device machine), else in benchmarks/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/out}"
mkdir -p "$OUT_DIR"
export MAX_JOBS="${MAX_JOBS:-16}"
unset TRITON_INTERPRET

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

echo "== build" && time pip install --no-build-isolation -e . -q 2>&1 | tail -5
python -c "import gapops; print(gapops.backends()); print(gapops.build_info())"

echo "== tests (CUDA)"
time python -m pytest -q tests -p no:cacheprovider --durations=15 2>&1 | tee "$OUT_DIR/pytest.txt" \
    | tail -40 || echo "gpu_check.sh: TESTS FAILED (see $OUT_DIR/pytest.txt); benchmarks still run"

echo "== compute-sanitizer on the cuda backend (small cases)"
time bash benchmarks/gpu_sanitize.sh 2>&1 | tee "$OUT_DIR/sanitize.txt" | tail -8 \
    || echo "gpu_check.sh: SANITIZER REPORTED ERRORS (see $OUT_DIR/sanitize.txt)"

if [ "${QUICK:-0}" = "1" ]; then export GAPOPS_BENCH_D="${GAPOPS_BENCH_D:-768}"; fi
echo "== benchmarks"
time python -m pytest -q benchmarks/bench_gpu.py -p no:cacheprovider \
    --benchmark-json="$OUT_DIR/bench.json" --benchmark-columns=mean,min,rounds 2>&1 \
    | tee "$OUT_DIR/bench.txt" | tail -15 || echo "gpu_check.sh: some benchmark cases failed"
echo "== largest batch"
time python benchmarks/max_batch.py --json "$OUT_DIR/max_batch.json" | tee "$OUT_DIR/max_batch.txt" \
    || echo "gpu_check.sh: max_batch.py failed"

echo "== report"
MB=(); [ -f "$OUT_DIR/max_batch.json" ] && MB=(--max-batch "$OUT_DIR/max_batch.json")
python benchmarks/gpu_report.py "$OUT_DIR/bench.json" "${MB[@]}" \
    --out benchmarks/RESULTS.md | tee "$OUT_DIR/report.md"
cp benchmarks/RESULTS.md "$OUT_DIR/RESULTS.md" 2>/dev/null || true
