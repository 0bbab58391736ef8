"""Paired differences between arms over seeds, with a 95% confidence interval (Student t).

A study's verdict compares arms trained with the same seeds (same data, same init): the
per-seed difference removes what the seed shares, and its t interval says whether the mean
difference is told apart from zero. "Reproduced" needs the interval to exclude zero in the
paper's direction.

Every comparison has one of three outcomes: 'reproduced' (the interval excludes zero, or the
bound, in the paper's direction), 'contradicted' (it excludes it the other way) or
'inconclusive' (it includes it). An inconclusive comparison reports ``detectable``: the
half-width of its 95% interval, the smallest effect this run could have told apart from zero,
to set beside the effect the paper reports (``paper``, when given).
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


def _outcome(lo, hi, bound: float, direction: str) -> str:
    if lo is None:
        return "inconclusive"
    above, below = lo > bound, hi < bound
    if direction == ">":
        return "reproduced" if above else "contradicted" if below else "inconclusive"
    return "reproduced" if below else "contradicted" if above else "inconclusive"


def _finish(what: str, direction: str, ci: dict, values: list, bound: float, paper,
            unit: str) -> dict:
    outcome = _outcome(ci["lo"], ci["hi"], bound, direction[0])
    half = None if ci["lo"] is None else 0.5 * (ci["hi"] - ci["lo"])
    out = {"what": what, "direction": direction, **ci, "diffs": values,
           "holds": outcome == "reproduced", "outcome": outcome, "detectable": half,
           "unit": unit}
    if paper is not None:
        out["paper"] = float(paper)
    return out


def paired(what: str, a, b, direction: str = ">", paper=None, unit: str = "seed") -> dict:
    """The paired difference a_i − b_i over replicates with its 95% CI and its outcome
    ('>': the paper says a > b, '<': a < b). ``paper``: the difference the paper reports (for
    the record and for the detectable-effect comparison); ``unit``: what one replicate is.

    Returns {"what", "direction", "mean", "lo", "hi", "sd", "n", "diffs", "holds", "outcome",
    "detectable", "unit"[, "paper"]}.
    """
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} vs {len(b)} values are not paired")
    if direction not in (">", "<"):
        raise ValueError("direction must be '>' or '<'")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    return _finish(what, direction, mean_ci(diffs), diffs, 0.0, paper, unit)


def at_least(what: str, values, bound: float, paper=None, unit: str = "seed") -> dict:
    """Whether the 95% interval of the mean of ``values`` lies above ``bound`` (one sample):
    'reproduced' above it, 'contradicted' below it, else 'inconclusive'."""
    return _finish(what, f"> {bound:g}", mean_ci(values), [float(v) for v in values], bound,
                   paper, unit)


def slope(xs, ys) -> float:
    """Least-squares slope of ys against xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def line_fit(xs, ys) -> dict:
    """{"slope", "intercept", "r2"} of the least-squares line through (xs, ys)."""
    b = slope(xs, ys)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    return {"slope": b, "intercept": a, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def overall(comps: list) -> str:
    """A study's outcome from the comparisons it requires: 'reproduced' when all are,
    'contradicted' when any is, else 'inconclusive'."""
    kinds = [c["outcome"] for c in comps]
    if kinds and all(k == "reproduced" for k in kinds):
        return "reproduced"
    return "contradicted" if "contradicted" in kinds else "inconclusive"


_MARK = {"reproduced": "✓", "contradicted": "✗", "inconclusive": "?"}


def mark(c: dict) -> str:
    """✓ reproduced, ✗ contradicted, ? inconclusive."""
    return _MARK[c.get("outcome", "reproduced" if c["holds"] else "contradicted")]


def describe(c: dict) -> str:
    """'what: +0.123 [+0.045, +0.201]' (the CI in brackets; 'no CI' with one replicate); an
    inconclusive comparison adds the smallest detectable effect (and the paper's effect)."""
    if c["lo"] is None:
        return f"{c['what']}: {c['mean']:+.3f} (no CI: 1 {c.get('unit', 'seed')})"
    text = f"{c['what']}: {c['mean']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"
    if c.get("outcome") == "inconclusive":
        text += f" (inconclusive: detectable ±{c['detectable']:.3f}"
        if c.get("paper") is not None:
            text += f", paper {c['paper']:+.3f}"
        text += ")"
    elif c.get("paper") is not None:
        text += f" (paper {c['paper']:+.3f})"
    if c.get("unit", "seed") != "seed":
        text += f" (n = {c['n']}, each a {c['unit']})"
    return text
