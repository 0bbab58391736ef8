"""Correctness of the GPU backends against the float64 reference, through the public API only.

    python3 benchmarks/gpu_correctness.py --variants triton:fused,triton:gstrip --jsonl c.jsonl
    python3 benchmarks/gpu_correctness.py --variants cuda --jsonl c.jsonl
    python3 benchmarks/gpu_correctness.py --dry-run --variants triton:fused --jsonl c.jsonl  # CPU

A variant is a backend, for 'triton' with the backward shape GAPOPS_TRITON_BWD (fused | gstrip).
Each variant runs in its own child process (the switch is set before gapops is imported), the
variants in parallel. Per case (N, d, dtype) the child draws fresh random inputs, rounds them to the
dtype, runs gapops.contrastive_loss forward + backward and compares the loss and the three
gradients (both feature matrices, the logit scale) with gapops.reference.reference_contrastive_loss
evaluated in float64 on the same rounded inputs (above N = 4096: a chunked float64 oracle of the
same function, self-checked against it at start, since the autograd reference would hold ~60 GB):
relative error ||got - want|| / ||want||, NaN and Inf fail. Then deterministic=True twice: as accurate, and bit-identical run to run.

The cases cover N = 1, an odd N (1001, with odd d = 97), N = 4096 and N = 32768 (the benchmark's
shapes, d = 768 bf16 and d = 512 fp32/TF32, so that the Triton kernels compiled here are reused by
the benchmark from Triton's cache). At N = 4096 and N = 32768 the first call of each dtype is one
that autotunes (gapops tunes strips of >= 2^24 logits, keyed on d, dtypes and an N bucket): it is
checked like any other (flagged first_tuned_call), so a tuner that leaves partial results in the
outputs fails here. One JSON line per check; exit status
1 if any check fails.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if importlib.util.find_spec("gapops") is None:  # not installed: the checkout's package
    sys.path.insert(0, ROOT)

# Relative tolerances (loss, gradients) per dtype: kernel error only (the reference sees the same
# rounded inputs). tf32: fp32 inputs with TF32 products (about 3e-4 relative per product).
TOL = {"fp64": (1e-10, 1e-9), "fp32": (1e-5, 1e-4), "tf32": (1e-3, 5e-3),
       "bf16": (1e-2, 2e-2), "fp16": (1e-2, 2e-2)}
ALL = ("fp64", "fp32", "tf32", "bf16", "fp16")
# (N, d, dtypes, deterministic mode checked too)
GPU_CASES = [
    (1, 64, ALL, True),
    (1001, 97, ALL, True),
    (4096, 768, ("bf16", "fp16"), True),
    (4096, 512, ("fp32", "tf32"), True),
    (4096, 64, ("fp64",), False),
    (32768, 768, ("bf16",), True),
    (32768, 512, ("tf32",), False),
]
# --quick (gpu_check.sh's QUICK mode, ~half the Triton compiles): every dtype once (N = 1), the
# odd tails in the three 16/32-bit input dtypes, the tuned first calls at N = 4096 and the
# benchmark's bf16 shape; the rest (fp64/TF32 tails, IEEE fp32 and fp64 at 4096, deterministic at
# N = 32768, TF32 at N = 32768) only in the full list.
QUICK_GPU_CASES = [
    (1, 64, ALL, True),
    (1001, 97, ("fp32", "bf16", "fp16"), True),
    (4096, 768, ("bf16", "fp16"), True),
    (4096, 512, ("tf32",), False),
    (32768, 768, ("bf16",), False),
]
DRY_CASES = [(1, 8, ("fp64", "fp32", "bf16"), True), (33, 17, ("fp64", "fp32", "bf16", "fp16"), True),
             (64, 32, ("fp32",), False)]


def _torch_dtype(name):
    import torch
    return {"fp64": torch.float64, "fp32": torch.float32, "tf32": torch.float32,
            "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _loss_and_grads(fn, x, y, s, **kw):
    import torch
    xs, ys, ss = (t.detach().clone().requires_grad_() for t in (x, y, s))
    loss = fn(xs, ys, ss, **kw)
    gx, gy, gs = torch.autograd.grad(loss, (xs, ys, ss))
    return [loss.detach(), gx, gy, gs]


def _rel(got, want):
    got, want = got.double(), want.double()
    if not bool(got.isfinite().all()):
        return float("nan")
    den = float(want.norm())
    num = float((got - want).norm())
    return num / den if den > 1e-30 else num


def chunked_oracle(x, y, s, chunk=4096):
    """(loss, d x, d y, d s) of the mean loss in float64 without the N x N logits in memory.

    Same function as gapops.reference.reference_contrastive_loss (normalize, s * a @ b.T, the
    mean of the two cross-entropies; checked against it at N <= 4096 by self_check()), in row blocks
    of ``chunk``: pass 1 the row and column log-sum-exps, pass 2 G = (P_row + P_col) / 2N - I / N
    and the three gradients, then autograd through the normalization. O(N chunk) memory, where the
    autograd reference needs several N^2 float64 arrays (~60 GB at N = 32768).
    """
    import torch
    import torch.nn.functional as F

    xs = x.detach().double().requires_grad_()
    ys = y.detach().double().requires_grad_()
    sv = s.detach().double().reshape(())
    a, b = F.normalize(xs, dim=1, eps=1e-12), F.normalize(ys, dim=1, eps=1e-12)
    A, B = a.detach(), b.detach()
    n = A.shape[0]
    with torch.no_grad():
        row = torch.empty(n, dtype=torch.float64, device=A.device)
        col = torch.full((n,), float("-inf"), dtype=torch.float64, device=A.device)
        for i in range(0, n, chunk):
            L = sv * (A[i:i + chunk] @ B.T)
            row[i:i + chunk] = torch.logsumexp(L, dim=1)
            col = torch.logaddexp(col, torch.logsumexp(L, dim=0))
        diag = sv * (A * B).sum(1)
        loss = 0.5 * ((row - diag) + (col - diag)).mean()
        dA, dB = torch.zeros_like(A), torch.zeros_like(B)
        ds = torch.zeros((), dtype=torch.float64, device=A.device)
        for i in range(0, n, chunk):
            K = A[i:i + chunk] @ B.T
            L = sv * K
            G = (torch.exp(L - row[i:i + chunk, None]) + torch.exp(L - col[None, :])) / (2 * n)
            idx = torch.arange(i, min(i + chunk, n), device=A.device)
            G[idx - i, idx] -= 1.0 / n
            dA[i:i + chunk] = sv * (G @ B)
            dB += sv * (G.T @ A[i:i + chunk])
            ds += (G * K).sum()
            del K, L, G
    gx, gy = torch.autograd.grad((a, b), (xs, ys), (dA, dB))
    return [loss, gx, gy, ds]


_SELF_CHECKED = set()


def self_check(device):
    """The chunked oracle against gapops.reference in float64 (once per process and device)."""
    if device in _SELF_CHECKED:
        return
    import torch
    from gapops.reference import reference_contrastive_loss
    g = torch.Generator(device=device).manual_seed(12345)
    for n, d, chunk in ((1, 5, 4096), (301, 37, 64), (64, 16, 7)):
        x = torch.randn(n, d, device=device, dtype=torch.float64, generator=g)
        y = 0.5 * x + torch.randn(n, d, device=device, dtype=torch.float64, generator=g)
        s = torch.tensor(14.3, device=device, dtype=torch.float64)
        want = _loss_and_grads(reference_contrastive_loss, x, y, s)
        got = chunked_oracle(x, y, s, chunk=chunk)
        errs = [_rel(a, b) for a, b in zip(got, want)]
        if not all(e <= 1e-10 for e in errs):
            raise AssertionError(f"chunked float64 oracle disagrees with gapops.reference at n={n}, "
                                 f"d={d}: {errs}")
    _SELF_CHECKED.add(device)


def check_case(backend, device, n, d, dtype_name, det_too, seed):
    """Yields one record per mode (default, deterministic)."""
    import torch
    import gapops
    from gapops.reference import reference_contrastive_loss

    tf32 = dtype_name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    dt = _torch_dtype(dtype_name)
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, d, device=device, dtype=torch.float64, generator=g)
    y = 0.5 * x + torch.randn(n, d, device=device, dtype=torch.float64, generator=g)
    s = torch.tensor(14.3, device=device, dtype=torch.float64)
    xq, yq = x.to(dt), y.to(dt)
    sq = s.to(torch.float64 if dt == torch.float64 else torch.float32)
    if n <= 4096:
        want = _loss_and_grads(reference_contrastive_loss, xq.double(), yq.double(), s)
    else:  # the autograd reference would hold several N x N float64 arrays
        self_check(device)
        want = chunked_oracle(xq, yq, s)
    want = [w.double() for w in want]
    if device == "cuda":
        torch.cuda.empty_cache()
    tol_loss, tol_grad = TOL[dtype_name]
    modes = [False, True] if det_too else [False]
    for det in modes:
        t0 = time.perf_counter()
        got = _loss_and_grads(gapops.contrastive_loss, xq, yq, sq, backend=backend,
                              deterministic=det)
        if device == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        errs = [_rel(a, b) for a, b in zip(got, want)]
        tols = [tol_loss, tol_grad, tol_grad, tol_grad]
        ok = all(e == e and e <= t for e, t in zip(errs, tols))
        rec = {"N": n, "d": d, "dtype": dtype_name, "deterministic": det,
               "err_loss": errs[0], "err_dx": errs[1], "err_dy": errs[2], "err_ds": errs[3],
               "tol_loss": tol_loss, "tol_grad": tol_grad, "seconds": secs}
        if det:
            again = _loss_and_grads(gapops.contrastive_loss, xq, yq, sq, backend=backend,
                                    deterministic=True)
            same = all(torch.equal(a, b) for a, b in zip(got, again))
            rec["bitwise_repeat"] = same
            ok = ok and same
        rec["ok"] = ok
        yield rec
        del got
    del want, x, y, xq, yq


def child_main(args):
    backend = args.child.split(":")[0]
    device = "cpu" if args.dry_run else "cuda"
    import torch
    import gapops
    base = {"kind": "correctness", "variant": args.child, "backend": backend,
            "triton_bwd": os.environ.get("GAPOPS_TRITON_BWD") if backend == "triton" else None}
    why = gapops.backends()[backend]
    if why != "available":
        _emit(args.jsonl, {**base, "ok": False, "status": f"unavailable: {why}"})
        print(f"[{args.child}] backend unavailable: {why}", flush=True)
        return 1
    cases = DRY_CASES if args.dry_run else (QUICK_GPU_CASES if args.quick else GPU_CASES)
    self_check(device)  # the chunked oracle used above N = 4096, against gapops.reference
    print(f"[{args.child}] chunked float64 oracle agrees with gapops.reference", flush=True)
    first_seen = set()
    failed = 0
    seed = 0
    for n, d, dtypes, det_too in cases:
        if args.max_n and n > args.max_n:
            continue
        for dtype_name in dtypes:
            if dtype_name == "tf32" and device == "cpu":
                continue
            seed += 1
            # gapops autotunes the first call of a (d, dtypes, N bucket) key at >= 2^24 logits
            first = n * n >= 1 << 24 and (n, d, dtype_name) not in first_seen
            first_seen.add((n, d, dtype_name))
            try:
                for rec in check_case(backend, device, n, d, dtype_name, det_too, seed):
                    rec.update(base, first_tuned_call=first and not rec["deterministic"])
                    rec["status"] = "ok" if rec["ok"] else "FAILED"
                    _emit(args.jsonl, rec)
                    failed += not rec["ok"]
                    print(f"[{args.child}] N={n:<6d} d={d:<4d} {dtype_name:5s} "
                          f"{'det ' if rec['deterministic'] else 'fast'} "
                          f"err loss {rec['err_loss']:.1e} dx {rec['err_dx']:.1e} "
                          f"dy {rec['err_dy']:.1e} ds {rec['err_ds']:.1e}"
                          f"{'  bitwise-repeat ' + str(rec['bitwise_repeat']) if 'bitwise_repeat' in rec else ''}"
                          f"{'  (first tuned call)' if rec['first_tuned_call'] else ''}"
                          f"  {rec['seconds']:.2f} s  {rec['status']}", flush=True)
            except Exception as e:  # noqa: BLE001
                failed += 1
                oom = "out of memory" in str(e).lower()
                _emit(args.jsonl, {**base, "N": n, "d": d, "dtype": dtype_name, "ok": False,
                                   "status": ("OOM" if oom else "error") +
                                   f": {type(e).__name__}: {str(e)[:200]}"})
                print(f"[{args.child}] N={n} d={d} {dtype_name}: {type(e).__name__}: {e}",
                      flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
    return 1 if failed else 0


def _emit(path, obj):
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def parent_main(args):
    """The variants in parallel, each in its own process; exit 1 if any failed."""
    procs = []
    for v in args.variants:
        env = dict(os.environ)
        backend, _, shape = v.partition(":")
        if backend not in ("triton", "cuda", "cpu", "reference"):
            raise SystemExit(f"unknown variant {v!r}")
        if backend == "cuda" and args.dry_run:
            print(f"[{v}] skipped: dry run (the cuda backend needs a GPU)", flush=True)
            _emit(args.jsonl, {"kind": "correctness", "variant": v, "backend": backend,
                               "ok": True, "status": "skipped: dry run"})
            continue
        if backend == "triton":
            env["GAPOPS_TRITON_BWD"] = shape or "fused"
        cmd = [sys.executable, os.path.abspath(__file__), "--child", v, "--jsonl", args.jsonl]
        if args.dry_run:
            cmd.append("--dry-run")
        if args.max_n:
            cmd += ["--max-n", str(args.max_n)]
        if args.quick:
            cmd.append("--quick")
        procs.append((v, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)))

    def pump(p):
        for line in p.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
    threads = [threading.Thread(target=pump, args=(p,), daemon=True) for _, p in procs]
    for t in threads:
        t.start()
    rc = 0
    for (v, p), t in zip(procs, threads):
        p.wait()
        t.join()
        print(f"[{v}] exit {p.returncode}", flush=True)
        rc |= p.returncode != 0
    return int(rc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="triton:fused,triton:gstrip",
                   help="comma list: triton:fused, triton:gstrip, cuda (also cpu, reference)")
    p.add_argument("--jsonl", required=True)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, Triton interpreted")
    p.add_argument("--max-n", type=int, default=0, help="skip cases above this N")
    p.add_argument("--quick", action="store_true", help="the shorter case list (QUICK_GPU_CASES)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    args.variants = [v for v in args.variants.split(",") if v]
    return child_main(args) if args.child else parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
