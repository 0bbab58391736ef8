#!/usr/bin/env bash
# compute-sanitizer over the CUDA strip kernels (backend='cuda') on small, awkward cases.
# Run on a GPU machine from the repository root after building the extension:
#   bash benchmarks/gpu_sanitize.sh            # memcheck, racecheck, synccheck, initcheck
#   TOOLS="memcheck" bash benchmarks/gpu_sanitize.sh
# Exits non-zero when a tool reports an error. Sizes are kept tiny: racecheck is slow.
set -euo pipefail
cd "$(dirname "$0")/.."

SANITIZER=${COMPUTE_SANITIZER:-compute-sanitizer}
if ! command -v "$SANITIZER" >/dev/null 2>&1; then
  for c in "${CUDA_HOME:-}" /usr/local/cuda; do
    if [ -n "$c" ] && [ -x "$c/bin/compute-sanitizer" ]; then SANITIZER="$c/bin/compute-sanitizer"; fi
  done
fi
command -v "$SANITIZER" >/dev/null 2>&1 || [ -x "$SANITIZER" ] || { echo "compute-sanitizer not found" >&2; exit 2; }
PYTHON=${PYTHON:-python}
TOOLS=${TOOLS:-"memcheck racecheck synccheck initcheck"}

CASE=$(mktemp /tmp/gapops_sanitize_XXXX.py)
trap 'rm -f "$CASE"' EXIT
cat > "$CASE" <<'PY'
import torch
import gapops
from gapops.reference import reference_strip_forward

assert torch.cuda.is_available(), "needs a CUDA device"
assert gapops.backends()["cuda"] == "available", gapops.backends()["cuda"]
ops = torch.ops.gapops
torch.manual_seed(0)
# (n, m, d, offset): tails in every dimension, offset > 0, a single row
cases = [(1, 1, 1, 0), (70, 90, 33, 10), (65, 130, 40, 65)]
for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    for tf32 in ((False, True) if dtype == torch.float32 else (False,)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for n, m, d, off in cases:
            a = torch.randn(n, d, device="cuda").to(dtype)
            b = torch.randn(m, d, device="cuda").to(dtype)
            s = torch.tensor(10.0, device="cuda", dtype=acc)
            row, col, pos = ops.strip_forward(a, b, s, off)
            g_row = torch.rand(n, device="cuda", dtype=acc) / n
            g_col = torch.rand(m, device="cuda", dtype=acc) / m
            for det in (False, True):
                dA, dB, ds = ops.strip_backward(a, b, s, off, row, col, g_row, g_col, det)
            torch.cuda.synchronize()
            want = reference_strip_forward(a.double(), b.double(), s.double(), off)
            err = float((row.double() - want[0]).abs().max())
            print(f"{str(dtype):15s} tf32={tf32!s:5s} n={n} m={m} d={d} offset={off}: max |row_lse err| {err:.2e}")
# the public loss end to end (normalize, swap, autograd)
x = torch.randn(50, 24, device="cuda", requires_grad=True)
y = torch.randn(50, 24, device="cuda", requires_grad=True)
loss = gapops.contrastive_loss(x, y, torch.tensor(20.0, device="cuda"), backend="cuda")
loss.backward()
torch.cuda.synchronize()
print("loss", float(loss))
PY

status=0
for tool in $TOOLS; do
  echo "=== compute-sanitizer --tool $tool"
  extra=()
  [ "$tool" = "racecheck" ] && extra=(--racecheck-report all)
  [ "$tool" = "initcheck" ] && extra=(--track-unused-memory no)
  if ! "$SANITIZER" --tool "$tool" --error-exitcode 99 "${extra[@]}" "$PYTHON" "$CASE"; then
    echo "!!! $tool reported errors" >&2
    status=1
  fi
done
exit $status
