#!/usr/bin/env bash
# compute-sanitizer over every GPU kernel of gapops (cuda backend and both Triton backward shapes)
# on small, awkward cases (benchmarks/sanitize_cases.py, public API only).
# Run from anywhere on a GPU machine after building the extension:
#   bash benchmarks/gpu_sanitize.sh                    # memcheck racecheck synccheck initcheck
#   TOOLS=memcheck bash benchmarks/gpu_sanitize.sh     # what gpu_check.sh runs by default
#   bash benchmarks/gpu_sanitize.sh --dry-run          # CPU: the cases without the sanitizer
#   SANITIZE_QUICK=1 SANITIZE_PARALLEL=1 TOOLS=memcheck bash benchmarks/gpu_sanitize.sh
#       # the GPU check's QUICK mode: bf16 cases only (sanitize_cases.py --quick), the runs at once
# Runs, per tool: (1) the cuda backend + Triton with GAPOPS_TRITON_BWD=fused, (2) Triton with
# GAPOPS_TRITON_BWD=gstrip (a separate process: the switch may be read at import).
# Exits non-zero when a tool reports an error or a case is wrong. racecheck is slow.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TOOLS=${TOOLS:-"memcheck racecheck synccheck initcheck"}
DRY=${GAPOPS_GPU_CHECK_DRYRUN:-0}
[ "${1:-}" = "--dry-run" ] && DRY=1
# backends:GAPOPS_TRITON_BWD per run
RUNS=${SANITIZE_RUNS:-"cuda,triton:fused triton:gstrip"}
CASE_FLAGS=()
[ "${SANITIZE_QUICK:-0}" = 1 ] && CASE_FLAGS+=(--quick)
PARALLEL=${SANITIZE_PARALLEL:-0}

status=0
if [ "$DRY" = "1" ]; then
  echo "gpu_sanitize.sh: dry run: the cases on the CPU without compute-sanitizer (tools: $TOOLS)"
  for run in $RUNS; do
    be=${run%%:*}; shape=fused; [[ $run == *:* ]] && shape=${run#*:}
    echo "=== (dry run) $be GAPOPS_TRITON_BWD=$shape"
    TRITON_INTERPRET=1 GAPOPS_TRITON_BWD=$shape "$PY" benchmarks/sanitize_cases.py --dry-run \
        "${CASE_FLAGS[@]}" --backends "$be" || status=1
  done
  exit $status
fi

SANITIZER=${COMPUTE_SANITIZER:-compute-sanitizer}
if ! command -v "$SANITIZER" >/dev/null 2>&1; then
  for c in "${CUDA_HOME:-}" /usr/local/cuda; do
    if [ -n "$c" ] && [ -x "$c/bin/compute-sanitizer" ]; then SANITIZER="$c/bin/compute-sanitizer"; fi
  done
fi
command -v "$SANITIZER" >/dev/null 2>&1 || [ -x "$SANITIZER" ] || { echo "compute-sanitizer not found" >&2; exit 2; }

sanitize_one() {  # tool run: one compute-sanitizer process; its output is prefixed when parallel
  local tool=$1 run=$2 be shape extra=()
  be=${run%%:*}; shape=fused; [[ $run == *:* ]] && shape=${run#*:}
  echo "=== compute-sanitizer --tool $tool: backends $be, GAPOPS_TRITON_BWD=$shape"
  [ "$tool" = "racecheck" ] && extra=(--racecheck-report all)
  [ "$tool" = "initcheck" ] && extra=(--track-unused-memory no)
  if ! GAPOPS_TRITON_BWD=$shape "$SANITIZER" --tool "$tool" --error-exitcode 99 "${extra[@]}" \
       "$PY" benchmarks/sanitize_cases.py "${CASE_FLAGS[@]}" --backends "$be"; then
    echo "!!! $tool reported errors (backends $be, GAPOPS_TRITON_BWD=$shape)" >&2
    return 1
  fi
}

for tool in $TOOLS; do
  if [ "$PARALLEL" = 1 ]; then  # the runs at once (no timing here: they only share the GPU)
    pids=()
    for run in $RUNS; do
      sanitize_one "$tool" "$run" > >(sed -u "s|^|[$run] |") 2>&1 &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  else
    for run in $RUNS; do sanitize_one "$tool" "$run" || status=1; done
  fi
done
exit $status
