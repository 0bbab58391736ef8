"""A Markdown results table from a folder of study JSONs: ``python -m gapops.studies report OUT``."""
from __future__ import annotations

import json
from pathlib import Path

from . import stats
from .configs import STUDIES
from .runner import verdict_tag


def _measured(result: dict, metric: str) -> str:
    cells = []
    for a in result["arms"]:
        m, s = a["final"].get(metric), a["final_std"].get(metric)
        if m is not None:
            cells.append(f"{a['name']} {m:.3f}" + (f" ± {s:.3f}" if s else ""))
    return f"{metric}: " + ", ".join(cells)


def markdown_table(folder) -> str:
    """One row per study JSON found in ``folder`` (in the studies' order): the measured values
    (mean ± std over seeds), every paired comparison with its 95% CI, and the verdict."""
    rows = ["| study | paper | measured (mean ± std over seeds) | paired differences, 95% CI "
            "| verdict |", "| --- | --- | --- | --- | --- |"]
    for study in STUDIES:
        path = Path(folder) / f"{study.name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        comps = "<br>".join(stats.mark(c) + " " + stats.describe(c)
                            for c in r["comparisons"]) or r["verdict"]
        paper = study.paper.split(",")[0]
        slopes = [abs(a["final"]["gap_slope"]) for a in r["arms"]  # (a slope needs 3 epochs)
                  if a["final"].get("gap_slope") is not None and len(a["history"]) >= 3]
        settled = f"; gap slope ≤ {max(slopes):.4f}/epoch" if slopes else ""
        rows.append(f"| `{study.name}` | {paper} | {_measured(r, study.bars[0])} | {comps} | "
                    f"{verdict_tag(r)} ({len(r['seeds'])} {r.get('unit', 'seed')}s, {r['wall_s']:.0f} s"
                    f"{settled}) |")
    return "\n".join(rows)
