"""Turn bench_gpu.py's pytest-benchmark JSON (and max_batch.py's JSON) into markdown for RESULTS.md.

    python benchmarks/gpu_report.py bench.json [--max-batch max_batch.json] [--out benchmarks/RESULTS.md]

Appends one section headed by the device name (torch.cuda.get_device_name) and the date: per
(dtype, d, N) a table of every method's time, TFLOP/s (8 N^2 d per forward + backward), fraction
of the dense torch.mm rate measured in the same run, and peak memory; OOM and errors as such.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import defaultdict


def _gib(b):
    return f"{b / 2**30:.2f}" if b is not None else "-"


def bench_tables(data) -> list[str]:
    groups = defaultdict(list)
    for bm in data.get("benchmarks", []):
        info = bm.get("extra_info", {})
        if "method" not in info:
            continue
        groups[(info["dtype"], info["d"])].append((bm, info))
    lines = []
    for (dtype, d), items in sorted(groups.items()):
        lines += [f"#### {dtype}, d = {d}", "",
                  "| N | method | time (ms) | TFLOP/s | of dense mm | dense mm TFLOP/s | peak mem (GiB) | extra over inputs (GiB) |",
                  "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for bm, info in sorted(items, key=lambda t: (t[1]["N"], t[1]["method"])):
            status = info.get("status", "skipped")
            mm = info.get("mm_tflops")
            mm_s = f"{mm:.0f}" if isinstance(mm, (int, float)) and mm == mm else "-"
            if status == "ok":
                t = bm["stats"]["mean"] * 1e3
                lines.append(f"| {info['N']} | {info['method']} | {t:.2f} | {info['tflops']:.0f} | "
                             f"{100 * info['frac_of_mm']:.0f}% | {mm_s} | "
                             f"{_gib(info.get('peak_mem_bytes'))} | {_gib(info.get('peak_extra_bytes'))} |")
            else:
                lines.append(f"| {info['N']} | {info['method']} | {status} | | | {mm_s} | | |")
        lines.append("")
    return lines


def max_batch_table(data) -> list[str]:
    lines = [f"#### Largest N that fits (d = {data['d']}, {data['dtype']}, forward + backward)", "",
             "| method | largest N | step (s) | peak mem (GiB) | stopped by |",
             "| --- | ---: | ---: | ---: | --- |"]
    for r in data["rows"]:
        secs = f"{r['seconds']:.2f}" if r.get("seconds") is not None else "-"
        lines.append(f"| {r['method']} | {r.get('N') or '-'} | {secs} | "
                     f"{_gib(r.get('peak_mem_bytes'))} | {r['stop']} |")
    return lines + [""]


def device_name(data) -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    except ImportError:
        pass
    return data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "unknown device")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_json")
    p.add_argument("--max-batch", default=None)
    p.add_argument("--out", default="benchmarks/RESULTS.md")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    with open(args.bench_json) as f:
        data = json.load(f)
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {device_name(data)}, {today}", ""]
    if args.note:
        lines += [args.note, ""]
    lines += ["Forward + backward of the mean contrastive loss (features and logit scale). "
              "TFLOP/s count 8 N^2 d per step for every method; 'of dense mm' divides by the "
              "rate of torch.mm [N, d] @ [d, N] in the same dtype measured in the same run.", ""]
    lines += bench_tables(data)
    if args.max_batch:
        with open(args.max_batch) as f:
            lines += max_batch_table(json.load(f))
    text = "\n".join(lines) + "\n"
    with open(args.out, "a") as f:
        f.write("\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
