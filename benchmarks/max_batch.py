"""Largest batch N each method fits on this GPU (d = 512, bf16, one forward + backward), under a cap.

    python3 benchmarks/max_batch.py --json max_batch.json [--budget 75] [--methods naive,gapops_triton_fused]
    python3 benchmarks/max_batch.py --dry-run --json mb.json      # CPU, tiny sizes, the plumbing only

Per method, N starts at --start-n and doubles until the step runs out of memory, N would exceed
--max-n (docs/design.md's target: N = 1,048,576 in one 80 GB GPU), or the NEXT step would not fit the
time left. Each N runs two calls: the first (it may compile or autotune for a new size bucket) and
the timed one, so the reported time never includes tuning. The fused methods are compute-bound, so
the two calls at 2N are predicted at 4x the two at N and are not started when that prediction
exceeds what is left of the method's cap. The method runs
in a child process that is killed at its cap in any case (a step at N = 2^20 takes ~100 s on the
cuda backend), and every finished step is written to the JSON at once, so a kill loses only the
step in flight. Methods share --budget in order; what one leaves unused goes to the next.
The JSON feeds gpu_report.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_gpu import NEEDS_MODULE, TRITON_BWD, read_jsonl, run_child  # noqa: E402

DEFAULT_METHODS = ["naive", "gapops_triton_fused", "gapops_cuda"]


def child_main(args):
    """One method: doubles N, one JSON line per finished step, stops before an over-long step."""
    t_start = time.monotonic()
    from bench_gpu import Device, get_method, make_inputs, step

    dev = Device(args.dry_run)
    fn, why = get_method(args.child, args.dry_run)
    if fn is None:
        emit(args.progress, {"method": args.child, "stop": f"unavailable: {why}"})
        return 0
    import torch
    n, last = args.start_n, None
    while True:
        if n > args.max_n:
            emit(args.progress, {"method": args.child, "stop": f"max-n {args.max_n} reached"})
            return 0
        left = args.cap - (time.monotonic() - t_start)
        if last is not None and 4.0 * last > left:  # last: both calls at N/2
            emit(args.progress, {"method": args.child,
                                 "stop": f"time cap: N={n} predicted {4 * last:.0f} s > {left:.0f} s left"})
            return 0
        emit(args.progress, {"method": args.child, "started_N": n})
        dev.free()
        try:
            x, y, s = make_inputs(dev, n, args.d, torch.bfloat16)
            dev.sync()
            dev.reset_peak()
            t0 = time.perf_counter()
            step(fn, x, y, s)  # may compile / autotune (a new N bucket): not the timed call
            dev.sync()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            step(fn, x, y, s)
            dev.sync()
            secs = time.perf_counter() - t0
            emit(args.progress, {"method": args.child, "N": n, "seconds": secs,
                                 "first_call_seconds": first, "peak_mem_bytes": dev.peak()})
            print(f"  {args.child:22s} N={n:<8d} {secs:7.2f} s (first call {first:.2f} s)",
                  flush=True)
            del x, y, s
        except Exception as e:  # noqa: BLE001
            oom = dev.is_oom(e)
            emit(args.progress, {"method": args.child,
                                 "stop": f"OOM at N={n}" if oom else
                                 f"error at N={n}: {type(e).__name__}: {str(e)[:160]}"})
            return 0
        last = first + secs
        n *= 2


def emit(path, obj):
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def summarize(method, lines, killed_cap=None):
    """The row of one method from its progress lines."""
    steps = [r for r in lines if r.get("method") == method and "N" in r]
    stops = [r["stop"] for r in lines if r.get("method") == method and "stop" in r]
    started = [r["started_N"] for r in lines if r.get("method") == method and "started_N" in r]
    best = steps[-1] if steps else {}
    if stops:
        stop = stops[-1]
    elif killed_cap is not None:
        stop = f"time cap: killed at {killed_cap:.0f} s during N={started[-1] if started else '?'}"
    else:
        stop = "child ended without a verdict"
    return {"method": method, "N": best.get("N"), "seconds": best.get("seconds"),
            "peak_mem_bytes": best.get("peak_mem_bytes"), "stop": stop}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default="max_batch.json")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--start-n", type=int, default=None, help="default 65536 (dry run: 64)")
    p.add_argument("--max-n", type=int, default=None, help="default 2^20 (dry run: 1024)")
    p.add_argument("--budget", type=float, default=75.0, help="seconds for all methods")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--progress", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cap", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        args.d = min(args.d, 16)
    args.start_n = args.start_n or (64 if args.dry_run else 65536)
    args.max_n = args.max_n or (1024 if args.dry_run else 1 << 20)
    if args.child:
        return child_main(args)

    progress = args.json + ".progress"
    if os.path.exists(progress):
        os.remove(progress)
    methods = [m for m in args.methods.split(",") if m]
    deadline = time.monotonic() + args.budget
    rows = []

    def write():
        out = {"kind": "max_batch", "d": args.d, "dtype": "bf16", "start_n": args.start_n,
               "max_n": args.max_n, "budget_s": args.budget, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)

    for i, m in enumerate(methods):
        mod = NEEDS_MODULE.get(m)
        if mod and importlib.util.find_spec(mod) is None:
            rows.append({"method": m, "N": None, "stop": f"unavailable: {mod} is not installed"})
        elif m.startswith("gapops_cuda") and args.dry_run:
            rows.append({"method": m, "N": None, "stop": "skipped: dry run (needs a GPU)"})
        else:
            # an equal share of what is left; what a method leaves unused goes to the next
            cap = (deadline - time.monotonic()) / (len(methods) - i)
            if cap < 5:
                rows.append({"method": m, "N": None, "stop": "skipped: budget spent"})
            else:
                env = dict(os.environ)
                if m in TRITON_BWD:
                    env["GAPOPS_TRITON_BWD"] = TRITON_BWD[m]
                cmd = [sys.executable, os.path.abspath(__file__), "--child", m, "--progress",
                       progress, "--cap", f"{cap:.1f}", "--d", str(args.d), "--start-n",
                       str(args.start_n), "--max-n", str(args.max_n)]
                if args.dry_run:
                    cmd.append("--dry-run")
                rc, secs = run_child(cmd, env, cap + 2)
                rows.append(summarize(m, read_jsonl(progress),
                                      killed_cap=cap if rc == "timeout" else None))
        r = rows[-1]
        print(f"{m:22s} largest N = {r['N']}  ({r['stop']})", flush=True)
        write()
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
