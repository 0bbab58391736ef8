"""Static check of the GPU kernels' sm_90 code, without a GPU (issues 10 and 16).

    python benchmarks/gpu_static.py --arch 90 [--only fwd,gstrip] [--classes 16,32]
                                    [--cuda | --cuda-so PATH] [--jobs 2] [--json rows.json]

Compiles every Triton strip kernel x shipped config (gapops/triton/configs.py) x variant for
sm_90 with the installed Triton (``triton.compile`` of an ``ASTSource`` against
``GPUTarget('cuda', 90, 32)``, 32 being the warp size: no device, no driver). The variants:
routing (swap) or not; an aligned shape (N = 32768, d = 768) and an awkward one (N = 1001,
d = 97), each with the sizes, strides and specializations the launcher really passes (rows
padded to common.aligned_width); fp16 and bf16, fp32 with IEEE and with TF32 products, fp64.
It reads the TTGIR and the cubin (cuobjdump) and reports per row: registers, spills, shared
memory, wgmma (HGMMA), whether the main loop is software-pipelined (async copies, cp.async /
LDGSTS or TMA / UTMALDG, in both TTGIR and SASS, into multi-buffered shared memory: the stages
in flight are the buffers of the operand ring), the width of the main loop's global loads (of
the async copies moving the most bytes, else of the plain loads in the product loops), and
GPU-scope fences (MEMBAR .GPU/.SYS). With --cuda it compiles csrc/cuda/strip.cu with nvcc (or
reads the extension .so given by --cuda-so) and checks the CUDA kernels (CUDA_KERNELS: each must
be found) for spills, GPU-scope fences and 128-bit global loads in the epilogues.

Exits non-zero on: a spill; a 16-bit product kernel without wgmma; any GPU-scope fence; a loop
nest that stores to and loads from global memory with no CTA barrier in it (threads reading back
what other threads stored: issue 10, defect 3's pattern; checked on the Triton IR); and, for the
product kernels (forward, G strip, fused backward) of every dtype but fp64 (gradcheck only:
elementwise products), a main loop that is not pipelined with >= 2 stages or whose loads are
not 16 bytes wide. --json writes the rows (variant: swap, d, dtype, precision; verdicts:
pipelined, stages_in_flight, load_width, spills, wgmma, fences, problems).
--extra-config KIND:CLASS:JSON adds a config (the CI test adds one that spills).
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

HOT = {"fwd_kernel", "gstrip_kernel", "fused_bwd_kernel", "sigmoid_loss_kernel",
       "sigmoid_gstrip_kernel"}
_FEATURE_PTRS = {"a_ptr", "b_ptr", "w_ptr"}


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
    from gapops.triton.sigmoid_kernels import sigmoid_gstrip_kernel, sigmoid_loss_kernel
    return [("fwd", fwd_kernel.fn), ("gstrip", gstrip_kernel.fn), ("fused", fused_bwd_kernel.fn),
            ("combine", col_combine_kernel), ("sig_loss", sigmoid_loss_kernel.fn),
            ("sig_gstrip", sigmoid_gstrip_kernel.fn)]


# the sigmoid strip's kernels launch with the softmax kernels' configs of the same shape
# (gapops/triton/sigmoid.py): the loss-only kernel with 'fwd', the G-strip kernel with 'gstrip'
CONFIG_KIND = {"sig_loss": "fwd", "sig_gstrip": "gstrip"}
# checked only when --only names them, until sig_loss's fp32 IEEE d = 768 stack frame is fixed
# (docs/triton.md, the sigmoid strip); the default run (and tests/test_gpu_static.py) is softmax
OPT_IN = ("sig_loss", "sig_gstrip")
# the sigmoid G-strip kernel's epilogue constexprs: (HAS_G, WANT_LOSS) of the heaviest epilogue
# (training with per-row weights, loss wanted) and the lightest
SIGMOID_EPILOGUES = ((True, True), (False, False))


# The variants every shipped config is compiled in: routing (swap) or not; an aligned shape
# (N = 32768, d = 768: every size a multiple of the blocks) and an awkward one (N = 1001,
# d = 97: masks everywhere, rows padded by the launcher); per dtype class, the dtypes and
# product precisions that run it. fp64 (gradcheck only: no tensor cores, elementwise products)
# is checked for spills and fences only.
SHAPES = ((32768, 768), (1001, 97))
DTYPES = {"16": (("fp16", "native"), ("bf16", "native")),
          "32": (("fp32", "ieee"), ("fp32", "tf32")),
          "64": (("fp64", "ieee"),)}
PRODUCT_KINDS = ("fwd", "gstrip", "fused", "sig_loss", "sig_gstrip")  # a matrix-product main loop


def _variants(cls, kind=None):
    base = [dict(swap=swap, n=n, d=d, dtype=dt, precision=prec)
            for swap in (False, True) for n, d in SHAPES for dt, prec in DTYPES[cls]]
    if kind != "sig_gstrip":
        return base
    return [dict(v, has_g=g, want_loss=wl) for v in base for g, wl in SIGMOID_EPILOGUES]


def _jobs(extra):
    """(kind, class, config kwargs, num_warps, num_stages, variant) to compile."""
    from gapops.triton import configs
    jobs = []
    for kind, _ in _kernels():
        if kind == "combine":
            jobs.append(("combine", "32", dict(BLOCK=256), 4, 1,
                         dict(swap=False, n=32768, d=768, dtype="fp32", precision="ieee")))
            continue
        for cls, cfgs in configs.CONFIGS[CONFIG_KIND.get(kind, kind)].items():
            for c in cfgs:
                for v in _variants(cls, kind):
                    jobs.append((kind, cls, dict(c.kwargs), c.num_warps, c.num_stages, v))
    for spec in extra:
        kind, cls, js = spec.split(":", 2)
        meta = json.loads(js)
        variant = meta.pop("variant", None) or _variants(cls, kind)[0]
        jobs.append((kind, cls, {k: v for k, v in meta.items() if k.isupper()},
                     meta.get("num_warps", 4), meta.get("num_stages", 2), variant))
    return jobs


_TL = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp64": "float64"}


def _launch_sizes(variant, meta):
    """The integer arguments and shape constexprs of a launch of this variant, as the launcher
    (gapops/triton/strip.py) makes them: rows padded to common.aligned_width, W rows too."""
    from gapops.triton.common import aligned_width
    n, d = variant["n"], variant["d"]
    width = aligned_width(d)
    sizes = dict(n=n, m=n, d=width, r0=0, r1=n, offset=0, tune_bucket=0, n_split=1, sl0=n,
                 sa0=width, saa0=width, sb0=width, sba0=width, sw0=aligned_width(n))
    shape = dict(EVEN_MN=n % meta.get("BM", 1) == 0 and n % meta.get("BN", 1) == 0)
    if "BK" in meta:
        shape["EVEN_K"] = width % meta["BK"] == 0
    if "BD" in meta:
        shape["EVEN_D"] = width % meta["BD"] == 0
    return sizes, shape


def _signature(fn, cls: str, meta: dict, variant: dict, kind: str = "fwd"):
    import torch
    import triton.language as tl

    from gapops.triton.strip import routes_columns_in_kernel
    feat = variant["dtype"]
    acc = "fp64" if cls == "64" else "fp32"
    sizes, shape = _launch_sizes(variant, meta)
    consts = dict(meta)
    consts.update(shape)
    prec = "ieee" if variant["precision"] == "ieee" else "tf32"
    col_routing = routes_columns_in_kernel(CONFIG_KIND.get(kind, kind), getattr(torch, _TL[feat]),
                                           prec)
    consts.update(HAS_ASWAP=variant["swap"], HAS_BSWAP=variant["swap"] and col_routing,
                  ACC=tl.float64 if cls == "64" else tl.float32,
                  OPS=getattr(tl, _TL[feat]),
                  PREC=prec,
                  MM=1 if cls == "64" else 0,
                  HAS_G=variant.get("has_g", False), WANT_LOSS=variant.get("want_loss", True))
    sig, cx, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
            cx[name] = consts[name]
        elif name.endswith("_ptr"):
            sig[name] = ("*" + feat if name in _FEATURE_PTRS else "*i32" if "swap" in name
                         else "*i32" if name == "nprog_ptr" else "*" + acc)
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name.endswith("_off"):  # routing alternative's offset (common.alt_offset)
            sig[name] = "i64"
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
            if sizes.get(name, 1) % 16 == 0:  # Triton specializes integers divisible by 16
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, cx, attrs


WARP_SIZE = 32  # GPUTarget's third field is the warp size (threads), not a thread count


def _compile(job, arch: int, fn=None):
    """Compile one (kernel, config, variant) for sm_<arch>; returns (asm dict, metadata dict)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    kind, cls, meta, warps, stages, variant = job
    fn = fn or dict(_kernels())[kind]
    sig, cx, attrs = _signature(fn, cls, meta, variant, kind)
    src = ASTSource(fn, sig, constexprs=cx, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, WARP_SIZE),
                              options=dict(num_warps=warps, num_stages=stages))
    md = compiled.metadata
    return ({k: compiled.asm[k] for k in ("ttir", "ttgir", "ptx", "cubin")},
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
    mma_loops = [(lo, hi) for lo, hi in loops
                 if any(lo <= a <= hi and _MMA.match(t) for a, t in insns)]
    async_widths = [16 if op.startswith("UTMALDG") else _width(op)
                    for _, t in insns for op in [_opcode(t)]
                    if op.startswith(("LDGSTS", "UTMALDG"))]
    loop_ldg = [_width(op) for a, t in insns for op in [_opcode(t)]
                if op.startswith("LDG.") and any(lo <= a <= hi for lo, hi in mma_loops)]
    return dict(
        wgmma=any("HGMMA" in t for _, t in insns),
        spill_insns=sum(1 for _, t in insns if re.match(r"(@!?U?P\d+\s+)?(STL|LDL)\b", t)),
        fences=len(fences),
        fences_in_loops=sum(1 for a in fences if any(lo <= a <= hi for lo, hi in loops)),
        async_copies=len(async_widths),
        # the main loop's global loads: the width of the async copies moving the most bytes
        # (the operand tiles; routing masks are 4-byte copies) where there are any, else the
        # narrowest plain load inside a product loop
        load_width=_dominant(async_widths) if async_widths else min(loop_ldg or [0]),
    )


_MMA = re.compile(r"(@!?U?P\d+\s+)?(HGMMA|HMMA|DMMA)\b")
_WIDTHS = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}


def _dominant(widths: list) -> int:
    """The width whose instructions move the most bytes (ties: the narrower)."""
    return max(sorted(set(widths)), key=lambda w: w * widths.count(w))


def _opcode(text: str) -> str:
    """The opcode with its modifiers of one SASS instruction (predicate dropped)."""
    return re.sub(r"^@!?U?P\w+\s+", "", text).split(" ", 1)[0]


def _width(op: str) -> int:
    """Bytes per thread of a global load / async copy opcode (LDG.E.128: 16; LDG.E: 4)."""
    for part in op.split(".")[1:]:
        if part in _WIDTHS:
            return _WIDTHS[part]
    return 4


_BUFFERS = re.compile(r"ttg\.local_alloc\s*:\s*\(\)\s*->\s*!ttg\.memdesc<(\d+)x\d+x\d+x")


def ttgir_pipeline(ttgir: str) -> dict:
    """Software pipelining as Triton's pipeliner left it: async copies (cp.async or TMA) into
    multi-buffered shared memory; stages = the most buffers of one operand ring (1: none)."""
    copies = len(re.findall(r"\b(?:ttg\.async_copy_global_to_local|"
                            r"ttng\.async_tma_copy_global_to_local)\b", ttgir))
    stages = max([int(x) for x in _BUFFERS.findall(ttgir)] or [1]) if copies else 1
    return dict(ttgir_async_copies=copies, stages_in_flight=stages)


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
    """Loop nests (outermost scf.for / scf.while bodies) that both store to and load from
    global memory with no barrier anywhere inside: other threads may read back a value before
    it is stored. A barrier in an outer loop orders its inner loops' iterations of one sweep
    against the next sweep's (the forward's pattern: within a sweep each column block's
    partials are read and written once, by a value-dependent read-modify-write)."""
    lines = ttir.splitlines()
    count, end = 0, -1
    for i, line in enumerate(lines):
        if i <= end or not re.search(r"\bscf\.(for|while)\b", line):
            continue
        depth, body = 0, []
        for j, other in enumerate(lines[i:], i):
            depth += other.count("{") - other.count("}")
            body.append(other)
            if depth <= 0 and len(body) > 1:
                end = j
                break
        text = "\n".join(body)
        barrier = re.search(r"\b(gpu|ttg)\.barrier\b", text)
        if "tt.store" in text and "tt.load" in text and not barrier:
            count += 1
    return count


def check_one(job, arch, fn=None):
    asm, md = _compile(job, arch, fn)
    kind, cls, meta, warps, stages, variant = job
    usage = res_usage(_cuobjdump(asm["cubin"], "-res-usage"))
    ru = next(iter(usage.values()), {})
    facts = sass_facts(_cuobjdump(asm["cubin"], "-sass"))
    pipe = ttgir_pipeline(asm["ttgir"])
    row = dict(kernel=md["name"].split("_kernel")[0] + "_kernel" if "_kernel" in md["name"]
               else md["name"], kind=kind, cls=cls, config=meta, warps=warps, stages=stages,
               **variant, regs=ru.get("REG", 0), stack=ru.get("STACK", 0),
               local=ru.get("LOCAL", 0), shared=md["shared"],
               unordered_loops=ttir_unordered_loops(asm["ttir"]), **facts, **pipe)
    row["spills"] = row["stack"] + row["local"]
    row["pipelined"] = bool(pipe["ttgir_async_copies"] and facts["async_copies"]
                            and pipe["stages_in_flight"] >= 2)
    row["problems"] = problems(row)
    return row


def _tensor_core_kind(row) -> bool:
    """A product kernel whose main loop runs on tensor cores (every dtype but fp64)."""
    return row["kind"] in PRODUCT_KINDS and row.get("dtype") != "fp64"


def problems(row) -> list:
    out = []
    if row["stack"] or row["local"] or row["spill_insns"]:
        out.append(f"spills ({row['stack']} stack bytes, {row['spill_insns']} STL/LDL)")
    if row["kind"] in PRODUCT_KINDS and row["cls"] == "16" and not row["wgmma"]:
        out.append("hot kernel without wgmma")
    if row["fences"]:
        out.append(f"{row['fences']} GPU-scope fences ({row['fences_in_loops']} inside loops)")
    if row["unordered_loops"]:
        out.append(f"{row['unordered_loops']} loops store and load global memory without a "
                   "barrier")
    if _tensor_core_kind(row):
        if not row["pipelined"]:
            out.append(f"main loop not pipelined ({row['ttgir_async_copies']} async copies in "
                       f"TTGIR, {row['async_copies']} in SASS, {row['stages_in_flight']} stages)")
        if row["load_width"] < 16:  # the launcher pads rows, so the data always allows 16
            out.append(f"main-loop loads {row['load_width']} bytes wide, not 16")
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
    out = problems(row)  # spills, and any GPU-scope fence (not only inside loops)
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
        row["spills"] = row["stack"] + row["local"]
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

def _variant_label(r) -> str:
    if "dtype" not in r:
        return "-"
    return f"{'swap' if r['swap'] else 'plain'},d{r['d']},{r['dtype']}" + \
        (f",{r['precision']}" if r["dtype"] == "fp32" else "") + \
        ("" if "has_g" not in r
         else f",{'G' if r['has_g'] else '-'}{'L' if r['want_loss'] else '-'}")


def print_header():
    head = f"{'kernel':<18}{'config':<22}{'w/s':>5} {'variant':<22}{'regs':>5}{'spill':>6}" \
           f"{'smem':>7}{'mma':>4}{'pipe':>5}{'ldw':>4}{'fence':>6}  problems"
    print(head)
    print("-" * len(head), flush=True)


def print_table(rows):
    for r in rows:
        cfg = ",".join(f"{k}{v}" for k, v in r["config"].items())
        pipe = (f"{r['stages_in_flight']}" if r.get("pipelined") else "no") \
            if "pipelined" in r else "-"
        print(f"{r['kernel'][:18]:<18}{cfg[:22]:<22}{r['warps']}/{r['stages']:<3}"
              f"{_variant_label(r):<22}{r['regs']:>5}{r['stack']:>6}{r['shared']:>7}"
              f"{'yes' if r['wgmma'] else 'no':>4}{pipe:>5}{r.get('load_width', '-'):>4}"
              f"{r['fences']:>6}  {'; '.join(r['problems']) or 'ok'}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cuda", action="store_true", help="also nvcc-compile csrc/cuda/strip.cu")
    ap.add_argument("--cuda-so", help="read the CUDA kernels from this built extension")
    ap.add_argument("--extra-config", action="append", default=[], metavar="KIND:CLASS:JSON")
    ap.add_argument("--only", help="shipped configs of these kinds only "
                    "(fwd,gstrip,fused,combine,sig_loss,sig_gstrip)")
    ap.add_argument("--classes", help="dtype classes only (16,32,64)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU even where tests interpret
    jobs = _jobs([])
    if args.only:
        jobs = [j for j in jobs if j[0] in args.only.split(",")]
    else:
        jobs = [j for j in jobs if j[0] not in OPT_IN]
    if args.classes:
        jobs = [j for j in jobs if j[1] in args.classes.split(",")]
    jobs += _jobs(args.extra_config)[len(_jobs([])):]
    print_header()
    rows = []
    if args.jobs > 1:  # rows printed as they come (a long check on a busy machine shows progress)
        with ProcessPoolExecutor(args.jobs) as pool:
            for row in pool.map(check_one, jobs, [args.arch] * len(jobs)):
                print_table([row])
                rows.append(row)
    else:
        for j in jobs:
            rows.append(check_one(j, args.arch))
            print_table(rows[-1:])
    if args.cuda or args.cuda_so:
        cuda = cuda_rows(args.cuda_so or cuda_cubin(args.arch))
        print_table(cuda)
        rows += cuda
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    bad = [r for r in rows if r["problems"]]
    print(f"\n{len(rows)} kernels x configs, {len(bad)} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
