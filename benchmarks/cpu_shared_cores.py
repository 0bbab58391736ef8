"""The `cpu` backend on cores shared with other processes, against open_clip's ClipLoss.

    python benchmarks/cpu_shared_cores.py [--busy K] [--n 4096] [--d 512] [--rounds 7]

Starts K busy-loop processes (`python -c 'while True: pass'`; default one per core), then times
one forward+backward of gapops (backend='cpu') and of open_clip's ClipLoss interleaved, round by
round, in this one process, and prints the medians and their ratio. The busy loops are killed on
exit, whatever happens. --busy 0 gives the idle figures. Any gapops tree can be measured by putting
it first on PYTHONPATH (how the pre-v2 build was compared, docs/cpu.md); open_clip's loss falls
back to its formula, 0.5 (CE(s x y^T) + CE(s y x^T)) on normalized features, when open_clip is
not installed (the output says which ran).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import gapops


def open_clip_loss():
    """(name, loss(x, y, s)) of open_clip's ClipLoss on normalized features."""
    try:
        from open_clip.loss import ClipLoss
    except ImportError:
        def formula(x, y, s):
            logits = s * x @ y.T
            labels = torch.arange(x.shape[0])
            return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        clip = ("open_clip formula (open_clip not installed)", formula)
    else:
        crit = ClipLoss()
        clip = ("open_clip.loss.ClipLoss", crit)
    name, loss = clip
    return name, lambda x, y, s: loss(F.normalize(x, dim=1), F.normalize(y, dim=1), s)


def step_time(loss_fn, x, y, s) -> float:
    xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
    t0 = time.perf_counter()
    loss_fn(xs, ys, s).backward()
    return time.perf_counter() - t0


def start_busy(k: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def stop(procs: list) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--busy", type=int, default=os.cpu_count(), help="busy-loop processes")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--no-open-clip", action="store_true", help="time gapops only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.d, generator=g)
    y = 0.5 * x + torch.randn(args.n, args.d, generator=g)
    s = torch.tensor(14.3, requires_grad=True)
    ours = lambda a, b, t: gapops.contrastive_loss(a, b, t, backend="cpu")  # noqa: E731
    clip_name, clip = open_clip_loss()
    step_time(ours, x, y, s)  # warm-up, idle
    if not args.no_open_clip:
        step_time(clip, x, y, s)
    busy = start_busy(args.busy)
    try:
        time.sleep(0.5)
        t_ours, t_clip = [], []
        for _ in range(args.rounds):
            t_ours.append(step_time(ours, x, y, s))
            if not args.no_open_clip:
                t_clip.append(step_time(clip, x, y, s))
    finally:
        stop(busy)
    med = statistics.median
    print(f"gapops {gapops.__file__}")
    print(f"N={args.n} d={args.d} fp32, {torch.get_num_threads()} threads, {args.busy} busy "
          f"loops, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f} at the end")
    print(f"  gapops cpu  median {med(t_ours):.3f} s  (all: {', '.join(f'{t:.2f}' for t in t_ours)})")
    if t_clip:
        print(f"  {clip_name}  median {med(t_clip):.3f} s  (all: {', '.join(f'{t:.2f}' for t in t_clip)})")
        ratios = [a / b for a, b in zip(t_ours, t_clip)]
        print(f"  ratio gapops / open_clip: {med(t_ours) / med(t_clip):.2f} (median of "
              f"per-round ratios {med(ratios):.2f})")


if __name__ == "__main__":
    main()
