"""Static check of the GPU kernels' sm_90 code, without a GPU (issue 10).

    python benchmarks/gpu_static.py --arch 90 [--cuda | --cuda-so PATH] [--jobs 2]

Compiles every Triton strip kernel x shipped config (gapops/triton/configs.py) for sm_90 with the
installed Triton (``triton.compile`` of an ``ASTSource`` against ``GPUTarget('cuda', 90, 128)``:
no device, no driver), reads the cubin with cuobjdump, and prints per kernel and config:
registers, spill (stack bytes and local store/load instructions), shared memory, whether wgmma
(HGMMA) is used, GPU-scope fences (MEMBAR .GPU/.SYS) in all and inside loops. With --cuda it
compiles csrc/cuda/strip.cu to a cubin with nvcc (or reads the extension .so given by --cuda-so)
and checks the CUDA kernels (CUDA_KERNELS: each must be found) for spills, GPU-scope fences and
128-bit global loads in the epilogues.

Exits non-zero on a spill, a hot kernel (forward, G strip, fused backward, 16-bit inputs)
without wgmma, a GPU-scope fence inside a loop, or a loop that stores to and loads from global
memory with no CTA barrier in it (threads reading back what other threads stored: issue 10,
defect 3's pattern; checked on the Triton IR).

The shapes compiled are those of N = 32768, d = 768 (every size a multiple of the blocks, so the
mask-free specializations), 16-byte aligned pointers and unit inner strides, as a real launch
specializes them. --extra-config KIND:CLASS:JSON adds a config (the CI test adds one that spills).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

HOT = {"fwd_kernel", "gstrip_kernel", "fused_bwd_kernel"}
_FEATURE_PTRS = {"a_ptr", "aalt_ptr", "b_ptr", "balt_ptr", "w_ptr"}
_UNIT_STRIDES = {"sa1", "saa1", "sb1", "sba1"}
_SIZES = dict(n=32768, m=32768, d=768, r0=0, r1=32768, offset=0, tune_bucket=0,
              sa0=768, saa0=768, sb0=768, sba0=768, sw0=32768)


def _tool(name: str) -> str:
    import triton
    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    for path in (bundled, os.path.join("/usr/local/cuda/bin", name)):
        if os.path.exists(path):
            return path
    return name


def _kernels():
    """[(kind, jit function, constexpr builder)] of every Triton strip kernel."""
    from gapops.triton.backward_fused import fused_bwd_kernel
    from gapops.triton.backward_gstrip import gstrip_kernel
    from gapops.triton.forward import col_combine_kernel, fwd_kernel
    return [("fwd", fwd_kernel.fn), ("gstrip", gstrip_kernel.fn), ("fused", fused_bwd_kernel.fn),
            ("combine", col_combine_kernel)]


def _jobs(extra):
    """(kind, class, kernel name, config kwargs, num_warps, num_stages) to compile."""
    from gapops.triton import configs
    jobs = []
    for kind, _ in _kernels():
        if kind == "combine":
            jobs.append(("combine", "32", dict(BLOCK=256), 4, 1))
            continue
        for cls, cfgs in configs.CONFIGS[kind].items():
            for c in cfgs:
                jobs.append((kind, cls, dict(c.kwargs), c.num_warps, c.num_stages))
    for spec in extra:
        kind, cls, js = spec.split(":", 2)
        meta = json.loads(js)
        jobs.append((kind, cls, {k: v for k, v in meta.items() if k.isupper()},
                     meta.get("num_warps", 4), meta.get("num_stages", 2)))
    return jobs


def _signature(fn, cls: str, meta: dict):
    import triton.language as tl
    feat = {"16": "bf16", "32": "fp32", "64": "fp64"}[cls]
    acc = "fp64" if cls == "64" else "fp32"
    consts = dict(meta)
    consts.update(HAS_ASWAP=False, HAS_BSWAP=False, EVEN_K=True, EVEN_D=True, EVEN_MN=True,
                  ACC=tl.float64 if cls == "64" else tl.float32,
                  OPS={"16": tl.bfloat16, "32": tl.float32, "64": tl.float64}[cls],
                  PREC="ieee" if cls == "64" else "tf32", MM=1 if cls == "64" else 0)
    consts.update({k: 1 for k in _UNIT_STRIDES})
    sig, cx, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
            cx[name] = consts[name]
        elif name.endswith("_ptr"):
            sig[name] = ("*" + feat if name in _FEATURE_PTRS else "*u8" if "swap" in name
                         else "*i32" if name == "nprog_ptr" else "*" + acc)
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
            if _SIZES.get(name, 1) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, cx, attrs


def _compile(job, arch: int):
    """Compile one (kernel, config) for sm_<arch>; returns (asm dict, metadata dict)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    kind, cls, meta, warps, stages = job
    fn = dict(_kernels())[kind]
    sig, cx, attrs = _signature(fn, cls, meta)
    src = ASTSource(fn, sig, constexprs=cx, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 128),
                              options=dict(num_warps=warps, num_stages=stages))
    md = compiled.metadata
    return ({k: compiled.asm[k] for k in ("ttir", "ptx", "cubin")},
            dict(shared=getattr(md, "shared", 0), name=getattr(md, "name", fn.__name__)))


# ---------------------------------------------------------------------------------------------
# Reading the code
# ---------------------------------------------------------------------------------------------

def _cuobjdump(cubin: bytes, flag: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([_tool("cuobjdump"), flag, f.name], capture_output=True,
                              text=True, check=True).stdout


_ADDR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")


def sass_facts(sass: str) -> dict:
    """wgmma, spill instructions and GPU-scope fences (all, and inside a loop) of one function's
    SASS. A loop is the address range [target, branch] of a backward branch."""
    insns, labels, pending = [], {}, []
    for line in sass.splitlines():
        lab = _LABEL.match(line)
        if lab:
            pending.append(lab.group(1))
            continue
        mt = _ADDR.search(line)
        if mt:
            addr = int(mt.group(1), 16)
            for p in pending:
                labels[p] = addr
            pending = []
            insns.append((addr, mt.group(2)))
    loops = []
    for addr, text in insns:
        if re.search(r"\bBRA\b", text):
            tgt = re.search(r"`?\((\.L_x_\d+)\)|0x([0-9a-f]+)", text)
            t = None
            if tgt and tgt.group(1):
                t = labels.get(tgt.group(1))
            elif tgt and tgt.group(2):
                t = int(tgt.group(2), 16)
            if t is not None and t <= addr:
                loops.append((t, addr))
    fences = [a for a, t in insns if "MEMBAR" in t and (".GPU" in t or ".SYS" in t)]
    return dict(
        wgmma=any("HGMMA" in t for _, t in insns),
        spill_insns=sum(1 for _, t in insns if re.match(r"(@!?U?P\d+\s+)?(STL|LDL)\b", t)),
        fences=len(fences),
        fences_in_loops=sum(1 for a in fences if any(lo <= a <= hi for lo, hi in loops)),
    )


def res_usage(text: str) -> dict:
    """{function: {REG, STACK, SHARED, LOCAL}} from cuobjdump -res-usage."""
    out, fn = {}, None
    for line in text.splitlines():
        mf = re.search(r"Function ([^\s:]+):", line)
        if mf:
            fn = mf.group(1)
            continue
        if fn and "REG:" in line:
            out[fn] = {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", line)}
            fn = None
    return out


def ttir_unordered_loops(ttir: str) -> int:
    """Loops (scf.for / scf.while bodies, nested ones included in their parents) that both store
    to and load from global memory with no barrier inside: other threads may read back a value
    before it is stored."""
    lines = ttir.splitlines()
    count = 0
    for i, line in enumerate(lines):
        if not re.search(r"\bscf\.(for|while)\b", line):
            continue
        depth, body = 0, []
        for other in lines[i:]:
            depth += other.count("{") - other.count("}")
            body.append(other)
            if depth <= 0 and len(body) > 1:
                break
        text = "\n".join(body)
        if "tt.store" in text and "tt.load" in text and not re.search(r"\b(gpu|ttg)\.barrier\b", text):
            count += 1
    return count


def check_one(job, arch):
    asm, md = _compile(job, arch)
    kind, cls, meta, warps, stages = job
    usage = res_usage(_cuobjdump(asm["cubin"], "-res-usage"))
    ru = next(iter(usage.values()), {})
    facts = sass_facts(_cuobjdump(asm["cubin"], "-sass"))
    row = dict(kernel=md["name"].split("_kernel")[0] + "_kernel" if "_kernel" in md["name"]
               else md["name"], kind=kind, cls=cls, config=meta, warps=warps, stages=stages,
               regs=ru.get("REG", 0), stack=ru.get("STACK", 0), local=ru.get("LOCAL", 0),
               shared=md["shared"], unordered_loops=ttir_unordered_loops(asm["ttir"]), **facts)
    row["problems"] = problems(row)
    return row


def problems(row) -> list:
    out = []
    if row["stack"] or row["local"] or row["spill_insns"]:
        out.append(f"spills ({row['stack']} stack bytes, {row['spill_insns']} STL/LDL)")
    if row["kind"] in ("fwd", "gstrip", "fused") and row["cls"] == "16" and not row["wgmma"]:
        out.append("hot kernel without wgmma")
    if row["fences_in_loops"]:
        out.append(f"{row['fences_in_loops']} GPU-scope fences inside loops")
    if row["unordered_loops"]:
        out.append(f"{row['unordered_loops']} loops store and load global memory without a "
                   "barrier")
    return out


# ---------------------------------------------------------------------------------------------
# The CUDA backend
# ---------------------------------------------------------------------------------------------

def cuda_cubin(arch: int) -> bytes:
    """nvcc -cubin of csrc/cuda/strip.cu with torch's and the nvidia wheels' headers."""
    import glob

    import torch.utils.cpp_extension as ce
    incs = list(ce.include_paths(device_type="cuda"))
    import nvidia  # the pip CUDA wheels (cuda runtime, cublas, ... headers)
    for base in nvidia.__path__:
        incs += sorted(glob.glob(os.path.join(base, "*", "include")))
    incs += [os.path.join(ROOT, "csrc")]
    nvcc = os.environ.get("NVCC", "/usr/local/cuda/bin/nvcc")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "strip.cubin")
        cmd = [nvcc, "-cubin", f"-arch=sm_{arch}a" if arch == 90 else f"-arch=sm_{arch}",
               "-std=c++20", "-O3", "--use_fast_math", "--expt-relaxed-constexpr", "-DNDEBUG",
               "-DGAPOPS_WITH_CUDA",
               "-D_GLIBCXX_USE_CXX11_ABI=1", *[f"-I{i}" for i in incs],
               os.path.join(ROOT, "csrc", "cuda", "strip.cu"), "-o", out]
        subprocess.run(cmd, check=True)
        with open(out, "rb") as f:
            return f.read()


def _short_name(mangled: str) -> str:
    """A demangled kernel name without namespaces and arguments (template args kept short)."""
    try:
        name = subprocess.run(["c++filt", mangled], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return mangled
    name = name.split("(")[0]
    base, _, targs = name.partition("<")
    base = base.split("::")[-1]
    return base + (f"<{targs.rstrip('>')[:24]}>" if targs else "")


# The CUDA extension's kernels (csrc/cuda/strip_kernels.cuh): name -> must its global loads be
# 128 bits wide (the bandwidth-bound epilogues, which read the fp32 strip in 16-byte packs).
CUDA_KERNELS = {
    "softmax_forward_epilogue": True, "softmax_backward_epilogue": True, "sigmoid_epilogue": True,
    "row_lse_kernel": False, "col_merge_kernel": False, "col_lse_kernel": False,
    "row_sum_kernel": False, "ordered_sum_kernel": False, "h_scale_kernel": False,
}
_LDG128 = re.compile(r"\bLDG\.E(\.[A-Z0-9_]+)*\.128\b")


def cuda_problems(row) -> list:
    """The CUDA kernels' verdicts: no spill, no GPU-scope fence at all, 128-bit loads in the
    epilogues (their wgmma is not asked for: their products run on cuBLAS)."""
    out = [p for p in problems(row) if "fences inside loops" not in p]
    if row["fences"]:
        out.append(f"{row['fences']} GPU-scope fences")
    base = row["kernel"].split("<")[0]
    if CUDA_KERNELS.get(base) and not row["load128"]:
        out.append("epilogue without 128-bit global loads")
    return out


def cuda_rows(cubin_or_so: bytes | str) -> list:
    if isinstance(cubin_or_so, str):
        with open(cubin_or_so, "rb") as f:
            data = f.read()
    else:
        data = cubin_or_so
    usage = res_usage(_cuobjdump(data, "-res-usage"))
    sass = _cuobjdump(data, "-sass")
    # split the SASS per function
    parts = re.split(r"\n\s*Function : (\S+)\n", sass)
    per_fn = dict(zip(parts[1::2], parts[2::2]))
    rows = []
    for fn, ru in usage.items():
        text = per_fn.get(fn, "")
        facts = sass_facts(text)
        row = dict(kernel=_short_name(fn), kind="cuda", cls="-", config={}, warps="-", stages="-",
                   regs=ru.get("REG", 0), stack=ru.get("STACK", 0), local=ru.get("LOCAL", 0),
                   shared=ru.get("SHARED", 0), unordered_loops=0,
                   load128=len(_LDG128.findall(text)), **facts)
        row["problems"] = cuda_problems(row)
        rows.append(row)
    found = {r["kernel"].split("<")[0] for r in rows}
    for name in sorted(set(CUDA_KERNELS) - found):  # a kernel the build lost fails the check
        rows.append(dict(kernel=name, kind="cuda", cls="-", config={}, warps="-", stages="-",
                         regs=0, stack=0, local=0, shared=0, unordered_loops=0, load128=0,
                         wgmma=False, spill_insns=0, fences=0, fences_in_loops=0,
                         problems=["not found in the CUDA build"]))
    return rows


# ---------------------------------------------------------------------------------------------

def print_table(rows):
    head = f"{'kernel':<30}{'cls':>4} {'config':<34}{'w/s':>5}{'regs':>6}{'spill':>7}" \
           f"{'smem':>8}{'wgmma':>7}{'fence':>6}{'inloop':>7}  problems"
    print(head)
    print("-" * len(head))
    for r in rows:
        cfg = ",".join(f"{k}{v}" for k, v in r["config"].items())
        print(f"{r['kernel'][:30]:<30}{r['cls']:>4} {cfg:<34}{r['warps']}/{r['stages']:<3}"
              f"{r['regs']:>6}{r['stack']:>7}{r['shared']:>8}{'yes' if r['wgmma'] else 'no':>7}"
              f"{r['fences']:>6}{r['fences_in_loops']:>7}  {'; '.join(r['problems']) or 'ok'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cuda", action="store_true", help="also nvcc-compile csrc/cuda/strip.cu")
    ap.add_argument("--cuda-so", help="read the CUDA kernels from this built extension")
    ap.add_argument("--extra-config", action="append", default=[], metavar="KIND:CLASS:JSON")
    ap.add_argument("--only", help="shipped configs of these kinds only (fwd,gstrip,fused,combine)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU even where tests interpret
    jobs = _jobs([])
    if args.only:
        jobs = [j for j in jobs if j[0] in args.only.split(",")]
    jobs += _jobs(args.extra_config)[len(_jobs([])):]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(check_one, jobs, [args.arch] * len(jobs)))
    else:
        rows = [check_one(j, args.arch) for j in jobs]
    if args.cuda or args.cuda_so:
        rows += cuda_rows(args.cuda_so or cuda_cubin(args.arch))
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    bad = [r for r in rows if r["problems"]]
    print(f"\n{len(rows)} kernels x configs, {len(bad)} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
