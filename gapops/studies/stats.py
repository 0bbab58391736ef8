"""Paired differences between arms over seeds, with a 95% confidence interval (Student t).

A study's verdict compares arms trained with the same seeds (same data, same init): the
per-seed difference removes what the seed shares, and its t interval says whether the mean
difference is told apart from zero. "Reproduced" needs the interval to exclude zero in the
paper's direction.
"""
from __future__ import annotations

import math
import statistics

# two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30 (beyond: the normal 1.96)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (df ≥ 1)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 samples")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values) -> dict:
    """{"mean", "lo", "hi", "sd", "n"}: the 95% t interval of the mean of ``values`` (floats);
    lo/hi are None with fewer than 2 values (no interval)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise ValueError("no values")
    m = statistics.fmean(vals)
    if n < 2:
        return {"mean": m, "lo": None, "hi": None, "sd": None, "n": n}
    sd = statistics.stdev(vals)
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"mean": m, "lo": m - half, "hi": m + half, "sd": sd, "n": n}


def paired(what: str, a, b, direction: str = ">") -> dict:
    """The paired difference a_i − b_i over seeds with its 95% CI, and whether the interval
    excludes zero in ``direction`` ('>': a > b, '<': a < b).

    Returns {"what", "direction", "mean", "lo", "hi", "sd", "n", "diffs", "holds"}.
    """
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} vs {len(b)} values are not paired")
    if direction not in (">", "<"):
        raise ValueError("direction must be '>' or '<'")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    ci = mean_ci(diffs)
    holds = ci["lo"] is not None and (ci["lo"] > 0 if direction == ">" else ci["hi"] < 0)
    return {"what": what, "direction": direction, **ci, "diffs": diffs, "holds": bool(holds)}


def at_least(what: str, values, bound: float) -> dict:
    """Whether the 95% interval of the mean of ``values`` lies above ``bound`` (one sample)."""
    ci = mean_ci(values)
    holds = ci["lo"] is not None and ci["lo"] > bound
    return {"what": what, "direction": f"> {bound:g}", **ci, "diffs": [float(v) for v in values],
            "holds": bool(holds)}


def describe(c: dict) -> str:
    """'what: +0.123 [+0.045, +0.201]' (the CI in brackets; 'no CI' with one seed)."""
    if c["lo"] is None:
        return f"{c['what']}: {c['mean']:+.3f} (no CI: 1 seed)"
    return f"{c['what']}: {c['mean']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"
