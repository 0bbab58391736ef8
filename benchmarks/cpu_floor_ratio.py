"""The `cpu` backend's forward+backward time over the four-product floor, measured interleaved.

    python benchmarks/cpu_floor_ratio.py [--n 8192] [--d 512] [--rounds 5] [--deterministic]

Each round times one sgemm of the loss's shape (x @ y.T: N x N x d, torch.mm with all threads) and
one forward+backward of gapops.contrastive_loss(backend='cpu'), back to back in this process, so
that both see the same machine state. Prints the medians and step / (4 x sgemm): a fused
forward+backward cannot do fewer than four such products (docs/design.md section 4).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import gapops


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--deterministic", action="store_true")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.d, generator=g)
    y = 0.5 * x + torch.randn(args.n, args.d, generator=g)
    s = torch.tensor(14.3, requires_grad=True)

    def step():
        xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
        gapops.contrastive_loss(xs, ys, s, backend="cpu",
                                deterministic=args.deterministic).backward()

    def product():
        torch.mm(x, y.T)

    step(), product()  # warm-up
    t_mm, t_step = [], []
    for _ in range(args.rounds):
        t_mm.append(timed(product))
        t_step.append(timed(step))
    mm, st = statistics.median(t_mm), statistics.median(t_step)
    print(f"N={args.n} d={args.d} fp32, {torch.get_num_threads()} threads, "
          f"deterministic={args.deterministic}, load avg {os.getloadavg()[0]:.1f} at the end")
    print(f"  one sgemm N x N x d: median {1e3 * mm:.1f} ms ({2 * args.n**2 * args.d / mm / 1e9:.0f} GFLOP/s)")
    print(f"  gapops forward+backward: median {1e3 * st:.1f} ms  "
          f"(all: {', '.join(f'{1e3 * t:.0f}' for t in t_step)})")
    print(f"  step / (4 x sgemm) = {st / (4 * mm):.3f}")


if __name__ == "__main__":
    main()
