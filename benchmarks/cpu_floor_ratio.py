"""The `cpu` backend's forward+backward time over its product floor, measured interleaved.

    python benchmarks/cpu_floor_ratio.py [--n 8192] [--d 512] [--rounds 5] [--deterministic]
    python benchmarks/cpu_floor_ratio.py --loss sigmoid [--peer]

Each round times one sgemm of the loss's shape (x @ y.T: N x N x d, torch.mm with all threads) and
one forward+backward through the public API (backend='cpu'), back to back in this process, so
that both see the same machine state. Softmax (gapops.contrastive_loss): step / (4 x sgemm), a
fused forward+backward cannot do fewer than four such products (docs/design.md section 4).
Sigmoid (gapops.sigmoid_loss, open_clip's initialization s = 10, b = -10): step / (3 x sgemm),
the forward-with-gradients of section 2.6, and the forward under torch.no_grad() / (1 x sgemm);
with --peer also open_clip's SigLipLoss forward+backward in the same rounds.
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
    ap.add_argument("--loss", choices=("softmax", "sigmoid"), default="softmax")
    ap.add_argument("--peer", action="store_true", help="sigmoid: time open_clip's SigLipLoss too")
    args = ap.parse_args()
    if args.loss == "sigmoid":
        sigmoid_main(args)
        return
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


def sigmoid_main(args) -> None:
    from cpu_cases import make_sigmoid_inputs, sigmoid_contestants
    x, y, s, b = make_sigmoid_inputs(args.n, args.d)

    def step():
        xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
        gapops.sigmoid_loss(xs, ys, s, b, backend="cpu",
                            deterministic=args.deterministic).backward()

    def no_grad_forward():
        with torch.no_grad():
            gapops.sigmoid_loss(x, y, s, b, backend="cpu")

    runs = {"sgemm": lambda: torch.mm(x, y.T), "step": step, "no_grad": no_grad_forward}
    peer = sigmoid_contestants()["sigmoid_open_clip"] if args.peer else None
    if peer is not None:
        runs["open_clip"] = lambda: peer(x, y, s, b)
    for fn in runs.values():  # warm-up
        fn()
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, fn in runs.items():
            times[k].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"sigmoid N={args.n} d={args.d} fp32, {torch.get_num_threads()} threads, "
          f"deterministic={args.deterministic}, load avg {os.getloadavg()} at the end")
    for k, v in times.items():
        print(f"  {k}: median {1e3 * med[k]:.1f} ms (all: {', '.join(f'{1e3 * t:.0f}' for t in v)})")
    print(f"  step / (3 x sgemm) = {med['step'] / (3 * med['sgemm']):.3f}")
    print(f"  no_grad forward / sgemm = {med['no_grad'] / med['sgemm']:.3f}")
    if "open_clip" in med:
        print(f"  step / open_clip SigLipLoss = {med['step'] / med['open_clip']:.3f}")


if __name__ == "__main__":
    main()
