"""The strip primitive (docs/design.md section 2.1), every backend against the reference strip.

Each backend's strip_forward / strip_backward is called directly on awkward strips (n, m, d not
multiples of any block, offsets, swapped rows and columns, strided inputs, every dtype) and
compared with ``gapops.reference``'s strip evaluated in float64 on the same rounded inputs.
"""
import pytest
import torch

from gapops import _dispatch
from gapops._dtypes import accumulation_dtype
from gapops.reference import reference_strip_backward, reference_strip_forward
from helpers import (MAX_ROWS, ROUTINGS, STRIPS, TOL, assert_close, backend_params, device_for,
                     make_strip, strip_args)

STRIP_BACKENDS = backend_params(include_reference=True)
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def run_both(backend, case, dtype, g_seed=0):
    fwd, bwd = _dispatch.strip_kernels(backend)
    acc = accumulation_dtype(dtype)
    got_args, want_args = strip_args(case, acc), strip_args(case, torch.float64)
    want_args = tuple(t.cpu() if isinstance(t, torch.Tensor) else t for t in want_args)
    got_f = fwd(*got_args)
    want_f = reference_strip_forward(*want_args)
    n, m = got_args[0].shape[0], got_args[3].shape[0]
    g = torch.Generator().manual_seed(g_seed)
    g_row, g_col = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(m, generator=g, dtype=torch.float64)
    dev = case["device"]
    got_b = bwd(*got_args, want_f[0].to(dev, acc), want_f[1].to(dev, acc), g_row.to(dev, acc),
                g_col.to(dev, acc), False)
    want_b = reference_strip_backward(*want_args, *want_f, g_row, g_col)
    return got_f, want_f, got_b, want_b, 1e-3 * float(g_row.sum() + g_col.sum())


@pytest.mark.parametrize("backend", STRIP_BACKENDS)
@pytest.mark.parametrize("n,m,d,offset", STRIPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).replace("torch.", ""))
def test_strip_matches_reference(backend, n, m, d, offset, dtype):
    case = make_strip(n, m, d, offset, dtype, seed=n + 7 * m + d, device=device_for(backend))
    fwd_tol, bwd_tol = TOL[dtype]
    got_f, want_f, got_b, want_b, floor = run_both(backend, case, dtype)
    assert_close(got_f, want_f, fwd_tol, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, bwd_tol, ("grad_a", "grad_b", "grad_scale"), floor)


@pytest.mark.parametrize("backend", STRIP_BACKENDS)
@pytest.mark.parametrize("swap_rows,swap_cols,normalize,strided", ROUTINGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=lambda t: str(t).replace("torch.", ""))
def test_strip_routing_norms_strides(backend, swap_rows, swap_cols, normalize, strided, dtype):
    case = make_strip(37, 52, 21, 11, dtype, seed=5, device=device_for(backend), swap_rows=swap_rows,
                      swap_cols=swap_cols, normalize=normalize, strided=strided, scale=7.0)
    fwd_tol, bwd_tol = TOL[dtype]
    got_f, want_f, got_b, want_b, floor = run_both(backend, case, dtype)
    assert_close(got_f, want_f, fwd_tol, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, bwd_tol, ("grad_a", "grad_b", "grad_scale"), floor)


@pytest.mark.parametrize("backend", STRIP_BACKENDS)
def test_strip_dominant_positives_fp32(backend):
    """logit_scale 100, positives far above the rest: statistics ~1e-4 stay accurate."""
    case = make_strip(64, 64, 48, 0, torch.float32, seed=9, device=device_for(backend), scale=100.0,
                      aligned=4.0)
    got_f, want_f, got_b, want_b, floor = run_both(backend, case, torch.float32)
    assert float(want_f[0].max()) < 0.1  # the regime under test
    assert_close(got_f, want_f, 1e-4, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, 1e-4, ("grad_a", "grad_b", "grad_scale"), floor)


@pytest.mark.parametrize("backend", STRIP_BACKENDS)
def test_strip_large(backend):
    n = min(MAX_ROWS[backend], 700)
    case = make_strip(n, n + 3, 40, 2, torch.float32, seed=1, device=device_for(backend))
    got_f, want_f, got_b, want_b, floor = run_both(backend, case, torch.float32)
    assert_close(got_f, want_f, 1e-5, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, 1e-4, ("grad_a", "grad_b", "grad_scale"), floor)


@pytest.mark.parametrize("backend", STRIP_BACKENDS)
def test_strip_deterministic_mode_repeats_bits(backend):
    case = make_strip(150, 150, 40, 0, torch.float32, seed=2, device=device_for(backend),
                      swap_rows=True, swap_cols=True)
    fwd, bwd = _dispatch.strip_kernels(backend)
    args = strip_args(case, torch.float32)
    stats = fwd(*args)
    g = torch.full((150,), 0.5, device=case["device"])
    first = bwd(*args, *stats, g, g, True)
    again = bwd(*args, *stats, g, g, True)
    for x, y in zip(first, again):
        assert torch.equal(x, y)


@pytest.mark.parametrize("backend", STRIP_BACKENDS)
def test_strip_nan_propagates(backend):
    case = make_strip(20, 20, 8, 0, torch.float32, seed=3, device=device_for(backend))
    case["feats"][0][3, 2] = float("nan")
    fwd, bwd = _dispatch.strip_kernels(backend)
    args = strip_args(case, torch.float32)
    row, col = fwd(*args)
    assert torch.isnan(row[3]) and torch.isnan(col).all()
    g = torch.full((20,), 0.5, device=case["device"])
    ga, gb, gs = bwd(*args, row, col, g, g, False)
    assert torch.isnan(gs) and torch.isnan(gb).all()


@pytest.mark.parametrize("backend", STRIP_BACKENDS)
@pytest.mark.parametrize("scale", [1e3, 1e21], ids=["1e3", "1e21"])
def test_strip_huge_scale_stays_finite(backend, scale):
    """logit_scale = exp(50) ~ 5e21 is what a diverged log-parameter hands over: statistics of
    order s, no overflow to inf or -inf (the positive's exp(-M) term underflows to 0 there)."""
    case = make_strip(40, 40, 12, 0, torch.float32, seed=4, device=device_for(backend), scale=scale)
    fwd, _ = _dispatch.strip_kernels(backend)
    got = fwd(*strip_args(case, torch.float32))
    want = reference_strip_forward(*strip_args(case, torch.float64))
    assert_close(got, want, 1e-5, ("row_lse", "col_lse"))
    if scale < 1e6:  # at 1e21 the gradients themselves (~ s) overflow fp32's intermediates
        got_f, want_f, got_b, want_b, floor = run_both(backend, case, torch.float32)
        assert_close(got_b, want_b, 1e-4, ("grad_a", "grad_b", "grad_scale"), floor)
