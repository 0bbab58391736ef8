"""``python -m gapops.metrics EMB.npy [TXT.npy]``: the gap metrics of your own model's embeddings.

Input: one [2, N, d] array (image embeddings, then the paired text embeddings) or two [N, d]
arrays, as ``.npy`` or ``.pt`` (a saved tensor). Prints :func:`gapops.metrics.summary` as a
table (``--json``: JSON), ``--csv FILE`` also writes it as CSV, and ``--shift`` adds Liang et
al.'s embedding-shift landscape at each ``--tau`` (and its plot with ``--plot FILE``, which
needs matplotlib).

    python -m gapops.metrics features.npy --json
    python -m gapops.metrics img.pt txt.pt --shift --plot shift.png
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from . import summary
from .shift import argmin_lambda, shift_landscape

TAUS = (0.01, 0.02, 0.05, 0.1, 1.0)
CAVEAT = ("cond_*: centered condition number; with N close to d (n_over_d {:.1f}) it is inflated "
          "whatever the embeddings: compare it only at N >> d")


def load_array(path) -> torch.Tensor:
    """A ``.npy`` array or a ``.pt`` tensor at ``path`` -> float32 tensor (shape kept)."""
    path = Path(path)
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False)).float()
    if path.suffix in (".pt", ".pth"):
        t = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{path}: expected a saved tensor, got {type(t).__name__}")
        return t.detach().float()
    raise ValueError(f"{path}: unsupported file type {path.suffix!r} (use .npy or .pt)")


def load_pair(paths) -> tuple[torch.Tensor, torch.Tensor]:
    """One path to a [2, N, d] array, or two paths to [N, d] arrays -> (image [N, d], text [N, d])."""
    if len(paths) == 1:
        a = load_array(paths[0])
        if a.dim() != 3 or a.shape[0] != 2:
            raise ValueError(f"{paths[0]}: one file must hold a [2, N, d] array (image, text); "
                             f"got shape {tuple(a.shape)}")
        return a[0], a[1]
    if len(paths) == 2:
        x, y = load_array(paths[0]), load_array(paths[1])
        if x.dim() != 2 or x.shape != y.shape:
            raise ValueError(f"two files must hold [N, d] arrays of one shape; got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        return x, y
    raise ValueError("give one [2, N, d] file or two [N, d] files")


def format_table(metrics: dict) -> str:
    """The summary dictionary as aligned ``name  value`` lines, with the condition-number caveat."""
    width = max(len(k) for k in metrics)
    lines = []
    for k, v in metrics.items():
        if isinstance(v, float):
            v = "inf" if math.isinf(v) else (f"{v:.0f}" if k in ("n", "d") else f"{v:.4f}")
        lines.append(f"{k.ljust(width)}  {v}")
    if "n_over_d" in metrics:
        lines.append(CAVEAT.format(metrics["n_over_d"]))
    return "\n".join(lines)


def shift_report(x, y, taus, batch_size: int) -> dict:
    """{"tau=...": {"argmin_lambda", "loss_at_0", "loss_at_1", "landscape": [{lambda, loss}]}}."""
    out = {}
    for tau in taus:
        land = shift_landscape(x, y, tau, batch_size=batch_size)
        at = {p["lambda"]: p["loss"] for p in land}
        out[f"tau={tau:g}"] = {"tau": tau, "argmin_lambda": argmin_lambda(land),
                               "loss_at_0": at[0.0], "loss_at_1": at[1.0],
                               "landscape": [{"lambda": p["lambda"], "loss": p["loss"]}
                                             for p in land]}
    return out


def plot_shift(report: dict, path) -> bool:
    """loss(λ) − loss(0) per τ, the minimum of each marked; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot written; pip install matplotlib)",
              file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for name, r in report.items():
        lam = [p["lambda"] for p in r["landscape"]]
        rel = [p["loss"] - r["loss_at_0"] for p in r["landscape"]]
        line, = ax.plot(lam, rel, label=f"{name}: min at λ={r['argmin_lambda']:g}")
        best = lam.index(r["argmin_lambda"])
        ax.plot(lam[best], rel[best], "o", color=line.get_color())
    ax.axvline(0, color="gray", lw=0.6)
    ax.axvline(1, color="gray", lw=0.6, ls="--")
    ax.set_xlabel("shift λ (0: as embedded, 1: centroids matched)")
    ax.set_ylabel("loss(λ) − loss(0)")
    ax.set_ylim(-1.0, 3.0)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gapops.metrics",
                                description="Modality-gap metrics of paired embeddings.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="one [2, N, d] array, or image [N, d] and text [N, d] (.npy or .pt)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", metavar="FILE", help="also write the metrics as CSV (name,value)")
    p.add_argument("--shift", action="store_true",
                   help="add the embedding-shift landscape (Liang et al. section 4.2)")
    p.add_argument("--tau", type=float, nargs="+", default=list(TAUS),
                   help=f"temperatures for --shift (default {' '.join(map(str, TAUS))})")
    p.add_argument("--batch-size", type=int, default=50, help="pairs per batch for --shift (50)")
    p.add_argument("--plot", metavar="FILE", help="write the shift plot (PNG) here (with --shift)")
    p.add_argument("--no-probe", action="store_true", help="skip the separability probe")
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit code (2 on unreadable input)."""
    args = _parser().parse_args(argv)
    try:
        x, y = load_pair(args.files)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = summary(x, y, probe=not args.no_probe)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "value"])
            w.writerows(result.items())
    shift = shift_report(x, y, args.tau, args.batch_size) if args.shift else None
    if shift and args.plot:
        plot_shift(shift, args.plot)
    if args.json:
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                 for k, v in result.items()}
        if shift:
            clean["shift"] = shift
        print(json.dumps(clean, indent=1))
    else:
        print(format_table(result))
        for name, r in (shift or {}).items():
            print(f"shift {name:10s} argmin λ = {r['argmin_lambda']:+.2f}   loss(0) = "
                  f"{r['loss_at_0']:.3f}   loss(1) = {r['loss_at_1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
