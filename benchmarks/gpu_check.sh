#!/usr/bin/env bash
# The whole GPU check in one command, sized for a 15-minute lease (one command <= 10 minutes,
# machine start included): <= 6 minutes of command time in the default QUICK mode (its budget,
# 360 s, is a deadline every step obeys), so a rerun fits the same lease. Every step has its own
# time cap, and all steps share one deadline, so a slow step costs only itself and the report
# (Markdown + JSON, rebuilt after every step) always comes back. See docs/gpu_check.md.
#
#   bash benchmarks/gpu_check.sh                 # QUICK, on a GPU machine (python3, nvcc)
#   bash benchmarks/gpu_check.sh --full          # longer grid, all sanitizer tools, GPU tests
#   bash benchmarks/gpu_check.sh --dry-run       # on a CPU: every step's plumbing, tiny sizes
#   GAPOPS_GPU_CHECK_DRYRUN=1 bash benchmarks/gpu_check.sh      # the same
#
# Steps, in order:
#   env             device, driver, versions                           -> env.json
#   wheels          installs .whl/*.whl (benchmarks/fetch_gpu_wheels.sh) with no network
#   build           the extension for THIS GPU's arch only, in the background, while...
#   correct_triton  ...Triton (both backward shapes, deterministic too) vs float64, and
#   bench           ...the forward+backward table of every method but the cuda backend's
#                   (bench_gpu.py, one child process per method; the GPU is theirs alone)
#   build_wait      waits for the build (at most its cap)
#   correct_cuda    the cuda backend vs float64
#   bench_cuda      the cuda backend's rows of the table, with the cuBLAS-strip model beside them
#   memcheck        compute-sanitizer memcheck on the smallest cases (gpu_sanitize.sh; QUICK:
#                   bf16 only, the runs in parallel; --full: every dtype and sanitizer tool)
#   tests           (--full only) the pytest suite on the GPU
#   max_n           the largest N per method, stopping at its time cap (max_batch.py)
# Outputs: $OUT (the device machine sets it) or benchmarks/out/: gpu_check.md, gpu_check.json,
# gpu_check.log. Intermediate files: $GAPOPS_GPU_CHECK_WORK (default: a fresh /tmp folder).
#
# Environment: GAPOPS_GPU_CHECK_BUDGET (seconds for everything; QUICK 360, --full 2400, dry run
# 420), GAPOPS_CAP_<STEP> (one step's cap, e.g. GAPOPS_CAP_BENCH=120), GAPOPS_GPU_CHECK_STEPS
# (comma list: run only these steps), GAPOPS_GPU_CHECK_DRY_BUILD=1 (a dry run compiles the CPU
# extension for real), MAX_JOBS (build parallelism, default: all cores), PYTHON (default python3),
# GAPOPS_GPU_CHECK_TEST_HANG=<step> (for tests: that step hangs until its cap).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}

MODE=quick
DRY=${GAPOPS_GPU_CHECK_DRYRUN:-0}
for arg in "$@"; do
  case "$arg" in
    --full) MODE=full ;;
    --quick) MODE=quick ;;
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
[ "$DRY" = "1" ] && DRY=1 || DRY=0

OUT_DIR=${OUT:-$ROOT/benchmarks/out}
mkdir -p "$OUT_DIR"
WORK=${GAPOPS_GPU_CHECK_WORK:-$(mktemp -d /tmp/gapops-gpu-check.XXXXXX)}
mkdir -p "$WORK"
: > "$WORK/steps.jsonl"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
# on exit, let tee write out the last lines before the command returns (the caller reads them)
trap 'exec 1>&- 2>&-; wait "$TEE_PID" 2>/dev/null || sleep 1' EXIT

if [ "$DRY" = 1 ]; then DEFAULT_BUDGET=420; elif [ "$MODE" = full ]; then DEFAULT_BUDGET=2400; else DEFAULT_BUDGET=360; fi
BUDGET=${GAPOPS_GPU_CHECK_BUDGET:-$DEFAULT_BUDGET}

# --- clock (milliseconds), budget and caps -------------------------------------------------
now_ms() { if [ -n "${EPOCHREALTIME:-}" ]; then local t=${EPOCHREALTIME/./}; echo $((10#$t / 1000)); else date +%s%3N; fi; }
T0=$(now_ms)
DEADLINE=$((T0 + BUDGET * 1000))
STEP_ORDER=(env wheels build correct_triton bench build_wait correct_cuda bench_cuda memcheck tests
            max_n report)
# default caps (s) per mode; QUICK's budget, step by step, is in docs/gpu_check.md
declare -A CAP_QUICK=([env]=30 [wheels]=20 [build]=210 [correct_triton]=90 [bench]=150
                      [correct_cuda]=40 [bench_cuda]=30 [memcheck]=40 [tests]=0 [max_n]=30)
declare -A CAP_FULL=([env]=30 [wheels]=30 [build]=420 [correct_triton]=300 [bench]=1100
                     [correct_cuda]=120 [bench_cuda]=300 [memcheck]=420 [tests]=600 [max_n]=300)
declare -A CAP_DRY=([env]=30 [wheels]=30 [build]=240 [correct_triton]=90 [bench]=200
                    [correct_cuda]=30 [bench_cuda]=30 [memcheck]=60 [tests]=0 [max_n]=45)
# time kept back for the steps after a step (a step that overruns cannot starve the later ones)
declare -A RESERVE=([env]=0 [wheels]=0 [build]=0 [correct_triton]=30 [bench]=60 [build_wait]=0
                    [correct_cuda]=20 [bench_cuda]=20 [memcheck]=20 [tests]=0 [max_n]=15
                    [report]=5)
if [ "$MODE" = full ]; then RESERVE[tests]=60; fi

selected() { [ -z "${GAPOPS_GPU_CHECK_STEPS:-}" ] || [[ ",${GAPOPS_GPU_CHECK_STEPS}," == *",$1,"* ]]; }
default_cap() {
  local name=$1 var="GAPOPS_CAP_${1^^}"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  if [ "$DRY" = 1 ]; then echo "${CAP_DRY[$name]}"; elif [ "$MODE" = full ]; then echo "${CAP_FULL[$name]}"; else echo "${CAP_QUICK[$name]}"; fi
}
reserve_after() {  # seconds kept for the steps after $1
  local seen=0 sum=0 s
  for s in "${STEP_ORDER[@]}"; do
    if [ $seen = 1 ] && { selected "$s" || [ "$s" = report ]; }; then sum=$((sum + ${RESERVE[$s]:-0})); fi
    [ "$s" = "$1" ] && seen=1
  done
  echo $sum
}
cap_for() {  # min(the step's cap, time to the deadline less what later steps keep)
  local cap=$2 left
  left=$(( (DEADLINE - $(now_ms)) / 1000 - $(reserve_after "$1") ))
  (( left < cap )) && cap=$left
  echo $cap
}

record() {  # name status seconds cap note
  printf '{"step": "%s", "status": "%s", "seconds": %s, "cap": %s, "note": "%s"}\n' \
    "$1" "$2" "$3" "$4" "${5//\"/\'}" >> "$WORK/steps.jsonl"
}
report() {
  timeout 30 "$PY" "$ROOT/benchmarks/gpu_report.py" --work "$WORK" --md "$OUT_DIR/gpu_check.md" \
    --json "$OUT_DIR/gpu_check.json" --quiet || echo "gpu_check.sh: the report failed"
}
status_of() { case $1 in 0) echo ok ;; 124|137) echo timeout ;; *) echo "failed (exit $1)" ;; esac; }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

run_step() {  # name note -- command...   (runs it under its cap; records; rebuilds the report)
  local name=$1 note=$2; shift 3
  if ! selected "$name"; then record "$name" "not selected" 0 0 ""; return 0; fi
  local cap; cap=$(cap_for "$name" "$(default_cap "$name")")
  if (( cap < 5 )); then
    echo "== [$name] SKIPPED: the budget is spent (${BUDGET} s in all)"
    record "$name" "skipped (budget)" 0 "$cap" "$note"; report; return 0
  fi
  echo "== [$name] $note (cap ${cap} s, $(( (DEADLINE - $(now_ms)) / 1000 )) s left of ${BUDGET})"
  local t0; t0=$(now_ms)
  if [ "${GAPOPS_GPU_CHECK_TEST_HANG:-}" = "$name" ]; then  # test hook: this step never ends
    timeout -k 5 "$cap" sleep 3600
  elif declare -F "$1" >/dev/null; then  # a function of this script: run it in a child bash
    timeout -k 5 "$cap" bash -c "$1"
  else
    timeout -k 5 "$cap" "$@"
  fi
  local rc=$?
  local secs; secs=$(secs_since "$t0")
  echo "== [$name] $(status_of $rc) in ${secs} s"
  record "$name" "$(status_of $rc)" "$secs" "$cap" "$note"
  report
  return $rc
}
skip_step() {  # name why
  echo "== [$1] SKIPPED: $2"
  record "$1" "skipped" 0 0 "$2"; report
}

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset GAPOPS_TRITON_BWD
if [ "$DRY" = 1 ]; then export TRITON_INTERPRET=1; else unset TRITON_INTERPRET; fi
echo "gpu_check.sh: mode $MODE$([ $DRY = 1 ] && echo ', DRY RUN on the CPU (tiny sizes, Triton interpreted, no cuda backend)'), budget ${BUDGET} s, outputs in $OUT_DIR, work files in $WORK"

# --- env ----------------------------------------------------------------------------------
env_step() {
  GAPOPS_MODE="$MODE$([ $DRY = 1 ] && echo ' dry run')" "$PY" - "$WORK/env.json" <<'PY'
import importlib.util, json, os, platform, shutil, subprocess, sys
out = {"mode": os.environ.get("GAPOPS_MODE"), "python": platform.python_version(),
       "cpus": os.cpu_count()}
def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"({type(e).__name__})"
import torch
out.update(torch=torch.__version__, cuda=torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out.update(device=torch.cuda.get_device_name(), capability=f"{p.major}.{p.minor}",
               memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count)
    out["driver"] = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
else:
    out["device"] = "cpu (dry run)" if "dry" in (out["mode"] or "") else "no CUDA device"
for mod in ("triton", "numpy", "setuptools", "pytest"):
    try:
        out[mod] = __import__(mod).__version__
    except Exception as e:  # noqa: BLE001
        out[mod] = f"absent ({type(e).__name__})"
for mod in ("open_clip", "inf_cl", "memeff", "siglip_kernel"):
    out[mod] = "present" if importlib.util.find_spec(mod) else "absent"
nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
out["nvcc"] = run([nvcc, "--version"]).splitlines()[-1] if nvcc else "absent"
out["compute_sanitizer"] = shutil.which("compute-sanitizer") or (
    "/usr/local/cuda/bin/compute-sanitizer" if os.path.exists("/usr/local/cuda/bin/compute-sanitizer") else "absent")
ver = {}
exec(open("gapops/_version.py").read(), ver)
out["gapops"] = ver.get("__version__")
out["commit"] = run(["git", "rev-parse", "--short", "HEAD"]) or os.environ.get("GAPOPS_COMMIT", "unknown")
json.dump(out, open(sys.argv[1], "w"), indent=1)
for k, v in out.items():
    print(f"  {k:18s} {v}")
PY
}
export -f env_step
export PY WORK ROOT MODE DRY
run_step env "device and versions" -- env_step
HAVE_GPU=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(1 if d.get("capability") else 0)' "$WORK/env.json" 2>/dev/null || echo 0)
if [ "$DRY" = 0 ] && [ "$HAVE_GPU" != 1 ]; then
  echo "gpu_check.sh: no CUDA device is visible: run it on a GPU machine, or with --dry-run on a CPU"
  record abort "failed" 0 0 "no CUDA device"; report
  exit 2
fi

# --- wheels -------------------------------------------------------------------------------
wheels_step() {
  local site="$WORK/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$ROOT"/.whl/*.whl && ls "$site"
}
export -f wheels_step
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  run_step wheels "install $(ls "$ROOT"/.whl/*.whl | wc -l) wheels from .whl/ (no network)" -- wheels_step \
    && export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH#$ROOT}"
else
  skip_step wheels "no .whl/ folder (bash benchmarks/fetch_gpu_wheels.sh brings open_clip, Inf-CL, memeff, siglip-kernel, setuptools)"
fi

# --- build (background) -------------------------------------------------------------------
build_cmd() {
  # The extension for this GPU's arch only, outside the tree, then moved into gapops/ at once
  # (the Triton steps import gapops meanwhile). setuptools < 77 rejects pyproject's SPDX license
  # string: then the build runs from a copy with the older table form.
  local src=$ROOT
  local stv; stv=$("$PY" -c 'import setuptools; print(setuptools.__version__.split(".")[0])' 2>/dev/null || echo 0)
  if (( stv < 77 )); then
    echo "build: setuptools $stv < 77: building from a copy with license = {text = ...}"
    src="$WORK/src"; mkdir -p "$src"
    tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./.whl \
        --exclude=./benchmarks/out --exclude='*.so' -cf - . | tar -C "$src" -xf -
    sed -i -e 's/^license = "\(.*\)"$/license = {text = "\1"}/' -e '/^license-files = /d' \
        "$src/pyproject.toml"
  fi
  if [ "$DRY" = 1 ]; then
    if [ "${GAPOPS_GPU_CHECK_DRY_BUILD:-0}" != 1 ]; then
      echo "build: dry run: no compile (GAPOPS_GPU_CHECK_DRY_BUILD=1 compiles the CPU extension)"
      sleep 2; return 0
    fi
    export GAPOPS_SKIP_CUDA_BUILD=1; unset GAPOPS_FORCE_CUDA_BUILD
  else
    export GAPOPS_FORCE_CUDA_BUILD=1 GAPOPS_CUDA_ARCHS="$ARCH"
  fi
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  (cd "$src" && "$PY" setup.py -q build_ext --build-lib "$WORK/build/lib" --build-temp "$WORK/build/temp") || return 1
  local so; so=$(ls "$WORK"/build/lib/gapops/_C*.so | head -n 1) || return 1
  cp "$so" "$ROOT/gapops/.C.so.tmp" && mv -f "$ROOT/gapops/.C.so.tmp" "$ROOT/gapops/$(basename "$so")"
  echo "build: $(basename "$so") in gapops/"
}
export -f build_cmd
ARCH=$("$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])).get("capability") or ""; print(c.replace(".", ""))' "$WORK/env.json" 2>/dev/null)
export ARCH DRY WORK ROOT PY
BUILD_PID=""
if selected build; then
  # the build runs beside correct_triton and bench: it need only leave the time of the steps after
  # build_wait (the cuda steps need it; the others do not wait for it)
  BUILD_CAP=$(cap_for build_wait "$(default_cap build)")
  echo "== [build] the extension for sm_${ARCH:-none} in the background (cap ${BUILD_CAP} s), log in the report's work folder"
  BUILD_T0=$(now_ms)
  ( timeout -k 5 "$BUILD_CAP" bash -c build_cmd > "$WORK/build.log" 2>&1 &
    echo $! > "$WORK/build.tpid"; wait $!; rc=$?; secs_since "$BUILD_T0" > "$WORK/build.secs"
    echo $rc > "$WORK/build.rc" ) &
  BUILD_PID=$!
else
  record build "not selected" 0 0 ""
fi

# --- Triton correctness (while the build runs) --------------------------------------------
if [ "$DRY" = 1 ]; then CORR_FLAGS=(--dry-run); elif [ "$MODE" = quick ]; then CORR_FLAGS=(--quick); else CORR_FLAGS=(); fi
run_step correct_triton "Triton (GAPOPS_TRITON_BWD=fused and gstrip, deterministic) vs float64" -- \
  "$PY" benchmarks/gpu_correctness.py "${CORR_FLAGS[@]}" --variants triton:fused,triton:gstrip \
  --jsonl "$WORK/correctness.jsonl"

# --- benchmark, all but the cuda backend (while the build may still run) -------------------
BENCH_FLAGS=()
[ "$DRY" = 1 ] && BENCH_FLAGS+=(--dry-run)
if [ "$MODE" = full ]; then BENCH_FLAGS+=(--full --method-cap 300); elif [ "$DRY" = 0 ]; then
  BENCH_FLAGS+=(--method-cap "${GAPOPS_BENCH_METHOD_CAP:-40}"); fi
# the dry run has no cuda step: its bench records the cuda rows as skipped
[ "$DRY" = 1 ] && BENCH_GROUP=all || BENCH_GROUP=nocuda
unset GAPOPS_BENCH_CONCURRENT
if [ -n "$BUILD_PID" ] && [ ! -f "$WORK/build.rc" ]; then
  export GAPOPS_BENCH_CONCURRENT="the extension's build (nvcc on the CPU cores)"
fi
BCAP=$(cap_for bench "$(default_cap bench)")
run_step bench "forward+backward table, all methods but the cuda backend's (bench_gpu.py)" -- \
  "$PY" benchmarks/bench_gpu.py "${BENCH_FLAGS[@]}" --group "$BENCH_GROUP" \
  --budget "$(( BCAP > 10 ? BCAP - 5 : BCAP ))" --jsonl "$WORK/bench.jsonl"
unset GAPOPS_BENCH_CONCURRENT

# --- wait for the build -------------------------------------------------------------------
CUDA_OK=0
if [ -n "$BUILD_PID" ]; then
  WAIT_CAP=$(cap_for build_wait "$(( BUILD_CAP - ($(now_ms) - BUILD_T0) / 1000 + 10 ))")
  echo "== [build_wait] waiting at most ${WAIT_CAP} s for the build"
  WAIT_T0=$(now_ms)
  t=0
  while [ ! -f "$WORK/build.rc" ] && (( t < WAIT_CAP * 2 )); do sleep 0.5; t=$((t + 1)); done
  if [ -f "$WORK/build.rc" ]; then rc=$(cat "$WORK/build.rc"); else
    rc=124; kill -TERM "$(cat "$WORK/build.tpid")" 2>/dev/null; echo "build: abandoned (deadline)"; fi
  wait "$BUILD_PID" 2>/dev/null
  tail -n 15 "$WORK/build.log" | sed 's/^/  build| /'
  BSECS=$(cat "$WORK/build.secs" 2>/dev/null || secs_since "$BUILD_T0")
  echo "== [build] $(status_of "$rc") in ${BSECS} s (in the background; waited $(secs_since "$WAIT_T0") s for it)"
  record build "$(status_of "$rc")" "$BSECS" "$BUILD_CAP" "sm_${ARCH:-cpu}, MAX_JOBS=${MAX_JOBS:-$(nproc)}"
  [ "$rc" = 0 ] && CUDA_OK=1
  "$PY" -c 'import gapops, json; print("  backends:", json.dumps(gapops.backends())); print("  build:", gapops.build_info())' || true
  report
fi

# --- cuda correctness ---------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  skip_step correct_cuda "dry run: the cuda backend needs a GPU"
elif [ "$CUDA_OK" != 1 ]; then
  skip_step correct_cuda "the extension did not build"
else
  run_step correct_cuda "the cuda backend (deterministic too) vs float64" -- \
    "$PY" benchmarks/gpu_correctness.py "${CORR_FLAGS[@]}" --variants cuda --jsonl "$WORK/correctness.jsonl"
fi

# --- the cuda backend's benchmark rows -----------------------------------------------------
if [ "$DRY" = 1 ]; then
  skip_step bench_cuda "dry run: the cuda backend needs a GPU (the bench step recorded its rows)"
elif [ "$CUDA_OK" != 1 ]; then
  skip_step bench_cuda "the extension did not build"
else
  BCCAP=$(cap_for bench_cuda "$(default_cap bench_cuda)")
  run_step bench_cuda "the cuda backend's rows, cuBLAS-strip model beside them (bench_gpu.py)" -- \
    "$PY" benchmarks/bench_gpu.py "${BENCH_FLAGS[@]}" --group cuda \
    --budget "$(( BCCAP > 10 ? BCCAP - 3 : BCCAP ))" --jsonl "$WORK/bench.jsonl"
fi

# --- compute-sanitizer --------------------------------------------------------------------
# QUICK: memcheck on the bf16 cases only (N = 1 and 70, d = 8 and 33: every kernel on tails),
# the runs in parallel; --full: every dtype, every tool, one run after another.
if [ "$MODE" = full ]; then TOOLS_RUN="memcheck racecheck synccheck initcheck"; SAN_QUICK=0; else
  TOOLS_RUN=memcheck; SAN_QUICK=1; fi
if [ "$CUDA_OK" = 1 ] || [ "$DRY" = 1 ]; then RUNS="cuda,triton:fused triton:gstrip"; else RUNS="triton:fused triton:gstrip"; fi
memcheck_step() {
  set -o pipefail
  TOOLS="$TOOLS_RUN" SANITIZE_RUNS="$RUNS" GAPOPS_GPU_CHECK_DRYRUN=$DRY SANITIZE_QUICK=$SAN_QUICK \
    SANITIZE_PARALLEL=$SAN_QUICK bash benchmarks/gpu_sanitize.sh 2>&1 | tee "$WORK/memcheck.log"
}
export -f memcheck_step
export TOOLS_RUN RUNS SAN_QUICK
run_step memcheck "compute-sanitizer $TOOLS_RUN on the smallest cases$([ $SAN_QUICK = 1 ] && echo ', bf16') ($RUNS)" -- memcheck_step

# --- the GPU test suite (--full) ----------------------------------------------------------
if [ "$MODE" = full ] && [ "$DRY" = 0 ]; then
  run_step tests "pytest on the GPU (not slow)" -- "$PY" -m pytest -q -p no:cacheprovider \
    -m "not slow" tests
fi

# --- largest N ----------------------------------------------------------------------------
MB_FLAGS=()
[ "$DRY" = 1 ] && MB_FLAGS+=(--dry-run)
[ "$MODE" = full ] && MB_FLAGS+=(--max-n $((1 << 21)) --start-n 16384)
MCAP=$(cap_for max_n "$(default_cap max_n)")
run_step max_n "largest N per method, d = 512 bf16 (max_batch.py)" -- "$PY" benchmarks/max_batch.py \
  "${MB_FLAGS[@]}" --budget "$(( MCAP > 10 ? MCAP - 5 : MCAP ))" --json "$WORK/max_batch.json"

# --- report -------------------------------------------------------------------------------
record total "done" "$(secs_since "$T0")" "$BUDGET" "wall time of gpu_check.sh"
report
cat "$OUT_DIR/gpu_check.md"
echo
echo "gpu_check.sh: steps (status, seconds / cap):"
"$PY" - "$WORK/steps.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    s = json.loads(line)
    print(f"  {s['step']:15s} {s['status']:22s} {s['seconds']:>7} / {s['cap']}")
PY
echo "gpu_check.sh: done in $(secs_since "$T0") s; report: $OUT_DIR/gpu_check.md and gpu_check.json"
