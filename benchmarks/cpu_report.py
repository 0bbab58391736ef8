"""Turns bench_cpu.py's pytest-benchmark JSON into the CPU table of benchmarks/RESULTS.md.

    python benchmarks/cpu_report.py benchmarks/cpu.json [--big]
Adds peak extra memory (each case in a subprocess) for gapops_cpu and naive, and with --big the
N=65536, d=256 gapops run that the naive form cannot afford.
"""
import datetime
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def peak_mib(name, n, d):
    # The repository root first on the path, so an uninstalled in-place build is found too.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, os.path.join(HERE, "cpu_peak_memory.py"), name, str(n), str(d)],
                         capture_output=True, text=True, cwd=HERE, check=True, env=env).stdout.split()
    return float(out[-1])


def main(path, big=False):
    with open(path) as f:
        data = json.load(f)
    times = {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        times[(info["n"], info["d"], info["method"])] = b["stats"]["median"]
    sizes = sorted({(n, d) for n, d, _ in times})
    lines = [f"## CPU: fused `cpu` backend vs peers (fp32, forward+backward)", "",
             f"Measured {datetime.date.today()} on {machine()}; median of pytest-benchmark rounds, "
             "each case side by side in one run (`pytest benchmarks/bench_cpu.py`). "
             "Floor = the four N×N×d products alone (torch.mm). Peak = the extra resident memory of "
             "one step in a fresh process (peak RSS reset before the step, `cpu_peak_memory.py`).", "",
             "| N | d | gapops ms | naive ms | compile ms | floor ms | vs naive | vs compile | vs open_clip | vs floor | peak gapops MiB | peak naive MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, d in sizes:
        t = {m: times.get((n, d, m)) for m in ("gapops_cpu", "naive", "torch_compile_naive", "open_clip", "floor_4_mm")}
        g = t["gapops_cpu"]
        ratio = lambda m: f"{g / t[m]:.2f}" if t[m] else "n/a"  # noqa: E731
        ms = lambda m: f"{1e3 * t[m]:.1f}" if t[m] else "n/a"  # noqa: E731
        pg, pn = peak_mib("gapops_cpu", n, d), peak_mib("naive", n, d)
        lines.append(f"| {n} | {d} | {ms('gapops_cpu')} | {ms('naive')} | {ms('torch_compile_naive')} | "
                     f"{ms('floor_4_mm')} | {ratio('naive')} | {ratio('torch_compile_naive')} | "
                     f"{ratio('open_clip')} | {ratio('floor_4_mm')} | {pg:.0f} | {pn:.0f} |")
    lines.append("")
    lines.append("Ratios are gapops time / peer time: below 1 means gapops is faster. "
                 "open_clip is `n/a` when it is not installed.")
    if big:
        import time
        t0 = time.perf_counter()
        pg = peak_mib("gapops_cpu", 65536, 256)
        lines += ["", f"N=65536, d=256 forward+backward with `cpu`: peak extra memory {pg:.0f} MiB "
                  f"(the naive form would hold several 65536² fp32 arrays of 16 GiB each); "
                  f"whole subprocess {time.perf_counter() - t0:.0f} s."]
    print("\n".join(lines))
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1], big="--big" in sys.argv)
