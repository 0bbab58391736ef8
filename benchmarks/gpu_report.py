"""The GPU check's report: Markdown (ready to paste into benchmarks/RESULTS.md) and one JSON file.

    python3 benchmarks/gpu_report.py --work WORKDIR --md gpu_check.md --json gpu_check.json
        [--append benchmarks/RESULTS.md] [--quiet]

Reads what gpu_check.sh's steps left in WORKDIR, whatever subset of it exists (the report is
rebuilt after every step, so a run cut short still leaves one):
  env.json          device, versions (step 'env')
  steps.jsonl       one line per step: status (ok / failed / timeout / skipped), seconds, cap
  correctness.jsonl gpu_correctness.py's checks
  memcheck.log      gpu_sanitize.sh's output (the ERROR SUMMARY lines are kept)
  bench.jsonl       bench_gpu.py's cases
  max_batch.json    max_batch.py's rows
From the benchmark rows it also derives the rows of backend='auto''s table (auto_table_rows: per
loss, dtype and N, gapops' GPU backends fastest first), printed in the report and kept in the JSON
under "auto_table" for benchmarks/update_auto_table.py to copy into gapops/_auto_table.py.
Imports no torch: it runs in a fraction of a second.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from collections import OrderedDict


def _read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return default


def _read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut off by a kill
    except OSError:
        pass
    return out


def _gib(b):
    return f"{b / 2**30:.2f}" if isinstance(b, (int, float)) else "-"


def _rate(v):
    """TFLOP/s: whole numbers on a GPU, three digits for the dry run's tiny CPU rates."""
    return f"{v:.0f}" if v >= 10 else f"{v:.3g}"


def _num(v, fmt):
    return format(v, fmt) if isinstance(v, (int, float)) and v == v else "-"


def steps_table(steps):
    if not steps:
        return []
    lines = ["| step | status | time (s) | cap (s) | note |", "| --- | --- | ---: | ---: | --- |"]
    for s in steps:
        lines.append(f"| {s.get('step')} | {s.get('status')} | {_num(s.get('seconds'), '.0f')} | "
                     f"{_num(s.get('cap'), '.0f')} | {s.get('note', '')} |")
    return lines + [""]


def correctness_section(rows):
    if not rows:
        return []
    checks = [r for r in rows if "err_loss" in r]
    other = [r for r in rows if "err_loss" not in r]
    lines = ["Relative error ‖got − want‖ / ‖want‖ of the loss and of the gradients to the image "
             "features, the text features and the logit scale, against the float64 reference on "
             "the same rounded inputs; 'det' = deterministic=True (also run twice: bit-identical?).",
             "",
             "| variant | dtype | checks | failed | worst loss | worst dA | worst dB | worst ds | "
             "first tuned calls | det. bit-identical |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    groups = OrderedDict()
    for r in checks:
        groups.setdefault((r.get("variant"), r.get("dtype")), []).append(r)
    for (variant, dtype), rs in groups.items():
        worst = {k: max((r[k] for r in rs), key=lambda v: float("inf") if v != v else v)
                 for k in ("err_loss", "err_dx", "err_dy", "err_ds")}
        first = [r for r in rs if r.get("first_tuned_call")]
        first_s = (f"{sum(r['ok'] for r in first)}/{len(first)} ok" if first else "-")
        det = [r for r in rs if "bitwise_repeat" in r]
        det_s = f"{sum(bool(r['bitwise_repeat']) for r in det)}/{len(det)}" if det else "-"
        lines.append(f"| {variant} | {dtype} | {len(rs)} | {sum(not r['ok'] for r in rs)} | "
                     f"{worst['err_loss']:.1e} | {worst['err_dx']:.1e} | {worst['err_dy']:.1e} | "
                     f"{worst['err_ds']:.1e} | {first_s} | {det_s} |")
    lines.append("")
    failed = [r for r in checks if not r["ok"]]
    for r in failed:
        lines.append(f"- FAILED {r.get('variant')} N={r['N']} d={r['d']} {r['dtype']} "
                     f"{'det' if r.get('deterministic') else 'fast'}: loss {r['err_loss']:.1e}, "
                     f"dA {r['err_dx']:.1e}, dB {r['err_dy']:.1e}, ds {r['err_ds']:.1e} "
                     f"(tol {r['tol_loss']:.0e} / {r['tol_grad']:.0e})"
                     f"{'' if r.get('bitwise_repeat', True) else ', NOT bit-identical'}")
    for r in other:
        lines.append(f"- {r.get('variant')}"
                     f"{' N=' + str(r['N']) + ' d=' + str(r['d']) + ' ' + r['dtype'] if 'N' in r else ''}"
                     f": {r.get('status')}")
    return lines + ([""] if failed or other else [])


def memcheck_section(text):
    if not text:
        return []
    def wanted(ln):
        ln = re.sub(r"^\[[^\]]*\] ", "", ln)  # the '[run] ' prefix of parallel runs
        return (ln.startswith("===") or "ERROR SUMMARY" in ln or ln.startswith("!!!")
                or "sanitize_cases.py:" in ln or "skipped" in ln or "unavailable" in ln)
    keep = [ln.strip() for ln in text.splitlines() if wanted(ln)]
    return ["```", *keep[-40:], "```", ""] if keep else []


def bench_section(rows):
    if not rows:
        return []
    final = OrderedDict()
    for r in rows:  # the last line of a (method, case) wins: 'started' is replaced by its result
        final[(r.get("loss", "softmax"), r.get("dtype"), r.get("d"), r.get("N"),
               r.get("method"))] = r
    lines = ["Forward + backward of the mean loss (features and logit scale), median of the timed "
             "steps after a first call (compiles, autotuning; its time is shown). TFLOP/s count "
             "8·N²·d per step for every method; 'of mm' divides by torch.mm [N, d] @ [d, N] in the "
             "same dtype, measured in the same process. Peak = torch.cuda.max_memory_allocated "
             "over one step; extra = above the inputs. tf32 = fp32 inputs with TF32 products. "
             "naive = gapops.reference.reference_contrastive_loss (N x N logits in fp32 whatever "
             "the input dtype), naive_compile = torch.compile of it; open_clip = ClipLoss (logits "
             "in the input dtype); memeff = MemoryEfficientCLIPLoss (fixed temperature: no "
             "logit-scale gradient). Sigmoid rows: SigLIP's loss, sigmoid_open_clip = SigLipLoss, "
             "sigmoid_siglip_kernel = siglip_kernel.fused_siglip_loss.", ""]
    if any(r.get("note") for r in rows):
        lines += [f"Note: {n}" for n in sorted({r['note'] for r in rows if r.get('note')})] + [""]
    if any(r.get("concurrent") for r in rows):
        lines += ["Rows marked * ran while " + "; ".join(sorted({r["concurrent"] for r in rows
                                                             if r.get("concurrent")}))
                  + " (the GPU to themselves, some CPU cores busy).", ""]
    cases = OrderedDict()
    for (loss, dt, d, n, m), r in final.items():
        cases.setdefault((loss, dt, d, n), []).append(r)
    for (loss, dt, d, n), rs in cases.items():
        mm = next((r["mm_tflops"] for r in rs if r.get("mm_tflops")), None)
        lines += [f"#### {loss}: N = {n}, d = {d}, {dt}"
                  + (f" (dense mm: {_rate(mm)} TFLOP/s)" if mm else ""),
                  "", "| method | time (ms) | TFLOP/s | of mm | first call (s) | peak (GiB) | "
                  "extra (GiB) | status |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in rs:
            st = r.get("status", "?")
            if st == "started":
                st = "did not finish (killed or crashed)"
            if st == "ok":
                frac = f"{100 * r['frac_of_mm']:.0f}%" if r.get("frac_of_mm") else "-"
                lines.append(f"| {r['method']}{'*' if r.get('concurrent') else ''} | {r['ms']:.2f} | "
                             f"{_rate(r['tflops'])} | {frac} | "
                             f"{_num(r.get('first_call_s'), '.1f')} | {_gib(r.get('peak_bytes'))} | "
                             f"{_gib(r.get('extra_bytes'))} | ok |")
            else:
                lines.append(f"| {r['method']} | | | | | | | {st} |")
        lines.append("")
        lines += model_lines(rs)
    return lines


def model_lines(rows):
    """'cuBLAS-strip model vs measured' for the cuda rows of one case (bench_gpu.strip_model)."""
    out = []
    for r in rows:
        if r.get("model_ms") is None:
            continue
        got = (f"{r['ms']:.2f} ms = {100 * r['frac_of_mm']:.0f}% of mm"
               if r.get("status") == "ok" and r.get("frac_of_mm") else r.get("status", "?"))
        out.append(f"cuBLAS-strip model vs measured ({r['method']}): model {r['model_ms']:.2f} ms "
                   f"= {100 * r['model_frac_of_mm']:.0f}% of mm (4 products at "
                   f"{_rate(r['mm_tflops'])} TFLOP/s + 22 B/logit at {r['copy_gbs']:.0f} GB/s, "
                   f"both measured in the same process); measured {got}.")
    return out + [""] if out else []


# bench method -> gapops backend, for the auto table (det rows and other shapes are left out)
AUTO_METHODS = {"gapops_triton_fused": "triton", "gapops_triton_gstrip": "triton",
                "gapops_cuda": "cuda", "sigmoid_gapops_triton": "triton",
                "sigmoid_gapops_cuda": "cuda"}


def auto_table_rows(rows, device, date):
    """Rows for gapops/_auto_table.py: per (loss, dtype, N, d) measured, the gapops GPU backends
    fastest first (a backend's time: its fastest row, e.g. the faster Triton backward shape)."""
    best = OrderedDict()
    for r in rows:
        be = AUTO_METHODS.get(r.get("method"))
        if be is None or r.get("status") != "ok":
            continue
        key = (r.get("loss", "softmax"), r["dtype"], r["N"], r["d"])
        times = best.setdefault(key, {})
        times[be] = min(times.get(be, float("inf")), r["ms"])
    out = []
    for (loss, dt, n, d), times in best.items():
        out.append({"loss": loss, "dtype": dt, "n": n, "d": d,
                    "ranking": sorted(times, key=times.get),
                    "ms": {k: round(v, 3) for k, v in times.items()},
                    "device": device, "date": date[:10]})
    return out


def auto_table_section(auto_rows):
    if not auto_rows:
        return []
    lines = ["Rows for backend='auto' (gapops/_auto_table.py; copy them in with "
             "`python3 benchmarks/update_auto_table.py gpu_check.json`):", "",
             "| loss | dtype | N | d | fastest first (ms) |", "| --- | --- | ---: | ---: | --- |"]
    for r in auto_rows:
        lines.append(f"| {r['loss']} | {r['dtype']} | {r['n']} | {r['d']} | "
                     + ", ".join(f"{b} {r['ms'][b]:.2f}" for b in r["ranking"]) + " |")
    return lines + [""]


def max_batch_section(data):
    if not data or not data.get("rows"):
        return []
    lines = [f"Largest N that fits (d = {data['d']}, {data['dtype']}, one forward + backward, N "
             f"doubling from {data.get('start_n')}; a step predicted to overrun the time left is "
             f"not started; {data.get('budget_s', 0):.0f} s for all methods):", "",
             "| method | largest N | step (s) | peak (GiB) | stopped by |",
             "| --- | ---: | ---: | ---: | --- |"]
    for r in data["rows"]:
        lines.append(f"| {r['method']} | {r.get('N') or '-'} | {_num(r.get('seconds'), '.2f')} | "
                     f"{_gib(r.get('peak_mem_bytes'))} | {r.get('stop')} |")
    return lines + [""]


def env_lines(env):
    if not env:
        return ["(the env step left no record)", ""]
    keys = ["device", "capability", "memory_gib", "driver", "torch", "cuda", "triton", "python",
            "nvcc", "setuptools", "numpy", "gapops", "commit", "mode", "open_clip", "inf_cl", "memeff",
            "siglip_kernel"]
    parts = [f"{k}: {env[k]}" for k in keys if env.get(k) not in (None, "")]
    return ["; ".join(parts), ""]


def build(work, mode_hint=None):
    env = _read_json(os.path.join(work, "env.json"), {}) or {}
    steps = _read_jsonl(os.path.join(work, "steps.jsonl"))
    corr = _read_jsonl(os.path.join(work, "correctness.jsonl"))
    bench = _read_jsonl(os.path.join(work, "bench.jsonl"))
    mb = _read_json(os.path.join(work, "max_batch.json"))
    try:
        with open(os.path.join(work, "memcheck.log"), errors="replace") as f:
            memlog = f.read()
    except OSError:
        memlog = ""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    device = env.get("device", "unknown device")
    mode = env.get("mode", mode_hint or "")
    md = [f"## GPU check: {device}, {date}{' (' + mode + ')' if mode else ''}", ""]
    md += env_lines(env)
    md += ["### Steps", ""] + steps_table(steps)
    if corr:
        md += ["### Correctness against float64", ""] + correctness_section(corr)
    mem = memcheck_section(memlog)
    if mem:
        md += ["### compute-sanitizer", ""] + mem
    if bench:
        md += ["### Forward + backward", ""] + bench_section(bench)
    auto_rows = auto_table_rows(bench, device, date)
    if auto_rows:
        md += ["### backend='auto' table", ""] + auto_table_section(auto_rows)
    mbs = max_batch_section(mb)
    if mbs:
        md += ["### Largest batch", ""] + mbs
    data = {"device": device, "date": date, "mode": mode, "env": env, "steps": steps,
            "correctness": corr, "memcheck_summary": mem[1:-2] if mem else [],
            "bench": bench, "max_batch": mb, "auto_table": auto_rows}
    return "\n".join(md) + "\n", data


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--append", default=None, help="also append the Markdown to this file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    text, data = build(args.work)
    for path, content in ((args.md, text), (args.json, json.dumps(data, indent=1))):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(content)
        os.replace(tmp, path)  # a kill mid-write leaves the previous report whole
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + text)
    if not args.quiet:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
