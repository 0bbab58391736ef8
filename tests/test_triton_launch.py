"""Launch policy of the Triton backend (gapops/triton/strip.py, configs.py): grid geometry
within CUDA's limits at any batch, the tuning key, and deterministic=True giving the same bits
in two processes whose autotuners picked different configs. No GPU needed: geometry is pure
arithmetic, the rest runs under the Triton interpreter."""
import json
import os
import subprocess
import sys

import pytest
import torch
import triton

import gapops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_triton = pytest.mark.skipif(gapops.backends()["triton"] != "available",
                                  reason=f"triton: {gapops.backends()['triton']}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_gstrip_grid_at_8m_columns(dtype, monkeypatch):
    """m = 8,388,608 (a distributed global batch): one-axis grid of every shipped G-strip
    config within CUDA's limits, covering every tile; the old 2-D grid's y axis would not be."""
    from gapops.triton import configs, strip
    monkeypatch.delenv("GAPOPS_TRITON_GSTRIP_MB", raising=False)
    n = m = 8_388_608
    rows = strip._gstrip_rows(n, m, torch.empty(0, dtype=dtype).element_size())
    for c in configs.CONFIGS["gstrip"][configs.dtype_class(dtype)]:
        bm, bn = c.kwargs["BM"], c.kwargs["BN"]
        assert triton.cdiv(m, bn) > 65535  # a grid y of column blocks would fail to launch
        (x,) = strip.gstrip_grid(rows, m, bm, bn)
        assert x == triton.cdiv(rows, bm) * triton.cdiv(m, bn) <= 2**31 - 1
        # the tiles of one strip are its scratch bytes / (elt BM BN): 2^31 tiles would take
        # terabytes of W, so no budget a GPU holds reaches the x limit


def test_check_grid_names_the_axis():
    from gapops.triton.common import check_grid
    assert check_grid((5, 65535)) == (5, 65535)
    with pytest.raises(ValueError, match="axis 1"):
        check_grid((1, 65536))
    with pytest.raises(ValueError, match="axis 0"):
        check_grid((2**31,))


def test_tuning_key_has_precision_and_swap_flags():
    from gapops.triton import configs
    for name in ("d", "tune_bucket", "PREC", "HAS_ASWAP", "HAS_BSWAP"):
        assert name in configs.TUNE_KEY


@needs_triton
def test_swap_flags_tune_separately(monkeypatch):
    """A strip with routing does not reuse the config tuned without it (under the interpreter,
    with a stub timer: one autotuner cache entry per key)."""
    from gapops.triton import configs, strip
    from helpers import device_for, make_strip, strip_args
    if not gapops._dtypes.triton_interpreted():
        pytest.skip("interpreter-only: on a GPU the real tuning path runs")
    cfg = configs._cfg
    monkeypatch.setattr(configs.Tuning, "do_bench",
                        lambda call, quantiles=None: (call(), [1.0, 1.0, 1.0])[1])
    monkeypatch.setattr(configs.Tuning, "interpreter_configs", {
        "fwd": [cfg(4, 1, BM=32, BN=32, BK=32), cfg(4, 1, BM=64, BN=64, BK=32)]})
    monkeypatch.setattr(configs, "_tuners", {})
    dev = device_for("triton")
    for swap in (False, True, False):
        case = make_strip(64, 64, 16, 0, torch.float32, seed=3, device=dev, swap_rows=swap)
        strip.strip_forward(*strip_args(case, torch.float32), deterministic=False)
    (tuner,) = [t for k, t in configs._tuners.items() if k[0] == "fwd"]
    assert len(tuner.cache) == 2  # (no swap), (swap); the third call reused the first


_CHILD = r"""
import json, sys, torch
import gapops
from gapops.triton import configs
winner = int(sys.argv[1])
cfg = configs._cfg
configs.Tuning.interpreter_configs = {
    "fwd": [cfg(4, 1, BM=32, BN=32, BK=16), cfg(4, 1, BM=64, BN=64, BK=32)],
    "gstrip": [cfg(4, 1, BM=32, BN=32, BK=16), cfg(4, 1, BM=64, BN=64, BK=32)],
    "fused": [cfg(4, 1, BM=32, BN=32, BK=16, BD=16), cfg(4, 1, BM=64, BN=64, BK=32, BD=32)]}
calls = []
def bench(call, quantiles=None):  # config number `winner` of each tuning is the fastest
    call()
    t = 0.5 if len(calls) % 2 == winner else 1.0
    calls.append(t)
    return [t, t, t] if quantiles else t
configs.Tuning.do_bench = bench
g = torch.Generator().manual_seed(0)
x = torch.randn(200, 40, generator=g)
y = 0.5 * x + torch.randn(200, 40, generator=g)
swap = torch.rand(200, generator=g) < 0.3
out = {}
for det in (True, False):
    xx, yy = x.clone().requires_grad_(), y.clone().requires_grad_()
    loss = gapops.contrastive_loss(xx, yy, 20.0, swap_mask=swap, backend="triton",
                                   deterministic=det)
    loss.backward()
    out[str(det)] = [t.numpy().tobytes().hex() for t in (loss.detach(), xx.grad, yy.grad)]
print(json.dumps(out))
"""


@needs_triton
def test_deterministic_bits_across_processes():
    """Two processes whose autotuners pick different configs: deterministic=True gives the
    same bits in both (the fixed config); without it the bits differ (which shows that the
    configs really disagree, so that the first assertion can fail)."""
    if not gapops._dtypes.triton_interpreted():
        pytest.skip("interpreter-only (the stub timer drives the interpreter's tuning path)")
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    runs = []
    for winner in (0, 1):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(winner)], capture_output=True,
                             text=True, env=env, cwd=ROOT, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["True"] == runs[1]["True"]
    assert runs[0]["False"] != runs[1]["False"]


def test_backward_shape_policy(monkeypatch):
    """deterministic runs the G strip; on a GPU so does every dtype class without shipped fused
    configs (fp32); the interpreter runs what was asked (exactness tests of both kernels)."""
    from gapops.triton import configs, strip
    monkeypatch.setattr(strip, "triton_interpreted", lambda: False)
    assert "32" not in configs.CONFIGS["fused"]
    assert strip.effective_bwd_shape("fused", False, torch.float32) == "gstrip"
    assert strip.effective_bwd_shape("fused", False, torch.bfloat16) == "fused"
    assert strip.effective_bwd_shape("fused", True, torch.bfloat16) == "gstrip"
    assert strip.effective_bwd_shape("gstrip", False, torch.float16) == "gstrip"
    monkeypatch.setattr(strip, "triton_interpreted", lambda: True)
    assert strip.effective_bwd_shape("fused", False, torch.float32) == "fused"
