"""Largest batch N each method fits on this GPU: d = 512, bf16, one forward + backward.

    python benchmarks/max_batch.py [--json max_batch.json] [--max-n 1048576] [--time-cap 30]

For each method of bench_gpu.py, N starts at 4096 and doubles until the step runs out of memory,
N exceeds --max-n (DESIGN.md's target is N = 1,048,576 in one 80 GB GPU), or one step takes
longer than --time-cap seconds (the fused methods are compute-bound: N = 2^21 is ~4x N = 2^20).
Prints a table and writes JSON that gpu_report.py adds to RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gpu import ALL_METHODS, free_memory, get_method, make_inputs, step  # noqa: E402


def largest_n(fn, d, dtype, max_n, time_cap):
    n, best, stop = 4096, None, "max-n reached"
    while n <= max_n:
        free_memory()
        try:
            x, y, s = make_inputs(n, d, dtype)
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            step(fn, x, y, s)
            secs = time.perf_counter() - t0
            best = {"N": n, "seconds": secs, "peak_mem_bytes": torch.cuda.max_memory_allocated()}
            del x, y, s
        except torch.cuda.OutOfMemoryError:
            stop = f"OOM at N={n}"
            break
        except Exception as e:
            stop = f"error at N={n}: {type(e).__name__}: {str(e)[:160]}"
            break
        if secs > time_cap:
            stop = f"time cap ({secs:.1f} s at N={n})"
            break
        n *= 2
    free_memory()
    return best, stop


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default="max_batch.json")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--max-n", type=int, default=1 << 20)
    p.add_argument("--time-cap", type=float, default=30.0)
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("max_batch.py: no CUDA device, nothing to do")
        return 0
    rows = []
    for name in args.methods.split(","):
        fn, why = get_method(name)
        if fn is None:
            rows.append({"method": name, "N": None, "stop": f"unavailable: {why}"})
        else:
            best, stop = largest_n(fn, args.d, torch.bfloat16, args.max_n, args.time_cap)
            rows.append({"method": name, **(best or {"N": None}), "stop": stop})
        r = rows[-1]
        print(f"{name:15s} largest N = {r['N']}  ({r['stop']})", flush=True)
    out = {"device": torch.cuda.get_device_name(), "d": args.d, "dtype": "bf16", "rows": rows}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
