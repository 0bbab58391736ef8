"""Copies the backend='auto' rows a GPU check measured into gapops/_auto_table.py.

    python3 benchmarks/update_auto_table.py gpu_check.json [--table gapops/_auto_table.py]

Reads the "auto_table" rows of gpu_report.py's JSON and rewrites the MEASURED list between the
markers of the table module: a new row replaces the row of the same (loss, dtype, n, d, device),
the others stay. Refuses a dry run's rows (measured on a CPU). Review the diff and commit it with
the report in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pprint
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "# BEGIN MEASURED", "# END MEASURED"


def merged(old, new):
    key = lambda r: (r["loss"], r["dtype"], r["n"], r["d"], r.get("device"))  # noqa: E731
    out = {key(r): r for r in old}
    out.update({key(r): r for r in new})
    return sorted(out.values(), key=lambda r: (r["loss"], r["dtype"], r["n"], r["d"],
                                              r.get("device", "")))


def rewrite(text, rows):
    """The module's text with MEASURED set to ``rows`` (between the markers)."""
    pat = re.compile(rf"({re.escape(BEGIN)}[^\n]*\n)(.*?)(\n{re.escape(END)})", re.S)
    if not pat.search(text):
        raise ValueError(f"the table module lacks the {BEGIN} / {END} markers")
    body = "MEASURED: list = " + pprint.pformat(rows, width=100, sort_dicts=True)
    return pat.sub(lambda m: m.group(1) + body + m.group(3), text, count=1)


def current_rows(path):
    ns = {}
    exec(compile(open(path).read(), path, "exec"), ns)  # our own module: data + pure functions
    return list(ns["MEASURED"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", help="gpu_check.json of a GPU run")
    p.add_argument("--table", default=os.path.join(ROOT, "gapops", "_auto_table.py"))
    args = p.parse_args(argv)
    with open(args.report) as f:
        data = json.load(f)
    rows = data.get("auto_table") or []
    if "dry" in str(data.get("mode", "")) or "cpu" in str(data.get("device", "")).lower():
        print("update_auto_table.py: a dry run's rows (CPU) are not GPU measurements: nothing "
              "written", file=sys.stderr)
        return 2
    if not rows:
        print("update_auto_table.py: the report has no auto_table rows", file=sys.stderr)
        return 1
    all_rows = merged(current_rows(args.table), rows)
    with open(args.table) as f:
        text = f.read()
    with open(args.table, "w") as f:
        f.write(rewrite(text, all_rows))
    print(f"update_auto_table.py: {len(rows)} rows from {data.get('device')} "
          f"({data.get('date')}); the table has {len(all_rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
