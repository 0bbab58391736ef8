"""The Triton sigmoid (SigLIP) strip (gapops/triton/sigmoid.py) against the float64 reference.

``gapops.reference.reference_sigmoid_strip`` evaluated in float64 on the same rounded inputs is
the oracle: awkward strips (tests/helpers.py STRIPS), every dtype, swap routing, strides, no
normalization, g_row given or None, each want_loss / want_grads combination, trained values
(scale 100, bias -12), NaN, the loss-only kernel's column splits, several G strips, the
autotuning path on live buffers, fp16 weights below fp16's subnormals and bitwise repeatability.
Runs under the Triton interpreter on the CPU (TRITON_INTERPRET=1, set by conftest.py) or on CUDA.
"""
import pytest
import torch

import gapops
from gapops.reference import reference_sigmoid_strip
from helpers import (STRIPS, TOL, assert_close, device_for, make_strip, strip_args,
                     tune_under_interpreter)

pytestmark = pytest.mark.skipif(gapops.backends()["triton"] != "available",
                                reason=f"triton: {gapops.backends()['triton']}")

DEV = device_for("triton")
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
NAMES = ("row_loss", "grad_a", "grad_b", "grad_scale", "grad_bias")


def _sig():
    from gapops.triton import sigmoid
    return sigmoid


def sigmoid_args(case, acc, bias):
    """The strip's positional arguments up to offset (the softmax strip's, without the positives'
    cosines, with the bias): a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale,
    bias, offset."""
    args = strip_args(case, acc)
    return (*args[:8], args[10], torch.tensor(bias, dtype=acc, device=args[10].device), args[11])


def run(case, dtype, bias=-3.0, g=None, want_loss=True, want_grads=True, deterministic=False):
    """(got, want, floor): the Triton strip and the float64 reference on the same inputs, and the
    absolute floor for grad_scale / grad_bias (whose exact values may nearly cancel)."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    got_args = sigmoid_args(case, acc, bias)
    want_args = tuple(t.cpu() if isinstance(t, torch.Tensor) else t
                      for t in sigmoid_args(case, torch.float64, bias))
    n = got_args[0].shape[0]
    got = _sig().sigmoid_strip(*got_args, None if g is None else g.to(DEV, acc), want_loss,
                               want_grads, deterministic)
    want = reference_sigmoid_strip(*want_args, g, want_loss, want_grads)
    w_sum = float(g.abs().sum()) if g is not None else float(n)
    return got, want, 1e-4 * w_sum


def compare(got, want, tol_f, tol_b, floor):
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in want]
    if want[0].numel():
        assert_close(got[:1], want[:1], tol_f, NAMES[:1])
    if want[1].numel():
        assert_close(got[1:3], want[1:3], tol_b, NAMES[1:3])
    # the scalars against max(|value|, floor): assert_close applies scale_floor to "grad_scale"
    for i in (3, 4):
        assert_close(got[i:i + 1], want[i:i + 1], tol_b, ("grad_scale",), floor)


def _weights(n, seed=1):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("n,m,d,offset", STRIPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).replace("torch.", ""))
def test_strips_match_reference(n, m, d, offset, dtype):
    """Loss and every gradient with per-row weights (the reduction='none' backward)."""
    case = make_strip(n, m, d, offset, dtype, seed=n + 7 * m + d, device=DEV)
    got, want, floor = run(case, dtype, g=_weights(n))
    compare(got, want, *TOL[dtype], floor)


@pytest.mark.parametrize("n,m,d,offset", [(1, 5, 3, 4), (17, 40, 33, 9), (130, 257, 19, 127)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16],
                         ids=lambda t: str(t).replace("torch.", ""))
@pytest.mark.parametrize("want_loss,want_grads", [(True, False), (False, True), (False, False)])
def test_loss_and_grad_combinations(n, m, d, offset, dtype, want_loss, want_grads):
    """g_row None (the forward-with-gradients of a scalar upstream); what is not wanted comes
    back empty ([0] / [0, d]) and the unwanted scalars 0."""
    case = make_strip(n, m, d, offset, dtype, seed=n + m, device=DEV, swap_rows=True)
    got, want, floor = run(case, dtype, want_loss=want_loss, want_grads=want_grads)
    compare(got, want, *TOL[dtype], floor)
    if not want_grads:
        assert float(got[3]) == 0.0 and float(got[4]) == 0.0


@pytest.mark.parametrize("swap_rows,swap_cols,normalize,strided", [
    (True, False, True, False), (False, True, True, False), (True, True, False, False),
    (True, True, True, True)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16],
                         ids=lambda t: str(t).replace("torch.", ""))
def test_routing_norms_strides(swap_rows, swap_cols, normalize, strided, dtype):
    case = make_strip(37, 152, 21, 11, dtype, seed=5, device=DEV, swap_rows=swap_rows,
                      swap_cols=swap_cols, normalize=normalize, strided=strided, scale=7.0)
    for g in (None, _weights(37)):
        got, want, floor = run(case, dtype, bias=-1.0, g=g)
        compare(got, want, *TOL[dtype], floor)
    got, want, floor = run(case, dtype, bias=-1.0, want_grads=False)  # the loss-only kernel
    compare(got, want, *TOL[dtype], floor)


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (100.0, -12.0), (100.0, -50.0)])
def test_open_clip_init_and_trained_values_fp32(scale, bias):
    """open_clip's initialization (10, -10), trained values (~100, -12), and a strip where every
    term is tiny (bias -50: the largest ~e^-8, the positives' ~e^-47, where log(1 + u) instead of
    log1p(u) loses the digits): fp32 within 1e-5 / 1e-4 of float64 on the same rounded inputs."""
    case = make_strip(64, 96, 48, 16, torch.float32, seed=9, device=DEV, scale=scale,
                      aligned=4.0)
    for want_grads in (True, False):
        got, want, floor = run(case, torch.float32, bias=bias, want_grads=want_grads)
        compare(got, want, 1e-5, 1e-4, floor)
        # each row's loss to its own precision (the norm above is ruled by the largest rows);
        # the cosines' fp32 rounding moves z by ~100 x 1e-7
        row_err = ((got[0].cpu().double() - want[0]) / want[0]).abs().max()
        assert row_err < 1e-4, f"row_loss: worst row's relative error {float(row_err):.1e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16],
                         ids=lambda t: str(t).replace("torch.", ""))
def test_nan_in_nan_out(dtype):
    """A NaN feature makes its row's loss and the gradients it reaches NaN, and nothing else
    (fp16: the weights' power-of-two scale must not turn every gradient NaN)."""
    case = make_strip(20, 70, 8, 3, dtype, seed=2, device=DEV)
    case["feats"][0][4, 2] = float("nan")
    got, want, _ = run(case, dtype, g=_weights(20))
    for name, gv, wv in zip(NAMES, got, want):
        assert torch.equal(torch.isnan(gv.cpu()), torch.isnan(wv)), name
    assert torch.isnan(want[0][4]) and torch.isfinite(want[0][:4]).all()
    assert torch.isfinite(want[1][:4]).all() and torch.isnan(want[2]).all()
    got, want, _ = run(case, dtype, want_grads=False)
    assert torch.equal(torch.isnan(got[0].cpu()), torch.isnan(want[0]))


def test_loss_only_splits_columns():
    """Few rows against many columns: the loss-only kernel splits each row block's columns over
    several programs, whose partials the host adds."""
    sig = _sig()
    assert sig._n_split(5, 700, torch.device(DEV)) > 1
    case = make_strip(5, 700, 12, 600, torch.float32, seed=3, device=DEV, swap_cols=True)
    got, want, floor = run(case, torch.float32, want_grads=False)
    compare(got, want, 1e-5, 1e-4, floor)


def test_several_g_strips(monkeypatch):
    """A scratch budget of a few rows: 128-row G strips, the routed B in 128-row chunks."""
    monkeypatch.setenv("GAPOPS_TRITON_GSTRIP_MB", "0")
    case = make_strip(300, 310, 20, 5, torch.float32, seed=8, device=DEV, swap_rows=True,
                      swap_cols=True)
    got, want, floor = run(case, torch.float32, g=_weights(300))
    compare(got, want, 1e-5, 1e-4, floor)


def test_fp16_weights_below_subnormal():
    """g ~ 1e-9: every weight s rho G sigma lies below fp16's smallest subnormal (6e-8); without
    the power-of-two scale the gradients would flush to zero."""
    case = make_strip(48, 80, 32, 16, torch.float16, seed=4, device=DEV, swap_rows=True)
    g = 1e-9 * _weights(48)
    got, want, floor = run(case, torch.float16, g=g)
    # gradients are linear in g: compare them per unit g so that no absolute floor hides a flush
    got = (got[0], *(t / 1e-9 for t in got[1:]))
    want = (want[0], *(t / 1e-9 for t in want[1:]))
    compare(got, want, 1e-2, 2e-2, floor / 1e-9)


@pytest.mark.parametrize("want_grads", [False, True])
def test_first_tuned_call_is_right(monkeypatch, want_grads):
    """Two configs of different blocks tune on the same buffers (the smaller, benchmarked first,
    loses and leaves partials the winner does not overwrite); the first call matches."""
    from gapops.triton.configs import _cfg
    calls = tune_under_interpreter(monkeypatch, {
        "fwd": [_cfg(4, 1, BM=32, BN=32, BK=32), _cfg(4, 1, BM=64, BN=64, BK=32)],
        "gstrip": [_cfg(4, 1, BM=32, BN=32, BK=32), _cfg(4, 1, BM=64, BN=64, BK=32)]})
    case = make_strip(100, 200, 32, 50, torch.float32, seed=12, device=DEV, swap_rows=True)
    got, want, floor = run(case, torch.float32, g=_weights(100), want_grads=want_grads)
    compare(got, want, 1e-5, 1e-4, floor)
    assert len(calls) >= 2


@pytest.mark.parametrize("want_grads", [False, True])
def test_deterministic_repeats_bits(want_grads):
    case = make_strip(150, 200, 40, 30, torch.bfloat16, seed=19, device=DEV, swap_rows=True)
    outs = [run(case, torch.bfloat16, g=_weights(150), want_grads=want_grads,
                deterministic=True)[0] for _ in range(2)]
    for x, y in zip(*outs):
        assert torch.equal(x, y)


def test_empty_strips_and_bad_g_row():
    sig = _sig()
    case = make_strip(4, 6, 3, 0, torch.float32, seed=23, device=DEV)
    args = list(sigmoid_args(case, torch.float32, -2.0))
    no_rows = list(args)
    for i in (0, 1, 6):  # a, a_alt, a_inv_norm with no rows
        no_rows[i] = no_rows[i][:0]
    loss, da, db, ds, dbias = sig.sigmoid_strip(*no_rows, None, True, True, False)
    assert loss.shape == (0,) and da.shape == (0, 3) and db.shape == (6, 3)
    assert db.abs().sum() == 0 and ds == 0 and dbias == 0
    with pytest.raises(ValueError, match="g_row"):
        sig.sigmoid_strip(*args, torch.ones(5, device=DEV), True, True, False)
