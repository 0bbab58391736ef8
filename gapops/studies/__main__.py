"""Command line: ``python -m gapops.studies list | run NAME|all [options] | report OUT``, or
``gapops-study``."""
from __future__ import annotations

import argparse
import os
import sys
import time

from .configs import STUDIES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gapops-study",
                                description="Reproduce the modality-gap studies with gapops.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the studies, one line each, with the paper each reproduces")
    rep = sub.add_parser("report", help="a Markdown results table from a folder of JSONs")
    rep.add_argument("folder", help="the --out folder of a run")
    run = sub.add_parser("run", help="run a study (or 'all')")
    run.add_argument("name", help="a study name from 'list', or 'all'")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="laptop-CPU size (~1 min a study)")
    size.add_argument("--tiny", action="store_true",
                      help="test size (seconds a study): a smoke test, not meant to reproduce "
                           "anything")
    run.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    run.add_argument("--seeds", type=int, default=5,
                     help="number of seeds (default 5; verdicts need >= 2, CIs want >= 5)")
    run.add_argument("--out", default="results/", help="output folder (default results/)")
    run.add_argument("--resume", action="store_true",
                     help="continue from the checkpoints in OUT/ckpt/ after an interrupt")
    run.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    run.add_argument("--backend", default="auto",
                     help="contrastive_loss backend: auto, cpu, reference, triton, cuda")
    run.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads (default: 1 for --quick/--tiny on the CPU, where "
                          "the ops are too small to gain from more; else torch's choice)")
    run.add_argument("--jobs", type=int, default=None,
                     help="worker processes for the (arm, seed) training runs (default: 2 for "
                          "--quick on the CPU, else 1); results equal those of --jobs 1")
    run.add_argument("--no-plot", action="store_true", help="skip the figures")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    """Entry point of ``gapops-study`` / ``python -m gapops.studies``; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        for s in STUDIES:
            print(f"{s.name:12s} {s.paper}\n{'':12s}   {s.claim}")
        return 0
    if args.command == "report":
        from .report import markdown_table
        print(markdown_table(args.folder))
        return 0
    import torch

    from .runner import TINY_NOTE, get_study, run_study, verdict_tag
    scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.device == "cpu" and scale != "full":
        torch.set_num_threads(1)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible", file=sys.stderr)
        return 2
    names = [s.name for s in STUDIES] if args.name == "all" else [args.name]
    try:
        for n in names:
            get_study(n)
    except KeyError as e:
        print(e.args[0], file=sys.stderr)
        return 2
    jobs = args.jobs or (min(2, os.cpu_count() or 1) if args.device == "cpu" and scale == "quick"
                         else 1)
    t0, verdicts = time.perf_counter(), []
    for n in names:
        r = run_study(n, scale=scale, seed=args.seed, seeds=args.seeds, out=args.out,
                      resume=args.resume, device=args.device, backend=args.backend,
                      progress=not args.no_progress, plot=not args.no_plot, jobs=jobs)
        verdicts.append((n, verdict_tag(r), r["wall_s"]))
        print()
    if len(names) > 1:
        print(f"all studies: {time.perf_counter() - t0:.1f} s")
        for n, tag, wall in verdicts:
            print(f"  {n:12s} {tag:38s} {wall:6.1f} s")
    if scale == "tiny":
        print(TINY_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
