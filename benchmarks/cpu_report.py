"""Turns bench_cpu.py's pytest-benchmark JSON into the CPU table of benchmarks/RESULTS.md.

    python benchmarks/cpu_report.py benchmarks/cpu.json [--big]
One table per loss found in the JSON (softmax, sigmoid). Adds peak extra memory (each case in a
subprocess) for gapops and naive (softmax) or gapops and open_clip's SigLipLoss (sigmoid), and
with --big the N=65536, d=256 gapops run that the naive form cannot afford.
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


def _table(times, methods, peaks, peer_names):
    """Markdown rows: times (ms) of methods[0] (gapops) and its peers, the ratios gapops / peer,
    the peak extra memory of the methods in peaks (each in a subprocess)."""
    sizes = sorted({(n, d) for n, d, m in times if m == methods[0]})
    head = ["N", "d"] + [f"{peer_names[m]} ms" for m in methods]
    head += [f"vs {peer_names[m]}" for m in methods[1:]] + [f"peak {peer_names[m]} MiB" for m in peaks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, d in sizes:
        t = {m: times.get((n, d, m)) for m in methods}
        g = t[methods[0]]
        cells = [str(n), str(d)] + [f"{1e3 * t[m]:.1f}" if t[m] else "n/a" for m in methods]
        cells += [f"{g / t[m]:.2f}" if t[m] else "n/a" for m in methods[1:]]
        cells += [f"{peak_mib(m, n, d):.0f}" for m in peaks]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


SOFTMAX = ["gapops_cpu", "naive", "torch_compile_naive", "open_clip", "floor_4_mm"]
SIGMOID = ["gapops_sigmoid_cpu", "sigmoid_naive", "sigmoid_torch_compile_naive",
           "sigmoid_open_clip", "sigmoid_open_clip_chunked", "sigmoid_floor_3_mm"]
SHORT = {"gapops_cpu": "gapops", "naive": "naive", "torch_compile_naive": "compile",
         "open_clip": "open_clip", "floor_4_mm": "floor", "gapops_sigmoid_cpu": "gapops",
         "sigmoid_naive": "naive", "sigmoid_torch_compile_naive": "compile",
         "sigmoid_open_clip": "open_clip", "sigmoid_open_clip_chunked": "open_clip chunked",
         "sigmoid_floor_3_mm": "floor"}


def main(path, big=False):
    with open(path) as f:
        data = json.load(f)
    times = {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        times[(info["n"], info["d"], info["method"])] = b["stats"]["median"]
    lines = [f"Measured {datetime.date.today()} on {machine()}, load average "
             f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} when the report ran; median of "
             "pytest-benchmark rounds, each case side by side in one run "
             "(`pytest benchmarks/bench_cpu.py`). Peak = the extra resident memory of one step in "
             "a fresh process (peak RSS reset before the step, `cpu_peak_memory.py`). Ratios are "
             "gapops time / peer time: below 1 means gapops is faster; `n/a`: not installed "
             "(open_clip chunked: an open_clip without `chunk_size`).", ""]
    if any(m == SOFTMAX[0] for _, _, m in times):
        lines += ["## CPU: fused `cpu` backend vs peers, softmax (CLIP) loss (fp32, forward+backward)",
                  "", "Floor = the four N×N×d products alone (torch.mm).", ""]
        lines += _table(times, SOFTMAX, ["gapops_cpu", "naive"], SHORT) + [""]
    if any(m == SIGMOID[0] for _, _, m in times):
        lines += ["## CPU: fused `cpu` backend vs peers, sigmoid (SigLIP) loss (fp32, forward+backward)",
                  "", "s = 10, b = -10; floor = the three N×N×d products alone (torch.mm).", ""]
        lines += _table(times, SIGMOID, ["gapops_sigmoid_cpu", "sigmoid_open_clip"], SHORT) + [""]
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
