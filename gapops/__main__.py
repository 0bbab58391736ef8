"""`python -m gapops info` (versions, backends, build) and `python -m gapops demo` (each backend
against the reference on random data, with times)."""
from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

import gapops
from gapops.reference import reference_contrastive_loss


def info() -> None:
    print(f"gapops {gapops.__version__}")
    print(f"torch  {torch.__version__} (CUDA {torch.version.cuda or 'none'}), "
          f"python {platform.python_version()}, {torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available():
        print(f"device {torch.cuda.get_device_name()}")
    build = gapops.build_info()
    if build.get("built"):
        archs = build.get("cuda_archs") or "-"
        print(f"extension: CPU kernels ({build.get('cpu_simd')}), CUDA kernels: "
              f"{'yes, sm ' + archs if build.get('cuda') else 'not built'}, "
              f"built against torch {build.get('torch')}")
    else:
        print(f"extension: {build.get('why')}")
    print("backends:")
    for name, status in gapops.backends().items():
        print(f"  {name:<10} {status}")


def _time_fwd_bwd(fn, x, y, s, repeats):
    best = float("inf")
    for _ in range(repeats):
        xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = fn(xs, ys, s)
        loss.backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return loss.detach(), (xs.grad, ys.grad), best


def demo(n: int, d: int, device: str, repeats: int) -> int:
    """Checks every available backend against the float64 reference; prints errors and times."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen).to(device)
    y = (0.5 * x.cpu() + torch.randn(n, d, generator=gen)).to(device)
    s = torch.tensor(14.3, device=device)
    want, want_g, _ = _time_fwd_bwd(reference_contrastive_loss, x.double(), y.double(), s.double(), 1)
    print(f"N={n} d={d} fp32 on {device}: forward+backward, best of {repeats}")
    print(f"{'backend':<10} {'loss':>12} {'max rel err':>12} {'time ms':>10}")
    failed = 0
    for name, status in gapops.backends().items():
        if status != "available":
            print(f"{name:<10} {'-':>12} {'-':>12} {'-':>10}  ({status})")
            continue
        try:
            fn = lambda a, b, c, be=name: gapops.contrastive_loss(a, b, c, backend=be)  # noqa: E731
            got, got_g, t = _time_fwd_bwd(fn, x, y, s, repeats)
        except (ValueError, RuntimeError) as e:
            print(f"{name:<10} {'-':>12} {'-':>12} {'-':>10}  ({e})")
            continue
        err = max(float((got.double() - want).abs() / want.abs()),
                  *(float((g.double() - w).norm() / w.norm()) for g, w in zip(got_g, want_g)))
        failed += err > 1e-4
        print(f"{name:<10} {float(got):>12.6f} {err:>12.2e} {1e3 * t:>10.2f}")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gapops")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("info", help="versions, backends and how the extension was built")
    p = sub.add_parser("demo", help="every available backend against the reference, with times")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        print("\nstudies: python -m gapops.studies --help; your embeddings: "
              "python -m gapops.metrics --help")
        return 0
    if args.cmd == "info":
        info()
        return 0
    return demo(args.n, args.d, args.device, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
