"""Which GPU backend ``backend='auto'`` picks, per loss, dtype and size bucket: measured, not guessed.

The rows below come from the GPU check (benchmarks/gpu_check.sh): its report lists, for every case
it timed, the gapops GPU backends fastest first, and ``python3 benchmarks/update_auto_table.py
<gpu_check.json>`` writes them between the markers (docs/gpu_check.md). Until a GPU has measured
a (loss, dtype) pair, 'auto' takes DEFAULT_ORDER: the cuBLAS-strip backend ``cuda`` first, whose
speed follows from two numbers (docs/cuda.md), then ``triton``, then ``reference``.

A row: {"loss": "softmax" | "sigmoid", "dtype": "bf16" | "fp16" | "fp32" | "tf32" | "fp64",
"n": the batch it was measured at, "d": its feature width, "ranking": backends fastest first,
"device": the GPU, "date": when}. Pure data and pure functions: no torch import, testable anywhere.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

# Upper bounds (inclusive) of the size buckets in N; larger N fall in one last bucket.
SIZE_BUCKETS = (8192, 65536, 524288)
# The order 'auto' tries on a GPU when no measured row matches (or none of its backends is usable).
DEFAULT_ORDER = ("cuda", "triton", "reference")

# BEGIN MEASURED (written by benchmarks/update_auto_table.py; edit by hand only to remove rows)
MEASURED: list = []
# END MEASURED


def size_bucket(n: int) -> int:
    """Index of N's size bucket: 0 for N <= SIZE_BUCKETS[0], ..., len(SIZE_BUCKETS) above all."""
    for i, bound in enumerate(SIZE_BUCKETS):
        if n <= bound:
            return i
    return len(SIZE_BUCKETS)


def dtype_key(dtype_name: str, allow_tf32: bool) -> str:
    """The table's dtype key: 'float32' features with TF32 products allowed are 'tf32'."""
    short = {"float64": "fp64", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
    key = short.get(dtype_name.replace("torch.", ""), dtype_name)
    return "tf32" if key == "fp32" and allow_tf32 else key


def choose(rows: Iterable[dict], loss: str, dtype: str, n: Optional[int],
           available: Sequence[str]) -> str:
    """The backend to use: the fastest usable one of the measured row nearest in size (same loss
    and dtype; ties in distance go to the larger bucket, the one whose figures matter more), else
    the first usable one of DEFAULT_ORDER ('reference' is always usable).

    rows: table rows as above; n: the batch (None: the largest bucket measured); available: the
    backends usable here (e.g. ('cuda', 'triton'))."""
    usable = set(available) | {"reference"}
    same = [r for r in rows if r.get("loss") == loss and r.get("dtype") == dtype]
    if same:
        want = size_bucket(n) if n is not None else max(size_bucket(r["n"]) for r in same)
        # nearest bucket first; among equals, the larger bucket, then the later row (newer)
        order = sorted(enumerate(same), key=lambda ir: (abs(size_bucket(ir[1]["n"]) - want),
                                                       -size_bucket(ir[1]["n"]), -ir[0]))
        for _, row in order:
            for name in row.get("ranking", ()):
                if name in usable:
                    return name
    for name in DEFAULT_ORDER:
        if name in usable:
            return name
    return "reference"
