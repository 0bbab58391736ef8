"""Small, awkward cases for compute-sanitizer: one forward + backward per kernel, public API only.

    compute-sanitizer --tool memcheck python3 benchmarks/sanitize_cases.py --backends cuda,triton
    python3 benchmarks/sanitize_cases.py --dry-run --backends triton     # CPU, Triton interpreted

Per backend, per mode (deterministic False / True), per dtype (fp32, bf16, and fp32 with TF32
products): N = 1 and N = 70, d = 33 (tails in every dimension), plus swap_mask and
reduction='none' once. That launches each kernel of the backend (forward, column combine,
backward in its atomic and its fixed-order form) on shapes that end mid-tile. The Triton backward
shape is whatever GAPOPS_TRITON_BWD says (gpu_sanitize.sh runs this once per shape).
--quick (the GPU check's QUICK mode): bf16 only, the same shapes and modes: every kernel launches
on tails, with a third of the Triton compiles and sanitized launches.
Output poisoning is the kernels' business; here every result must be finite and close to the
float64 reference (loose tolerance: memcheck is about memory, the accuracy checks live in
gpu_correctness.py). Exit status 1 on a wrong or non-finite result.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if importlib.util.find_spec("gapops") is None:
    sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="cuda,triton")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--quick", action="store_true", help="bf16 only (the GPU check's QUICK mode)")
    args = p.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch
    import gapops
    from gapops.reference import reference_contrastive_loss

    device = "cpu" if args.dry_run else "cuda"
    status = gapops.backends()
    bad = 0
    torch.manual_seed(0)
    for backend in args.backends.split(","):
        if backend == "cuda" and args.dry_run:
            print("cuda: skipped in a dry run (needs a GPU)")
            continue
        if status.get(backend) != "available":
            print(f"{backend}: unavailable ({status.get(backend)}): skipped")
            continue
        shape = f" GAPOPS_TRITON_BWD={os.environ.get('GAPOPS_TRITON_BWD', '(default)')}" \
            if backend == "triton" else ""
        for det in (False, True):
            for dtype, tf32 in ((torch.float32, False), (torch.float32, True), (torch.bfloat16, False)):
                if (tf32 and args.dry_run) or (args.quick and dtype != torch.bfloat16):
                    continue
                torch.backends.cuda.matmul.allow_tf32 = tf32
                for n, d, extra in ((1, 8, {}), (70, 33, {}),
                                    (70, 33, {"swap_mask": "random", "reduction": "none"})):
                    kw = dict(extra)
                    if kw.get("swap_mask") == "random":
                        kw["swap_mask"] = torch.rand(n, device=device) < 0.5
                    x = torch.randn(n, d, device=device).to(dtype).requires_grad_()
                    y = torch.randn(n, d, device=device).to(dtype).requires_grad_()
                    s = torch.tensor(14.3, device=device, requires_grad=True)
                    loss = gapops.contrastive_loss(x, y, s, backend=backend, deterministic=det, **kw)
                    loss.sum().backward()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    xd, yd, sd = (t.detach().double().requires_grad_() for t in (x, y, s))
                    want = reference_contrastive_loss(xd, yd, sd, **kw)
                    want.sum().backward()
                    errs = [float((a.double() - b).abs().max()) for a, b in
                            ((loss.detach(), want.detach()), (x.grad, xd.grad), (y.grad, yd.grad),
                             (s.grad, sd.grad))]
                    finite = all(e == e and e != float("inf") for e in errs)
                    ok = finite and max(errs) < 0.05 * max(1.0, float(want.detach().abs().max()))
                    bad += not ok
                    name = {torch.float32: "tf32" if tf32 else "fp32", torch.bfloat16: "bf16"}[dtype]
                    print(f"{backend}{shape} det={det!s:5s} {name} n={n} d={d}"
                          f"{' swap+none' if extra else ''}: max |err| "
                          f"{max(errs):.1e} {'ok' if ok else 'WRONG'}", flush=True)
    print("sanitize_cases.py:", "all results ok" if not bad else f"{bad} WRONG results")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
