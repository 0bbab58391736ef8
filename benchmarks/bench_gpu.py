"""GPU benchmark of the contrastive loss (forward + backward), gapops against the usual alternatives.

    python3 benchmarks/bench_gpu.py --jsonl bench.jsonl                 # QUICK grid, every method
    python3 benchmarks/bench_gpu.py --jsonl bench.jsonl --full          # the long grid
    python3 benchmarks/bench_gpu.py --jsonl b.jsonl --cases 32768x768xbf16 --methods naive
    python3 benchmarks/bench_gpu.py --dry-run --jsonl b.jsonl           # CPU, tiny, Triton interpreted

Cases are NxDxDTYPE (the softmax CLIP loss) or sig:NxDxDTYPE (the sigmoid SigLIP loss), DTYPE one
of bf16, fp16, fp32 (IEEE products) and tf32 (fp32 inputs with
torch.backends.cuda.matmul.allow_tf32 = True, which gapops' fp32 kernels honour too). A method
runs the cases of its loss. QUICK: 32768x768xbf16 and 16384x512xtf32 (the tf32 case for gapops
and naive only: the peers run the bf16 cases), sig:65536x768xbf16 (siglip-kernel's headline
setting) and sig:32768x768xbf16. --full: N in {4096, 16384, 32768, 65536} x d in {512, 768, 1024}
x {bf16, tf32}, every method, and the two sigmoid cases.

Methods, each one forward + backward to both feature matrices and the logit scale, all through
public APIs so that the kernels behind them can be rewritten freely:
  gapops_triton_fused   gapops.contrastive_loss(backend="triton"), GAPOPS_TRITON_BWD=fused
  gapops_triton_gstrip  the same with GAPOPS_TRITON_BWD=gstrip
  gapops_triton_det     backend="triton", deterministic=True                   (--full)
  gapops_cuda           backend="cuda"
  gapops_cuda_det       backend="cuda", deterministic=True                     (--full)
  naive                 gapops.reference.reference_contrastive_loss (the N x N logits in fp32)
  naive_compile         torch.compile of that function
  naive_input_dtype     the same math with the logits in the input dtype     (--full)
  open_clip             open_clip.loss.ClipLoss on normalized features (needs open_clip_torch)
  inf_cl                Inf-CL's cal_inf_loss, both directions averaged (needs inf_cl)
  memeff                memeff's MemoryEfficientCLIPLoss (Triton; needs memeff): its temperature
                        is a fixed float (0.07), so it computes no logit-scale gradient
  sigmoid_gapops_triton gapops.sigmoid_loss(backend="triton")       (when gapops has sigmoid_loss)
  sigmoid_gapops_cuda   gapops.sigmoid_loss(backend="cuda")
  sigmoid_open_clip     open_clip.loss.SigLipLoss on normalized features, logit scale 10, bias -10
  sigmoid_siglip_kernel siglip_kernel.fused_siglip_loss (its own dtype router; needs siglip_kernel)

The cuda methods also print and record the cuBLAS-strip model of docs/cuda.md beside the
measurement: 4 products at the torch.mm rate measured in this process plus 22 bytes per logit
(fp32 strips, 16-bit H, forward + backward) at the copy bandwidth measured in this process.

Every method runs in its own child process (the GAPOPS_TRITON_BWD switch is set before gapops is
imported; a crash, a hang or a leak costs only that method), with a time cap of
min(--method-cap, what is left of --budget); a killed method keeps the cases it finished. Each
case writes one JSON line as soon as it is measured: status (ok / OOM / error / unavailable /
timeout), the median step time, the first call's time (compiles, autotuning), TFLOP/s counted as
8 N^2 d per step (docs/design.md section 4, whatever the method really computes), the rate of the dense
product torch.mm([N, d], [d, N]) in the same dtype measured in the same process, the fraction of
it, and peak memory (torch.cuda.max_memory_allocated over one step: in all, and above the inputs).
The first call (compiles, autotuning) and one more call run before the timed ones, so no compile
or tuning work is timed.
gpu_report.py turns the lines into Markdown.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if importlib.util.find_spec("gapops") is None:  # not installed: the checkout's package
    sys.path.insert(0, ROOT)

LOGIT_SCALE = 14.285714  # 1 / 0.07, CLIP's initial temperature
SIGMOID_SCALE, SIGMOID_BIAS = 10.0, -10.0  # SigLIP's initial logit scale and bias
SIGMOID_CASES = ["sig:65536x768xbf16", "sig:32768x768xbf16"]
QUICK_CASES = ["32768x768xbf16", "16384x512xtf32"] + SIGMOID_CASES
FULL_CASES = [f"{n}x{d}x{dt}" for dt in ("bf16", "tf32") for d in (512, 768, 1024)
              for n in (4096, 16384, 32768, 65536)] + SIGMOID_CASES
DRY_CASES = ["64x32xbf16", "48x16xtf32", "sig:64x32xbf16"]
SIGMOID_METHODS = ["sigmoid_gapops_triton", "sigmoid_gapops_cuda", "sigmoid_open_clip",
                   "sigmoid_siglip_kernel"]
# QUICK order: what the table exists for first; torch.compile last (its inductor compile is the
# slowest start, and the budget may run out before it).
QUICK_METHODS = ["gapops_triton_fused", "gapops_triton_gstrip", "gapops_cuda", "naive",
                 "open_clip", "inf_cl", "memeff"] + SIGMOID_METHODS + ["naive_compile"]
FULL_METHODS = ["gapops_triton_fused", "gapops_triton_gstrip", "gapops_triton_det", "gapops_cuda",
                "gapops_cuda_det", "naive", "naive_compile", "naive_input_dtype", "open_clip",
                "inf_cl", "memeff"] + SIGMOID_METHODS
# GAPOPS_TRITON_BWD of the Triton methods (set in the child's environment before any import)
TRITON_BWD = {"gapops_triton_fused": "fused", "gapops_triton_gstrip": "gstrip"}
# third-party methods: the module whose absence makes the method unavailable (checked without
# starting a child)
NEEDS_MODULE = {"open_clip": "open_clip", "inf_cl": "inf_cl", "memeff": "memeff",
                "sigmoid_open_clip": "open_clip", "sigmoid_siglip_kernel": "siglip_kernel"}
# cuBLAS-strip model (docs/cuda.md): bytes through the strips per logit, forward + backward
STRIP_BYTES_PER_LOGIT = 22


def method_loss(method):
    return "sigmoid" if method.startswith("sigmoid_") else "softmax"


def is_cuda(method):
    """A method of gapops' cuda backend (it needs the compiled extension)."""
    return "gapops_cuda" in method


def is_gapops(method):
    return method.startswith("gapops_") or method.startswith("sigmoid_gapops_")


def parse_case(text):
    """'NxDxDTYPE' (softmax) or 'sig:NxDxDTYPE' -> (loss, N, d, dtype)."""
    loss, body = ("sigmoid", text[4:]) if text.startswith("sig:") else ("softmax", text)
    n, d, dt = body.split("x")
    if dt not in ("bf16", "fp16", "fp32", "tf32"):
        raise ValueError(f"case {text!r}: dtype must be bf16, fp16, fp32 or tf32")
    return loss, int(n), int(d), dt


def cases_for(method, cases, peers_bf16_only):
    """The cases ``method`` runs: those of its loss; with peers_bf16_only (QUICK), a method that is
    neither gapops nor the naive form runs the bf16 cases only (the time goes to gapops' rows)."""
    out = []
    for c in cases:
        loss, _, _, dt = parse_case(c)
        if loss != method_loss(method):
            continue
        if peers_bf16_only and dt != "bf16" and not (is_gapops(method) or method == "naive"):
            continue
        out.append(c)
    return out


def triton_bwd_switch_known() -> bool:
    """Whether this gapops checkout reads GAPOPS_TRITON_BWD at all (else both shapes time alike)."""
    for folder, _, files in os.walk(os.path.join(ROOT, "gapops")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), errors="ignore") as f:
                    if "GAPOPS_TRITON_BWD" in f.read():
                        return True
    return False


# ---------------------------------------------------------------------------------------------
# Child side: the methods and the measurement (imports torch)
# ---------------------------------------------------------------------------------------------

def torch_dtype(name):
    import torch
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
            "tf32": torch.float32}[name]


def set_tf32(dtype_name):
    import torch
    on = dtype_name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def get_method(name, dry_run=False):
    """(fn(x, y, s) -> scalar loss, None) or (None, why it is unavailable)."""
    import torch
    import torch.nn.functional as F

    if name.startswith("sigmoid_"):
        return _sigmoid_method(name)
    if name.startswith("gapops_"):
        import gapops
        backend = "triton" if "triton" in name else "cuda"
        why = gapops.backends()[backend]
        if why != "available":
            return None, why
        det = name.endswith("_det")

        def fn(x, y, s):
            return gapops.contrastive_loss(x, y, s, backend=backend, deterministic=det)
        return fn, None
    if name in ("naive", "naive_compile"):
        from gapops.reference import reference_contrastive_loss
        if name == "naive":
            return reference_contrastive_loss, None
        # In a dry run (CPU) inductor would spend a minute compiling C++: the eager backend
        # exercises the same code path in a second.
        return torch.compile(reference_contrastive_loss,
                             backend="eager" if dry_run else "inductor"), None
    if name == "naive_input_dtype":
        def fn(x, y, s):
            a, b = F.normalize(x, dim=1), F.normalize(y, dim=1)
            logits = s.to(x.dtype) * (a @ b.T)
            labels = torch.arange(x.shape[0], device=x.device)
            return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        return fn, None
    try:
        if name == "open_clip":
            from open_clip.loss import ClipLoss
            loss = ClipLoss()

            def fn(x, y, s):
                return loss(F.normalize(x, dim=1), F.normalize(y, dim=1), s)
            return fn, None
        if name == "inf_cl":
            from inf_cl import cal_inf_loss
            _init_single_process_group()

            def fn(x, y, s):
                a, b = F.normalize(x, dim=1), F.normalize(y, dim=1)
                return 0.5 * (cal_inf_loss(a, b, scale=s) + cal_inf_loss(b, a, scale=s))
            return fn, None
        if name == "memeff":
            from memeff import MemoryEfficientCLIPLoss
            loss = MemoryEfficientCLIPLoss(temperature=1.0 / LOGIT_SCALE)  # normalizes itself

            def fn(x, y, s):
                return loss(x, y)
            return fn, None
    except ImportError as e:
        return None, f"not importable ({e})"
    raise ValueError(f"unknown method {name!r}")


def _sigmoid_method(name):
    """The sigmoid (SigLIP) methods: fn(x, y, s) with the bias a fresh leaf each call, so that its
    gradient is computed too (open_clip's SigLipLoss convention: s is the exponentiated scale)."""
    import torch
    import torch.nn.functional as F

    def bias(x):
        return torch.full((), SIGMOID_BIAS, device=x.device, requires_grad=True)

    if name.startswith("sigmoid_gapops_"):
        import gapops
        if not hasattr(gapops, "sigmoid_loss"):
            return None, "this gapops has no sigmoid_loss yet"
        backend = name.rsplit("_", 1)[1]
        why = gapops.backends()[backend]
        if why != "available":
            return None, why

        def fn(x, y, s):
            return gapops.sigmoid_loss(x, y, s, bias(x), backend=backend)
        return fn, None
    try:
        if name == "sigmoid_open_clip":
            from open_clip.loss import SigLipLoss
            loss = SigLipLoss()

            def fn(x, y, s):
                return loss(F.normalize(x, dim=1), F.normalize(y, dim=1), s, bias(x))
            return fn, None
        if name == "sigmoid_siglip_kernel":
            from siglip_kernel import fused_siglip_loss

            def fn(x, y, s):  # it takes the log of the scale and normalized features
                return fused_siglip_loss(F.normalize(x, dim=1), F.normalize(y, dim=1), s.log(),
                                         bias(x))
            return fn, None
    except ImportError as e:
        return None, f"not importable ({e})"
    raise ValueError(f"unknown method {name!r}")


def _init_single_process_group():
    """Inf-CL reads the world size and rank: one process, one GPU."""
    import torch.distributed as dist
    if dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29531", rank=0, world_size=1)


class Device:
    """What differs between a GPU run and a dry run on the CPU: timers, memory counters."""

    def __init__(self, dry_run):
        import torch
        self.torch = torch
        self.cuda = not dry_run
        self.name = torch.cuda.get_device_name() if self.cuda else "cpu (dry run)"
        self.type = "cuda" if self.cuda else "cpu"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def free(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def allocated(self):
        return self.torch.cuda.memory_allocated() if self.cuda else None

    def reset_peak(self):
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self):
        return self.torch.cuda.max_memory_allocated() if self.cuda else None

    def time_once(self, fn):
        """Seconds of one fn() call: CUDA events on a GPU, the host clock on the CPU."""
        if self.cuda:
            torch = self.torch
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def is_oom(self, e):
        return isinstance(e, self.torch.cuda.OutOfMemoryError) or "out of memory" in str(e)


def make_inputs(dev, n, d, dtype, seed=0, scale=LOGIT_SCALE):
    torch = dev.torch
    g = torch.Generator(device=dev.type).manual_seed(seed)
    x = torch.randn(n, d, device=dev.type, dtype=torch.float32, generator=g)
    y = 0.5 * x + torch.randn(n, d, device=dev.type, dtype=torch.float32, generator=g)
    s = torch.tensor(scale, device=dev.type, dtype=torch.float32)
    return x.to(dtype).requires_grad_(), y.to(dtype).requires_grad_(), s.requires_grad_()


def step(fn, x, y, s):
    """One forward + backward (the caller synchronizes)."""
    x.grad = y.grad = s.grad = None
    loss = fn(x, y, s)
    loss.backward()
    return loss


_mm_cache = {}


def dense_mm_tflops(dev, n, d, dtype_name, reps=5):
    """Measured TFLOP/s of torch.mm([n, d], [d, n]) in this dtype (TF32 per the case)."""
    key = (n, d, dtype_name)
    if key not in _mm_cache:
        torch = dev.torch
        dev.free()
        try:
            dt = torch_dtype(dtype_name)
            a = torch.randn(n, d, device=dev.type).to(dt)
            b = torch.randn(d, n, device=dev.type).to(dt)
            out = torch.empty(n, n, device=dev.type, dtype=dt)
            dev.time_once(lambda: torch.mm(a, b, out=out))  # warm-up (cuBLAS handle, heuristics)
            t = statistics.median(dev.time_once(lambda: torch.mm(a, b, out=out)) for _ in range(reps))
            _mm_cache[key] = 2.0 * n * n * d / t / 1e12
            del a, b, out
        except Exception as e:  # noqa: BLE001 (OOM for the [N, N] output at large N)
            print(f"  dense mm {n}x{d} {dtype_name}: {type(e).__name__}: {str(e)[:120]}", flush=True)
            _mm_cache[key] = None
        dev.free()
    return _mm_cache[key]


_bw_cache = []


def copy_bandwidth_gbs(dev, nbytes=2**30, reps=5):
    """Measured device-memory bandwidth (GB/s) of one big copy, read + write counted."""
    if not _bw_cache:
        torch = dev.torch
        dev.free()
        try:
            src = torch.empty(nbytes // 4, device=dev.type, dtype=torch.float32).fill_(1.0)
            dst = torch.empty_like(src)
            dev.time_once(lambda: dst.copy_(src))
            t = statistics.median(dev.time_once(lambda: dst.copy_(src)) for _ in range(reps))
            _bw_cache.append(2.0 * src.numel() * 4 / t / 1e9)
            del src, dst
        except Exception as e:  # noqa: BLE001
            print(f"  copy bandwidth: {type(e).__name__}: {str(e)[:120]}", flush=True)
            _bw_cache.append(None)
        dev.free()
    return _bw_cache[0]


def strip_model(n, d, mm_tflops, bw_gbs):
    """The cuBLAS-strip model of docs/cuda.md: (seconds, fraction of the torch.mm rate)."""
    t = 4 * 2.0 * n * n * d / (mm_tflops * 1e12) + STRIP_BYTES_PER_LOGIT * n * n / (bw_gbs * 1e9)
    return t, 8.0 * n * n * d / t / (mm_tflops * 1e12)


def measure(dev, fn, n, d, dtype_name, time_per_case=2.0, max_reps=20, scale=LOGIT_SCALE,
            model=False):
    """One case: a dict with status and, when it ran, times, rates and memory; with model, the
    cuBLAS-strip model's time from the torch.mm rate and the copy bandwidth of this process."""
    set_tf32(dtype_name)
    rec = {"flops": 8.0 * n * n * d, "mm_tflops": dense_mm_tflops(dev, n, d, dtype_name)}
    if model and rec["mm_tflops"] and copy_bandwidth_gbs(dev):
        rec["copy_gbs"] = copy_bandwidth_gbs(dev)
        t, frac = strip_model(n, d, rec["mm_tflops"], rec["copy_gbs"])
        rec.update(model_ms=t * 1e3, model_frac_of_mm=frac)
    dev.free()
    x = y = s = None
    try:
        x, y, s = make_inputs(dev, n, d, torch_dtype(dtype_name), scale=scale)
        dev.sync()
        base = dev.allocated()
        rec["first_call_s"] = dev.time_once(lambda: step(fn, x, y, s))  # compiles, tunes
        dev.reset_peak()
        warm = dev.time_once(lambda: step(fn, x, y, s))  # not timed below: the timed calls follow
        peak = dev.peak()
        if peak is not None:
            rec["peak_bytes"], rec["extra_bytes"] = peak, peak - base
        reps = max(3, min(max_reps, int(time_per_case / max(warm, 1e-6))))
        times = [dev.time_once(lambda: step(fn, x, y, s)) for _ in range(reps)]
        t = statistics.median(times)
        rec.update(status="ok", ms=t * 1e3, ms_min=min(times) * 1e3, reps=reps,
                   tflops=rec["flops"] / t / 1e12)
        if rec["mm_tflops"]:
            rec["frac_of_mm"] = rec["tflops"] / rec["mm_tflops"]
    except Exception as e:  # noqa: BLE001 (a third-party method failing must not stop the run)
        rec["status"] = "OOM" if dev.is_oom(e) else f"error: {type(e).__name__}: {str(e)[:200]}"
    finally:
        del x, y, s
        dev.free()
    return rec


def child_main(args):
    """Runs one method over the cases, one JSON line per case (a 'started' line first)."""
    dev = Device(args.dry_run)
    fn, why = get_method(args.child, args.dry_run)
    common = {"kind": "bench", "method": args.child, "device": dev.name}
    if args.child in TRITON_BWD:
        common["triton_bwd"] = os.environ.get("GAPOPS_TRITON_BWD")
    if args.concurrent:
        common["concurrent"] = args.concurrent
    model = args.child.endswith("gapops_cuda")
    for case in cases_for(args.child, args.cases, args.peers_bf16_only):
        loss, n, d, dt = parse_case(case)
        row = {**common, "loss": loss, "N": n, "d": d, "dtype": dt}
        if fn is None:
            emit(args.jsonl, {**row, "status": f"unavailable: {why}"})
            continue
        emit(args.jsonl, {**row, "status": "started"})
        if args.sleep_method and args.sleep_method == f"{args.child}:{case}":
            time.sleep(3600)  # test hook: a case that never ends (the caps must stop it)
        rec = measure(dev, fn, n, d, dt, time_per_case=args.time_per_case, max_reps=args.max_reps,
                      scale=SIGMOID_SCALE if loss == "sigmoid" else LOGIT_SCALE, model=model)
        emit(args.jsonl, {**row, **rec})
        print(f"  {args.child:22s} {case:18s} {fmt_row(rec)}", flush=True)
        if model and rec.get("model_ms"):
            print(f"  cuBLAS-strip model vs measured ({args.child}, {case}): model "
                  f"{rec['model_ms']:.2f} ms = {100 * rec['model_frac_of_mm']:.0f}% of torch.mm "
                  f"({rec['mm_tflops']:.0f} TFLOP/s, copy {rec['copy_gbs']:.0f} GB/s, "
                  f"{STRIP_BYTES_PER_LOGIT} B/logit); measured "
                  + (f"{rec['ms']:.2f} ms = {100 * rec.get('frac_of_mm', 0):.0f}%"
                     if rec.get("status") == "ok" else rec.get("status", "?")), flush=True)
    return 0


def fmt_row(rec):
    if rec.get("status") != "ok":
        return rec.get("status", "?")
    frac = f"{100 * rec['frac_of_mm']:.0f}% of mm" if rec.get("frac_of_mm") else "mm n/a"
    mem = f"{rec['extra_bytes'] / 2**30:.2f} GiB extra" if rec.get("extra_bytes") is not None else ""
    return (f"{rec['ms']:9.2f} ms  {rec['tflops']:7.3g} TFLOP/s  {frac}  first call "
            f"{rec['first_call_s']:.1f} s  {mem}")


def emit(path, obj):
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


# ---------------------------------------------------------------------------------------------
# Parent side: one child per method, under a time cap (imports no torch)
# ---------------------------------------------------------------------------------------------

_RUNNING = []


def _kill_children_and_exit(signum, frame):
    """SIGTERM (gpu_check.sh's step cap): take the child's process group down too."""
    for p in _RUNNING:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sys.exit(128 + signum)


def run_child(cmd, env, cap):
    """Runs cmd in its own process group; kills the whole group at the cap (or when this process
    gets SIGTERM/SIGINT). Returns (exit code or 'timeout', seconds)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _kill_children_and_exit)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, start_new_session=True)
    _RUNNING.append(p)
    try:
        rc = p.wait(timeout=max(cap, 1))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        rc = "timeout"
    finally:
        _RUNNING.remove(p)
    return rc, time.monotonic() - t0


def not_run(args, method, status):
    """Records, for every case of ``method``, why it did not run, and prints it once."""
    for case in cases_for(method, args.cases, args.peers_bf16_only):
        loss, n, d, dt = parse_case(case)
        emit(args.jsonl, {"kind": "bench", "method": method, "loss": loss, "N": n, "d": d,
                          "dtype": dt, "status": status})
    print(f"  {method:22s} {status}", flush=True)


def parent_main(args):
    deadline = time.monotonic() + args.budget
    methods = args.methods
    known = triton_bwd_switch_known()
    if not known and any(m in TRITON_BWD for m in methods):
        print("bench_gpu.py: NOTE: gapops does not read GAPOPS_TRITON_BWD yet: the two Triton "
              "rows time the same backward", flush=True)
    print(f"bench_gpu.py: {len(methods)} methods x {len(args.cases)} cases, budget "
          f"{args.budget:.0f} s, at most {args.method_cap:.0f} s per method", flush=True)
    rc_all = 0
    for i, m in enumerate(methods):
        base = {"kind": "bench", "method": m}
        mod = NEEDS_MODULE.get(m)
        if mod and importlib.util.find_spec(mod) is None:
            not_run(args, m, f"unavailable: {mod} is not installed")
            continue
        if not cases_for(m, args.cases, args.peers_bf16_only):
            continue  # no case of its loss in this run
        if is_cuda(m):
            if args.dry_run:
                not_run(args, m, "skipped: dry run (the cuda backend needs a GPU)")
                continue
        left = deadline - time.monotonic()
        cap = min(args.method_caps.get(m, args.method_cap), left)
        if left < 5:
            not_run(args, m, "skipped: benchmark budget spent")
            continue
        env = dict(os.environ)
        if m in TRITON_BWD:
            env["GAPOPS_TRITON_BWD"] = TRITON_BWD[m]
            if not known:
                base["note"] = "GAPOPS_TRITON_BWD not read by this gapops"
        cmd = [sys.executable, os.path.abspath(__file__), "--child", m, "--jsonl", args.jsonl,
               "--cases", ",".join(args.cases), "--time-per-case", str(args.time_per_case),
               "--max-reps", str(args.max_reps)]
        if args.dry_run:
            cmd.append("--dry-run")
        if args.peers_bf16_only:
            cmd.append("--peers-bf16-only")
        if args.concurrent:
            cmd += ["--concurrent", args.concurrent]
        if args.sleep_method:
            cmd += ["--sleep-method", args.sleep_method]
        rc, secs = run_child(cmd, env, cap)
        # cases the child did not finish: mark them (timeout / crash) so the table shows them
        done = {}
        for rec in read_jsonl(args.jsonl):
            if rec.get("kind") == "bench" and rec.get("method") == m:
                done[(rec.get("loss", "softmax"), rec["N"], rec["d"], rec["dtype"])] = \
                    rec.get("status")
        for case in cases_for(m, args.cases, args.peers_bf16_only):
            loss, n, d, dt = parse_case(case)
            st = done.get((loss, n, d, dt))
            if st is None or st == "started":
                why = (f"timeout: method killed at its {cap:.0f} s cap" if rc == "timeout"
                       else f"error: child exited with {rc}")
                emit(args.jsonl, {**base, "loss": loss, "N": n, "d": d, "dtype": dt,
                                  "status": why})
        if rc not in (0,):
            rc_all = 1
        print(f"  {m:22s} done in {secs:.1f} s (exit {rc})", flush=True)
    return rc_all


def read_jsonl(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a line cut off by a kill
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jsonl", required=True, help="JSON lines are appended here")
    p.add_argument("--cases", default=os.environ.get("GAPOPS_BENCH_CASES"),
                   help="comma list of NxDxDTYPE (env GAPOPS_BENCH_CASES)")
    p.add_argument("--methods", default=os.environ.get("GAPOPS_BENCH_METHODS"),
                   help="comma list (default: the QUICK or --full set; env GAPOPS_BENCH_METHODS)")
    p.add_argument("--full", action="store_true", help="the long grid and every method")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, tiny sizes, Triton interpreted (TRITON_INTERPRET=1): checks the plumbing")
    p.add_argument("--budget", type=float, default=float(os.environ.get("GAPOPS_BENCH_BUDGET", 240)),
                   help="seconds for all methods together")
    p.add_argument("--method-cap", type=float,
                   default=float(os.environ.get("GAPOPS_BENCH_METHOD_CAP", 75)),
                   help="seconds per method (its child is killed at the cap)")
    p.add_argument("--method-caps", default=os.environ.get("GAPOPS_BENCH_METHOD_CAPS", ""),
                   help="per-method caps overriding --method-cap: 'METHOD=SECONDS,...' "
                        "(env GAPOPS_BENCH_METHOD_CAPS)")
    p.add_argument("--time-per-case", type=float, default=None,
                   help="seconds of timed repetitions per case (QUICK 1, --full 2)")
    p.add_argument("--max-reps", type=int, default=None, help="timed repetitions at most "
                   "(QUICK 10, --full 20; at least 3)")
    p.add_argument("--peers-bf16-only", action="store_true", default=None,
                   help="methods other than gapops and naive run the bf16 cases only "
                        "(the QUICK default)")
    p.add_argument("--group", choices=("all", "cuda", "nocuda"), default="all",
                   help="only the cuda-backend methods, or all but them (gpu_check.sh times the "
                        "others while the extension builds)")
    p.add_argument("--concurrent", default=os.environ.get("GAPOPS_BENCH_CONCURRENT"),
                   help="what else ran on the machine meanwhile (recorded in each row)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sleep-method", default=os.environ.get("GAPOPS_BENCH_TEST_HANG"),
                   help=argparse.SUPPRESS)  # test hook: METHOD:CASE hangs forever
    args = p.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    default_cases = DRY_CASES if args.dry_run else (FULL_CASES if args.full else QUICK_CASES)
    args.cases = args.cases.split(",") if args.cases else default_cases
    for c in args.cases:
        parse_case(c)
    args.methods = (args.methods.split(",") if args.methods
                    else (FULL_METHODS if args.full else QUICK_METHODS))
    args.method_caps = {k: float(v) for k, v in
                        (item.split("=") for item in args.method_caps.split(",") if item)}
    if args.group != "all":
        args.methods = [m for m in args.methods if is_cuda(m) == (args.group == "cuda")]
    if args.time_per_case is None:
        args.time_per_case = 2.0 if args.full else 1.0
    if args.max_reps is None:
        args.max_reps = 20 if args.full else 10
    if args.peers_bf16_only is None:
        args.peers_bf16_only = not args.full
    if args.child:
        return child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
