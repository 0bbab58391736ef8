"""Spawning gloo worlds for the distributed tests: one spawn runs every scenario (starting torch
costs seconds, the scenarios milliseconds); the workers write their results to files and the test
compares them in the parent."""
import datetime
import os
import socket
import tempfile
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PG_TIMEOUT_S = 30      # a collective that waits longer raises instead of hanging
JOIN_TIMEOUT_S = 180   # the whole world is killed after this


def _worker(rank, nprocs, port, outdir, run_all, subgroup_ranks):
    """Rank of an nprocs-process gloo world: run_all(rank, W, group) on WORLD, then, when
    subgroup_ranks is given, on that subgroup (with its own ranks: group rank != rank)."""
    torch.set_num_threads(1)
    results = {}
    try:
        timeout = datetime.timedelta(seconds=PG_TIMEOUT_S)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=nprocs, timeout=timeout)
        sub = dist.new_group(list(subgroup_ranks), timeout=timeout) if subgroup_ranks else None
        results[nprocs] = run_all(rank, nprocs, dist.group.WORLD)
        if sub is not None and rank in subgroup_ranks:
            results[len(subgroup_ranks)] = run_all(dist.get_rank(sub), len(subgroup_ranks), sub)
    except BaseException:  # noqa: BLE001 - reported by the parent
        results["__error__"] = traceback.format_exc()
    torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_worlds(run_all, nprocs, subgroup_ranks=()):
    """Spawns the gloo world; returns {W: [results of group rank 0, 1, ...]} for W = nprocs and,
    with subgroup_ranks, W = len(subgroup_ranks). run_all must be a module-level function."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as outdir:
        port = _free_port()
        procs = [ctx.Process(target=_worker, daemon=True,
                             args=(r, nprocs, port, outdir, run_all, tuple(subgroup_ranks)))
                 for r in range(nprocs)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        if hung:
            pytest.fail(f"ranks {hung} still running after {JOIN_TIMEOUT_S}s")
        results = []
        for r in range(nprocs):
            path = os.path.join(outdir, f"rank{r}.pt")
            if not os.path.exists(path):
                pytest.fail(f"rank {r} exited with code {procs[r].exitcode} and no results")
            results.append(torch.load(path, weights_only=False))
    for r, res in enumerate(results):
        if "__error__" in res:
            pytest.fail(f"rank {r} failed:\n{res['__error__']}")
    worlds = {nprocs: [res[nprocs] for res in results]}
    if subgroup_ranks:
        worlds[len(subgroup_ranks)] = [results[r][len(subgroup_ranks)] for r in subgroup_ranks]
    return worlds
