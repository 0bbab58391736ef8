"""backend='auto' on a GPU: the choice from the measured table (pure functions, no GPU needed)."""
import pytest
import torch

from gapops import _auto_table, _dispatch
from gapops._auto_table import DEFAULT_ORDER, choose, dtype_key, size_bucket

ROWS = [  # a fake table: small N favours triton, large N favours cuda, bf16 softmax only
    {"loss": "softmax", "dtype": "bf16", "n": 4096, "d": 768, "ranking": ["triton", "cuda"]},
    {"loss": "softmax", "dtype": "bf16", "n": 32768, "d": 768, "ranking": ["cuda", "triton"]},
    {"loss": "sigmoid", "dtype": "bf16", "n": 65536, "d": 768, "ranking": ["triton", "cuda"]},
]
BOTH = ("cuda", "triton")


def test_empty_table_prefers_the_cublas_strip_backend():
    assert DEFAULT_ORDER == ("cuda", "triton", "reference")
    assert choose([], "softmax", "bf16", 32768, BOTH) == "cuda"
    assert choose([], "softmax", "bf16", 32768, ("triton",)) == "triton"
    assert choose([], "softmax", "bf16", 32768, ()) == "reference"


def test_measured_row_of_the_same_bucket_wins():
    assert size_bucket(4096) != size_bucket(32768)
    assert choose(ROWS, "softmax", "bf16", 2000, BOTH) == "triton"
    assert choose(ROWS, "softmax", "bf16", 40000, BOTH) == "cuda"


def test_nearest_bucket_when_this_one_was_not_measured():
    big = 2 ** 21  # above every bucket: nearest measured is the 32768 row's bucket
    assert size_bucket(big) == len(_auto_table.SIZE_BUCKETS)
    assert choose(ROWS, "softmax", "bf16", big, BOTH) == "cuda"
    assert choose(ROWS, "sigmoid", "bf16", 10, BOTH) == "triton"  # the only sigmoid row


def test_unusable_backend_falls_to_the_next_of_the_ranking():
    assert choose(ROWS, "softmax", "bf16", 40000, ("triton",)) == "triton"
    assert choose(ROWS, "softmax", "bf16", 2000, ("cuda",)) == "cuda"
    assert choose(ROWS, "softmax", "bf16", 2000, ()) == "reference"


def test_other_loss_or_dtype_uses_the_default_order():
    assert choose(ROWS, "softmax", "fp16", 2000, BOTH) == "cuda"
    assert choose(ROWS, "softmax", "tf32", 2000, ("triton",)) == "triton"
    assert choose(ROWS[2:], "softmax", "bf16", 2000, BOTH) == "cuda"


def test_dtype_key_separates_tf32_from_ieee_fp32():
    assert dtype_key(str(torch.float32), True) == "tf32"
    assert dtype_key(str(torch.float32), False) == "fp32"
    assert dtype_key(str(torch.bfloat16), True) == "bf16"
    assert dtype_key(str(torch.float64), True) == "fp64"


def test_resolve_auto_on_cuda_reads_the_table(monkeypatch):
    """resolve('auto') on a CUDA device asks the table (the backends' availability faked)."""
    monkeypatch.setattr(_auto_table, "MEASURED", ROWS)
    avail = {"cuda": None, "triton": None}
    for name in avail:
        be = _dispatch.BACKENDS[name]
        monkeypatch.setitem(_dispatch.BACKENDS, name,
                            _dispatch.Backend(be.name, be.device_types, lambda n=name: avail[n],
                                              be.kernels))
    dev = torch.device("cuda")
    assert _dispatch.resolve("auto", dev, dtype=torch.bfloat16, n=2000).name == "triton"
    assert _dispatch.resolve("auto", dev, dtype=torch.bfloat16, n=40000).name == "cuda"
    avail["cuda"] = "not built"
    assert _dispatch.resolve("auto", dev, dtype=torch.bfloat16, n=40000).name == "triton"
    monkeypatch.setattr(_auto_table, "MEASURED", [])
    avail["cuda"] = None
    assert _dispatch.resolve("auto", dev, dtype=torch.float16, n=40000).name == "cuda"


def test_resolve_auto_on_cpu_is_unchanged():
    be = _dispatch.resolve("auto", torch.device("cpu"), dtype=torch.float32, n=10)
    assert be.name in ("cpu", "reference")


@pytest.mark.parametrize("row", _auto_table.MEASURED or [None])
def test_shipped_rows_are_well_formed(row):
    if row is None:
        pytest.skip("no GPU has measured yet: the table is empty")
    assert row["loss"] in ("softmax", "sigmoid") and row["n"] > 0
    assert row["dtype"] in ("bf16", "fp16", "fp32", "tf32", "fp64")
    assert set(row["ranking"]) <= set(_dispatch.BACKENDS)
