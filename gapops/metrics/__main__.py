"""``python -m gapops.metrics EMB.npy [TXT.npy]``: the gap metrics of your own model's embeddings.

Input: one [2, N, d] array (image embeddings, then the paired text embeddings) or two [N, d]
arrays, as ``.npy`` or ``.pt`` (a saved tensor). Prints :func:`gapops.metrics.summary` as a
table (``--json``: JSON), ``--csv FILE`` also writes it as CSV, and ``--shift`` adds Liang et
al.'s embedding-shift landscape at each ``--tau`` (and its plot with ``--plot FILE``, which
needs matplotlib). ``--ids FILE`` (an integer [N] array) marks pairs that are the same thing
(duplicates, several captions of one image): retrieval then counts any of them as a hit.

    python -m gapops.metrics features.npy --json
    python -m gapops.metrics img.pt txt.pt --shift --plot shift.png
    python -m gapops.metrics img.npy captions.npy --ids image_ids.npy

Input that cannot be used (unreadable, empty, NaN or inf rows, shapes that do not fit) ends in
one ``error: FILE: ...`` line on stderr and exit code 2, not a traceback.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from . import noise_condition_number, summary
from .shift import argmin_lambda, shift_landscape

TAUS = (0.01, 0.02, 0.05, 0.1, 1.0)
# The caveat shows while N < NOISE_RATIO * d: there isotropic noise alone has a centered
# condition number above about 3 (Marchenko–Pastur, noise_condition_number), so a measured one
# says little about the embeddings.
NOISE_RATIO = 4


def _read(path: Path):
    """The array or tensor stored at ``path`` (.npy, .pt, .pth), or ValueError naming the file."""
    if path.suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except ValueError as e:
            # numpy falls back to unpickling what is not .npy and then advises allow_pickle=,
            # an option this command does not have (and should not: pickles run code)
            why = ("not in .npy format, or it holds Python objects" if "pickle" in str(e)
                   else str(e))
            raise ValueError(f"{path}: numpy cannot read it as a .npy array ({why})") from None
        except EOFError:
            raise ValueError(f"{path}: numpy cannot read it as a .npy array (truncated)") from None
        if not isinstance(a, np.ndarray):  # an .npz archive renamed .npy
            raise ValueError(f"{path}: holds an archive of arrays, not one array (.npz?)")
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{path}: holds {a.dtype} data, not numbers")
        return torch.from_numpy(a)
    if path.suffix in (".pt", ".pth"):
        try:
            t = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # torch's message advises weights_only=False (arbitrary code), not an option here
            raise ValueError(f"{path}: torch.load cannot read it as a saved tensor (not a "
                             f"torch.save file, or it holds Python objects)") from None
        except (RuntimeError, EOFError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{path}: torch.load cannot read it as a saved tensor ({first})") \
                from None
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{path}: expected a saved tensor, got {type(t).__name__}")
        if t.is_complex():
            raise ValueError(f"{path}: holds {t.dtype} data, not real numbers")
        return t.detach()
    raise ValueError(f"{path}: unsupported file type {path.suffix!r} (use .npy or .pt)")


def load_array(path) -> torch.Tensor:
    """A ``.npy`` array or a ``.pt`` tensor at ``path`` -> float32 tensor (shape kept)."""
    return _read(Path(path)).float()


def check_embeddings(emb: torch.Tensor, where: str) -> None:
    """ValueError naming ``where`` unless ``emb`` is [N, d] with N >= 2, d >= 1, all finite."""
    shape = tuple(emb.shape)
    if emb.shape[0] == 0:
        raise ValueError(f"{where}: no rows (shape {shape}): there are no pairs to measure")
    if emb.shape[1] == 0:
        raise ValueError(f"{where}: zero columns (shape {shape}): embeddings need d >= 1")
    if emb.shape[0] < 2:
        raise ValueError(f"{where}: one row (shape {shape}): the metrics need at least 2 pairs")
    bad = (~torch.isfinite(emb)).any(1).nonzero().flatten().tolist()
    if bad:
        rows = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        raise ValueError(f"{where}: {len(bad)} of {shape[0]} rows hold NaN or inf (rows {rows}); "
                         f"drop those pairs or fix them")


def load_pair(paths) -> tuple[torch.Tensor, torch.Tensor]:
    """One path to a [2, N, d] array, or two paths to [N, d] arrays -> (image [N, d], text [N, d]).

    ValueError naming the file when a file is unreadable, empty, holds NaN/inf rows or the shapes
    do not fit.
    """
    if len(paths) == 1:
        a = load_array(paths[0])
        if a.dim() != 3 or a.shape[0] != 2:
            raise ValueError(f"{paths[0]}: one file must hold a [2, N, d] array (image, text); "
                             f"got shape {tuple(a.shape)}")
        check_embeddings(a[0], f"{paths[0]} (image embeddings, [0])")
        check_embeddings(a[1], f"{paths[0]} (text embeddings, [1])")
        return a[0], a[1]
    if len(paths) == 2:
        x, y = load_array(paths[0]), load_array(paths[1])
        for path, t in zip(paths, (x, y)):
            if t.dim() != 2:
                raise ValueError(f"{path}: must hold an [N, d] array; got shape {tuple(t.shape)}")
            check_embeddings(t, str(path))
        if x.shape != y.shape:
            raise ValueError(f"two files must hold [N, d] arrays of one shape; got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        return x, y
    raise ValueError("give one [2, N, d] file or two [N, d] files")


def load_ids(path, n: int) -> torch.Tensor:
    """The pair IDs at ``path`` (.npy or .pt integer array [n]) -> int64 [n], or ValueError."""
    t = _read(Path(path))
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"{path}: IDs must be integers, got {t.dtype} "
                         f"(save them with .astype(np.int64))")
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{path}: must hold one ID per pair, shape [{n}]; got {tuple(t.shape)}")
    return t.long()


def condition_caveat(n: int, d: int) -> str | None:
    """The caveat the table prints about cond_* for N pairs of width d, None when N >= 4d."""
    if n <= d:
        return (f"cond_*: infinite whatever the embeddings: centered, N = {n} rows span at most "
                f"N - 1 of the d = {d} directions; it needs N > d, better N >= {NOISE_RATIO}d")
    if n < NOISE_RATIO * d:
        floor = noise_condition_number(n, d)
        has = (f"a condition number near {floor:.1f}" if math.isfinite(floor)
               else "a very large condition number")  # N = d + 1: the limit is unbounded
        return (f"cond_*: inflated whatever the embeddings: isotropic noise of this shape (N = "
                f"{n}, d = {d}) already has {has} (Marchenko-Pastur); compare it only at "
                f"N >= {NOISE_RATIO}d")
    return None


def _plain(v):
    """A metric as JSON, the table and the CSV all show it: non-finite floats are None (null)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def format_table(metrics: dict) -> str:
    """The summary dictionary as aligned ``name  value`` lines, with the condition-number caveat.

    Non-finite values print as ``null``, as in the JSON (an infinite condition number is a
    rank-deficient matrix: the caveat says when that is the shape's doing).
    """
    width = max(len(k) for k in metrics)
    lines = []
    for k, v in metrics.items():
        v = _plain(v)
        if v is None:
            v = "null"
        elif isinstance(v, float):
            v = f"{v:.0f}" if k in ("n", "d") else f"{v:.4f}"
        lines.append(f"{k.ljust(width)}  {v}")
    caveat = condition_caveat(int(metrics["n"]), int(metrics["d"])) if "n" in metrics else None
    if caveat:
        lines.append(caveat)
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
    p.add_argument("--ids", metavar="FILE",
                   help="pair IDs, an integer [N] array (.npy or .pt): pairs with one ID are the "
                        "same thing (duplicates, several captions per image) and retrieval "
                        "counts any of them as a hit")
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit code (2 on unreadable or unusable input)."""
    args = _parser().parse_args(argv)
    try:
        x, y = load_pair(args.files)
        ids = None if args.ids is None else load_ids(args.ids, x.shape[0])
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = summary(x, y, probe=not args.no_probe, ids=ids)
    plain = {k: _plain(v) for k, v in result.items()}
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "value"])
            w.writerows((k, "null" if v is None else v) for k, v in plain.items())
    shift = shift_report(x, y, args.tau, args.batch_size) if args.shift else None
    if shift and args.plot:
        plot_shift(shift, args.plot)
    if args.json:
        if shift:
            plain["shift"] = shift
        print(json.dumps(plain, indent=1))
    else:
        print(format_table(result))
        for name, r in (shift or {}).items():
            print(f"shift {name:10s} argmin λ = {r['argmin_lambda']:+.2f}   loss(0) = "
                  f"{r['loss_at_0']:.3f}   loss(1) = {r['loss_at_1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
