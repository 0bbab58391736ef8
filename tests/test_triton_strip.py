"""Triton-specific checks of the strip primitive (gapops/triton_strip.py) against the reference.

What the backend suite (test_backends.py) cannot see through the loss: offset > 0 with n < m
(the distributed scheme's strips), block-edge masking, both dB modes, the multi-block paths of
the forward's column partials and of the column kernel's row splits, and bitwise repeatability.
Runs under the Triton interpreter on the CPU (TRITON_INTERPRET=1, set by conftest.py) or on CUDA.
"""
import pytest
import torch
import torch.nn.functional as F

import gapops
from conftest import device_for
from gapops import _dispatch
from gapops.reference import reference_strip_backward, reference_strip_forward

pytestmark = pytest.mark.skipif(gapops.backends()["triton"] != "available",
                                reason=f"triton: {gapops.backends()['triton']}")

DEV = device_for("triton")
# (forward, backward) relative tolerances against float64 on the same rounded inputs
TOL = {torch.float64: (1e-12, 1e-11), torch.float32: (1e-6, 1e-5),
       torch.bfloat16: (1e-5, 2e-2), torch.float16: (1e-5, 2e-2)}


def _ts():
    from gapops import triton_strip
    return triton_strip


def rel(got, want):
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).norm() / want.norm().clamp_min(1e-30)) if want.numel() else 0.0


def make(n, m, d, dtype, seed, scale=17.0):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(m, d, generator=g, dtype=torch.float64), dim=1)
    b[: min(n, m)] += 0.5 * a[: min(n, m)]  # some positive structure
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    s = torch.tensor(scale, dtype=acc, device=DEV)
    gr = torch.rand(n, generator=g, dtype=torch.float64)
    gc = torch.rand(m, generator=g, dtype=torch.float64)
    return a.to(dtype).to(DEV), b.to(dtype).to(DEV), s, gr, gc


def check_strip(a, b, s, offset, gr, gc, db_mode=None, deterministic=False):
    ts = _ts()
    tol_f, tol_b = TOL[a.dtype]
    a64, b64, s64 = a.double().cpu(), b.double().cpu(), s.double().cpu()
    want_f = reference_strip_forward(a64, b64, s64, offset)
    got_f = ts.strip_forward(a, b, s, offset)
    for name, g, w in zip(("row_lse", "col_lse", "pos"), got_f, want_f):
        assert g.dtype == s.dtype and g.device == a.device
        if name == "pos":  # rows whose positive column i + offset is past m have none (0 here)
            assert (g[w.numel():] == 0).all()
            g = g[: w.numel()]
        assert rel(g, w) <= tol_f, f"{a.dtype} {name}: {rel(g, w):.2e}"
    r64, c64 = want_f[0], want_f[1]
    acc = s.dtype
    want_b = reference_strip_backward(a64, b64, s64, offset, r64, c64, gr, gc)
    got_b = ts.strip_backward(a, b, s, offset, r64.to(acc).to(DEV), c64.to(acc).to(DEV),
                              gr.to(acc).to(DEV), gc.to(acc).to(DEV),
                              deterministic=deterministic, db_mode=db_mode)
    assert got_b[0].dtype == a.dtype and got_b[1].dtype == b.dtype and got_b[2].dim() == 0
    for name, g, w in zip(("dA", "dB", "dscale"), got_b, want_b):
        assert torch.isfinite(g).all()
        assert rel(g, w) <= tol_b, f"{a.dtype} {db_mode} {name}: {rel(g, w):.2e}"
    return got_f, got_b


def test_backend_is_available_under_the_interpreter():
    assert gapops.backends()["triton"] == "available"
    if _dispatch.triton_interpreted():
        assert DEV == "cpu"


@pytest.mark.parametrize("db_mode", ["atomic", "partial"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64],
                         ids=lambda t: str(t).replace("torch.", ""))
@pytest.mark.parametrize("n,m,d,offset", [(40, 130, 24, 70), (17, 33, 5, 16), (64, 192, 64, 128)])
def test_offset_strip_matches_reference(n, m, d, offset, dtype, db_mode):
    a, b, s, gr, gc = make(n, m, d, dtype, seed=n + m + d)
    check_strip(a, b, s, offset, gr, gc, db_mode=db_mode)


# n <= m: the strip contract (row i's positive column i + offset exists)
@pytest.mark.parametrize("n,m,d", [(1, 1, 1), (1, 7, 1), (2, 3, 3), (3, 70, 1), (63, 65, 65),
                                   (65, 129, 63), (64, 64, 64), (2, 66, 130)])
def test_masking_edges(n, m, d):
    a, b, s, gr, gc = make(n, m, d, torch.float32, seed=7 * n + m + d)
    offset = min(m - n, 1) if m > n else 0
    check_strip(a, b, s, offset, gr, gc, db_mode="atomic")
    check_strip(a, b, s, offset, gr, gc, db_mode="partial")


def test_multi_block_partials(monkeypatch):
    """More row blocks than forward programs (each program merges its column partials more than
    once), and a column kernel that splits the rows into interleaved groups summed afterwards.
    The SM count is patched to force both with a small strip."""
    ts = _ts()
    n = m = 400
    a, b, s, gr, gc = make(n, m, 8, torch.float32, seed=3)
    monkeypatch.setattr(ts, "_num_sms", lambda dev: 1)  # forward: 2 programs, >= 4 row blocks
    assert triton_cdiv(n, 128) > 2
    check_strip(a, b, s, 0, gr, gc, db_mode="atomic")
    monkeypatch.setattr(ts, "_num_sms", lambda dev: 40)  # column kernel: several row splits
    assert ts._col_splits(n, m, a.device) > 1
    check_strip(a, b, s, 0, gr, gc, db_mode="partial")


def triton_cdiv(x, y):
    return (x + y - 1) // y


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16],
                         ids=lambda t: str(t).replace("torch.", ""))
@pytest.mark.parametrize("db_mode", ["atomic", "partial"])
def test_half_precision(dtype, db_mode):
    a, b, s, gr, gc = make(70, 150, 40, dtype, seed=11)
    check_strip(a, b, s, 80, gr, gc, db_mode=db_mode)


def test_strided_inputs():
    a, b, s, gr, gc = make(45, 90, 33, torch.float32, seed=13)
    at = torch.empty(33, 45, device=DEV).T.copy_(a)           # column-major
    bs = torch.empty(90, 66, device=DEV)[:, ::2].copy_(b)       # strided columns
    assert not at.is_contiguous() and not bs.is_contiguous()
    check_strip(at, bs, s, 45, gr, gc, db_mode="atomic")
    check_strip(at, bs, s, 45, gr, gc, db_mode="partial")


def test_both_db_modes_agree():
    ts = _ts()
    a, b, s, gr, gc = make(70, 100, 20, torch.float32, seed=17)
    r, c, _ = ts.strip_forward(a, b, s, 10)
    args = (a, b, s, 10, r, c, gr.float().to(DEV), gc.float().to(DEV))
    x = ts.strip_backward(*args, db_mode="atomic")
    y = ts.strip_backward(*args, db_mode="partial")
    torch.testing.assert_close(x[0], y[0], rtol=0, atol=0)  # dA: same kernel, same order
    torch.testing.assert_close(x[1], y[1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(x[2], y[2], rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16],
                         ids=lambda t: str(t).replace("torch.", ""))
def test_deterministic_is_bitwise_repeatable(dtype):
    ts = _ts()
    a, b, s, gr, gc = make(150, 200, 40, dtype, seed=19)
    outs = []
    for _ in range(2):
        r, c, p = ts.strip_forward(a, b, s, 30)
        grads = ts.strip_backward(a, b, s, 30, r, c, gr.float().to(DEV), gc.float().to(DEV),
                                  deterministic=True)
        outs.append((r, c, p, *grads))
    for x, y in zip(*outs):
        assert torch.equal(x, y)


def test_empty_strip_and_bad_mode():
    ts = _ts()
    a, b, s, _, _ = make(4, 6, 3, torch.float32, seed=23)
    r, c, p = ts.strip_forward(a[:0], b, s, 0)
    assert r.shape == (0,) and torch.isneginf(c).all() and p.shape == (0,)
    z = torch.zeros(0, device=DEV)
    da, db, ds = ts.strip_backward(a[:0], b, s, 0, z, c, z, torch.zeros(6, device=DEV))
    assert da.shape == (0, 3) and db.abs().sum() == 0 and ds == 0
    with pytest.raises(ValueError):
        ts.strip_backward(a, b, s, 0, r, c, z, z, db_mode="nope")


def test_loss_deterministic_flag_follows_torch(monkeypatch):
    """contrastive_loss passes deterministic=torch.are_deterministic_algorithms_enabled() down."""
    ts = _ts()
    seen = []
    real = ts.strip_backward

    def spy(*args, **kw):
        seen.append(args[8] if len(args) > 8 else kw.get("deterministic"))
        return real(*args, **kw)

    monkeypatch.setattr(ts, "strip_backward", spy)
    monkeypatch.setattr(_dispatch, "_triton_kernels", lambda: (ts.strip_forward, spy))
    monkeypatch.setitem(_dispatch.BACKENDS, "triton", _dispatch.Backend(
        "triton", ("cuda", "cpu"), _dispatch._triton_unavailable, lambda: (ts.strip_forward, spy)))
    x = torch.randn(10, 4, device=DEV, requires_grad=True)
    y = torch.randn(10, 4, device=DEV)
    prev = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        gapops.contrastive_loss(x, y, 10.0, backend="triton").backward()
    finally:
        torch.use_deterministic_algorithms(prev)
    assert seen == [True]
