"""Distributed contrastive loss: gapops' strip scheme against open_clip's gather-everything scheme.

    python benchmarks/bench_distributed.py                       # CPU, gloo, W = 2 and 4
    python benchmarks/bench_distributed.py --world 2 4 --n 4096 16384 --d 256 --steps 5
    python benchmarks/bench_distributed.py --device cuda --world 2 4 8   # NCCL, one GPU per rank

Both schemes compute the loss of the global batch N = W * n_local from each rank's local pairs
and run one forward + backward per step, to the features and to logit_scale:

  gapops     gapops.contrastive_loss(img, txt, s, group=...): all_gather the text features,
             one n x N strip per rank, 2 all_reduces of N floats for the column LSEs, all_gather of
             the N upstream gradients, reduce_scatter of the partial d text.
  open_clip  ClipLoss(local_loss=True, gather_with_grad=True) on normalized features, written out:
             all_gather with grad of BOTH towers, n x N logits in each direction, two
             cross-entropies; backward reduce-scatters both gathered gradients (the NCCL path of
             torch.distributed.nn.all_gather; its gloo path, all_to_all, moves the same bytes).

Reported per (scheme, W): communication per rank and step, counted from the sizes of the tensors
handed to every collective (a wrapper tallies them) and converted to bytes each rank sends under
bandwidth-optimal ring algorithms (all_gather / reduce_scatter of S bytes in all: S (W-1)/W;
all_reduce: 2 S (W-1)/W); the median time per step (slowest rank); and peak memory per rank:
on CPU the peak RSS (ru_maxrss) above the RSS once the inputs exist, on CUDA
torch.cuda.max_memory_allocated above the inputs. Every scheme runs in fresh processes, so the
peaks do not mix. Each rank gets max(1, cores // W) threads.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

LOGIT_SCALE = 14.285714


# ---------------------------------------------------------------------------------------------
# communication tally

class CommTally:
    """Wraps the torch.distributed collectives; counts bytes each rank sends (ring algorithms)."""

    def __init__(self):
        self.sent = 0.0
        self.calls = {}
        self._orig = {}

    def _add(self, op, total_bytes, factor, group):
        w = dist.get_world_size(group)
        self.sent += factor * total_bytes * (w - 1) / w
        self.calls[op] = self.calls.get(op, 0) + 1

    def install(self):
        def wrap(name, nbytes_of, factor):
            orig = getattr(dist, name, None)
            if orig is None:
                return
            self._orig[name] = orig

            def fn(*args, **kw):
                group = kw.get("group")
                self._add(name, nbytes_of(*args, **kw), factor, group)
                return orig(*args, **kw)
            setattr(dist, name, fn)

        out_bytes = lambda out, *a, **k: out.numel() * out.element_size()  # noqa: E731
        in_bytes = lambda out, inp, *a, **k: inp.numel() * inp.element_size()  # noqa: E731
        for name in ("all_gather_single", "all_gather_into_tensor"):
            wrap(name, out_bytes, 1)
        for name in ("reduce_scatter_single", "reduce_scatter_tensor"):
            wrap(name, in_bytes, 1)
        wrap("all_reduce", lambda t, *a, **k: t.numel() * t.element_size(), 2)
        wrap("all_gather", lambda outs, *a, **k: sum(o.numel() * o.element_size() for o in outs), 1)

    def reset(self):
        self.sent, self.calls = 0.0, {}


# ---------------------------------------------------------------------------------------------
# the two schemes

def _ag(out, inp, group):
    (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(out, inp, group=group)


def _rs(out, inp, group):
    (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(out, inp,
                                                                                 group=group)


class AllGatherWithGrad(torch.autograd.Function):
    """torch.distributed.nn.all_gather (open_clip's gather_with_grad): all_gather forward,
    SUM-reduce-scatter backward."""

    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        out = t.new_empty((dist.get_world_size(group) * t.shape[0], *t.shape[1:]))
        _ag(out, t.contiguous(), group)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = grad.new_empty((grad.shape[0] // dist.get_world_size(ctx.group), *grad.shape[1:]))
        _rs(out, grad.contiguous(), ctx.group)
        return out, None


def open_clip_loss(img, txt, scale, rank, group):
    img, txt = F.normalize(img, dim=1), F.normalize(txt, dim=1)
    all_img = AllGatherWithGrad.apply(img, group)
    all_txt = AllGatherWithGrad.apply(txt, group)
    logits_per_image = scale * img @ all_txt.T
    logits_per_text = scale * txt @ all_img.T
    n = img.shape[0]
    labels = torch.arange(n, device=img.device) + n * rank
    return (F.cross_entropy(logits_per_image, labels)
            + F.cross_entropy(logits_per_text, labels)) / 2


def gapops_loss(img, txt, scale, rank, group, backend):
    import gapops
    return gapops.contrastive_loss(img, txt, scale, backend=backend, group=group)


# ---------------------------------------------------------------------------------------------
# worker

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _worker(rank, world, port, outdir, cfg):
    try:
        threads = max(1, (os.cpu_count() or 1) // world)
        torch.set_num_threads(threads)
        device = torch.device(cfg["device"], rank) if cfg["device"] == "cuda" \
            else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=datetime.timedelta(seconds=600))
        import gapops  # noqa: F401  (load the extension before measuring)
        group = dist.group.WORLD
        n, d = cfg["n"] // world, cfg["d"]
        dtype = getattr(torch, cfg["dtype"])
        g = torch.Generator().manual_seed(rank)
        img = torch.randn(n, d, generator=g).to(device, dtype).requires_grad_()
        txt = torch.randn(n, d, generator=g).to(device, dtype).requires_grad_()
        scale = torch.tensor(LOGIT_SCALE, device=device, requires_grad=True)
        if cfg["scheme"] == "gapops":
            fn = lambda: gapops_loss(img, txt, scale, rank, group, cfg["backend"])  # noqa: E731
        else:
            fn = lambda: open_clip_loss(img, txt, scale, rank, group)  # noqa: E731
        tally = CommTally()
        tally.install()
        sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss_bytes()
        times = []
        for step in range(cfg["steps"] + 1):  # the first one warms up
            tally.reset()
            dist.barrier()
            sync()
            t0 = time.perf_counter()
            loss = fn()
            loss.backward()
            sync()
            times.append(time.perf_counter() - t0)
            img.grad = txt.grad = scale.grad = None
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        res = {"times": times[1:], "sent": tally.sent, "calls": tally.calls, "peak": peak,
               "threads": threads}
    except BaseException:  # noqa: BLE001
        res = {"error": traceback.format_exc()}
    torch.save(res, os.path.join(outdir, f"rank{rank}.pt"))
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cfg, world, timeout=900):
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as outdir:
        port = _free_port()
        procs = [ctx.Process(target=_worker, args=(r, world, port, outdir, cfg), daemon=True)
                 for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        res = []
        for r in range(world):
            path = os.path.join(outdir, f"rank{r}.pt")
            res.append(torch.load(path) if os.path.exists(path) else {"error": "no result"})
    errors = [r.get("error") for r in res if "error" in r]
    if errors:
        return {"error": errors[0]}
    step_times = [max(r["times"][i] for r in res) for i in range(len(res[0]["times"]))]
    return {"time_s": statistics.median(step_times), "sent_bytes": max(r["sent"] for r in res),
            "peak_bytes": max(r["peak"] for r in res), "calls": res[0]["calls"],
            "threads": res[0]["threads"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--n", type=int, nargs="+", default=[4096], help="global batch sizes")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--backend", default="auto", help="gapops backend")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    rows = []
    print(f"device={args.device} d={args.d} dtype={args.dtype} steps={args.steps} "
          f"cores={os.cpu_count()}")
    print("| W | N | scheme | sent / rank / step | time / step | peak mem / rank |")
    print("|---|---|---|---|---|---|")
    for world in args.world:
        for n in args.n:
            for scheme in ("gapops", "open_clip"):
                cfg = {"scheme": scheme, "n": n, "d": args.d, "dtype": args.dtype,
                       "device": args.device, "backend": args.backend, "steps": args.steps}
                r = run(cfg, world)
                rows.append({"world": world, **cfg, **r})
                if "error" in r:
                    print(f"| {world} | {n} | {scheme} | error: "
                          f"{r['error'].strip().splitlines()[-1]} | | |", flush=True)
                    continue
                print(f"| {world} | {n} | {scheme} | {r['sent_bytes'] / 2**20:.2f} MiB | "
                      f"{r['time_s'] * 1e3:.0f} ms | {r['peak_bytes'] / 2**20:.0f} MiB |",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
    main()
