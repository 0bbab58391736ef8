"""The sigmoid (SigLIP) strip (docs/design.md section 2.6), every backend that has one against
``reference_sigmoid_strip`` in float64 on the same rounded inputs.

Each backend's sigmoid_strip is called directly (positional arguments of the op schema) on the
awkward strips of tests/helpers.py (n, m, d not multiples of any block, offsets, swapped rows and
columns, strided inputs, every dtype), with and without upstream weights, every want_loss /
want_grads combination, logits far into both tails, NaN, and for determinism.
"""
import pytest
import torch

from gapops import _dispatch
from gapops._dtypes import accumulation_dtype
from gapops.reference import reference_sigmoid_strip
from helpers import (STRIPS, TOL, assert_close, device_for, intra_op_threads, make_strip,
                     strip_args)

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
OUTPUTS = ("row_loss", "grad_a", "grad_b", "grad_scale", "grad_bias")


def sigmoid_strip_kernels() -> dict:
    """{backend: (sigmoid_strip, why it cannot run here or None)} for every backend of
    gapops._dispatch (a backend without a sigmoid strip in this build is skipped with the reason
    the dispatcher gives)."""
    kernels = {}
    for name, status in _dispatch.backends("sigmoid").items():
        runs = status == "available"
        kernels[name] = (_dispatch.sigmoid_kernel(name) if runs else None, None if runs else status)
    return kernels


def _backend_params():
    params = []
    for name, (_, why) in sigmoid_strip_kernels().items():
        marks = [] if why is None else [pytest.mark.skip(reason=f"{name}: {why}")]
        if device_for(name) == "cuda":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


BACKENDS = _backend_params()


def sigmoid_args(case, acc, bias):
    """Positional arguments of sigmoid_strip up to offset: the strip's routed rows, inverse norms
    and scale (helpers.strip_args, without the softmax positives), and the bias."""
    a, a_alt, a_swap, b, b_alt, b_swap, ra, rb, _, _, scale, offset = strip_args(case, acc)
    return (a, a_alt, a_swap, b, b_alt, b_swap, ra, rb, scale,
            torch.tensor(bias, dtype=acc, device=scale.device), offset)


def run_both(backend, case, dtype, bias, g_row=None, want_loss=True, want_grads=True,
             deterministic=False):
    """(backend's outputs, the float64 reference's) on the same rounded inputs."""
    kernel, _ = sigmoid_strip_kernels()[backend]
    acc = accumulation_dtype(dtype)
    got_args, want_args = sigmoid_args(case, acc, bias), sigmoid_args(case, torch.float64, bias)
    want_args = tuple(t.cpu() if isinstance(t, torch.Tensor) else t for t in want_args)
    got_g = None if g_row is None else g_row.to(case["device"], acc)
    got = kernel(*got_args, got_g, want_loss, want_grads, deterministic)
    want = reference_sigmoid_strip(*want_args, g_row, want_loss, want_grads)
    return got, want


def check(got, want, fwd_tol, bwd_tol):
    """row_loss within fwd_tol, the gradients within bwd_tol (relative, helpers.assert_close);
    outputs the flags leave out must be empty in both, their grad_scale and grad_bias 0."""
    if want[0].numel():
        assert_close(got[:1], want[:1], fwd_tol, OUTPUTS[:1])
    else:
        assert got[0].numel() == 0
    if want[1].numel():
        # grad_scale's error against at least 1e-3 of the loss scale (helpers.assert_close)
        assert_close(got[1:], want[1:], bwd_tol, OUTPUTS[1:], 1e-3 * got[1].shape[0])
    else:
        assert got[1].numel() == 0 and got[2].numel() == 0
        assert float(got[3]) == 0.0 and float(got[4]) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,m,d,offset", STRIPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).replace("torch.", ""))
def test_sigmoid_strip_matches_reference(backend, n, m, d, offset, dtype):
    case = make_strip(n, m, d, offset, dtype, seed=n + 7 * m + d, device=device_for(backend),
                      scale=10.0)
    fwd_tol, bwd_tol = TOL[dtype]
    got, want = run_both(backend, case, dtype, bias=-10.0)
    check(got, want, fwd_tol, bwd_tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("swap_rows,swap_cols,normalize,strided", [
    (True, False, True, False), (False, True, True, False), (True, True, False, False),
    (True, True, True, True)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=lambda t: str(t).replace("torch.", ""))
def test_sigmoid_strip_routing_norms_strides(backend, swap_rows, swap_cols, normalize, strided,
                                             dtype):
    # without normalization the cosines are raw dots (|cos| ~ d): a small scale keeps z sane
    scale = 7.0 if normalize else 0.2
    case = make_strip(37, 52, 21, 11, dtype, seed=5, device=device_for(backend),
                      swap_rows=swap_rows, swap_cols=swap_cols, normalize=normalize,
                      strided=strided, scale=scale)
    fwd_tol, bwd_tol = TOL[dtype]
    got, want = run_both(backend, case, dtype, bias=-3.0)
    check(got, want, fwd_tol, bwd_tol)


def _multi_tile_case(backend, dtype=torch.float32, **kw):
    # several row blocks (CPU: 256 rows) and column tiles (512 columns), positives crossing tiles
    n, m = (600, 1100) if backend in ("cpu", "cuda") else (70, 150)
    return make_strip(n, m, 40, (m - n) // 2, dtype, seed=11, device=device_for(backend), **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("want_loss,want_grads", [(True, True), (True, False), (False, True),
                                                  (False, False)])
@pytest.mark.parametrize("weights", [False, True], ids=["ones", "g_row"])
@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_sigmoid_strip_flags_and_upstream(backend, want_loss, want_grads, weights, deterministic):
    case = _multi_tile_case(backend, scale=10.0)
    n, d = case["feats"][0].shape
    g_row = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got, want = run_both(backend, case, torch.float32, -10.0, g_row if weights else None,
                         want_loss, want_grads, deterministic)
    m = case["feats"][2].shape[0]
    assert tuple(got[0].shape) == ((n,) if want_loss else (0,))
    assert tuple(got[1].shape) == ((n, d) if want_grads else (0, d))
    assert tuple(got[2].shape) == ((m, d) if want_grads else (0, d))
    assert got[3].shape == () and got[4].shape == ()
    check(got, want, 1e-5, 1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale,bias", [(100.0, -12.0), (10.0, -10.0)])
def test_sigmoid_strip_trained_and_initial_logits(backend, scale, bias):
    """open_clip's initialization (10, -10) and trained values (~100, ~-12): z spans about
    [-110, 90], most pairs far in the negative tail, the aligned positives in the positive one."""
    case = _multi_tile_case(backend, scale=scale, aligned=4.0)
    got, want = run_both(backend, case, torch.float32, bias)
    check(got, want, 1e-5, 1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("z_pos,z_neg", [(20.0, -30.0), (-20.0, 30.0), (0.5, -0.5)])
def test_sigmoid_strip_tails_elementwise_fp32(backend, z_pos, z_neg):
    """Identity features (cos = 1 for the positives, 0 elsewhere): every positive pair at z_pos
    and every negative at z_neg. In fp32 each row's loss (at (20, -30): ~2e-9 + 39 * 9e-14) and
    every gradient entry must keep a small relative error, which log(1 + x) or 1 - sigmoid would
    lose entirely."""
    n = 40  # columns on both sides of the positive and through the vector loops' tails
    dev = device_for(backend)
    eye = torch.eye(n, dtype=torch.float32, device=dev)
    ones = torch.ones(n, dtype=torch.float32, device=dev)
    scale = torch.tensor(z_pos - z_neg, dtype=torch.float32, device=dev)
    bias = torch.tensor(z_neg, dtype=torch.float32, device=dev)
    kernel, _ = sigmoid_strip_kernels()[backend]
    got = kernel(eye, eye, None, eye, eye, None, ones, ones, scale, bias, 0, None, True, True,
                 False)
    e64 = eye.cpu().double()
    o64 = torch.ones(n, dtype=torch.float64)
    want = reference_sigmoid_strip(e64, e64, None, e64, e64, None, o64, o64, scale.cpu().double(),
                                   bias.cpu().double(), 0, None, True, True)
    for name, g, w in zip(OUTPUTS, got, want):
        g = g.cpu().double()
        err = float(((g - w).abs() / w.abs().clamp_min(1e-300)).max())
        assert err < 2e-6, f"{name}: elementwise relative error {err:.1e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_strip_nan_in_nan_out(backend):
    case = _multi_tile_case(backend, scale=10.0)
    case["feats"][0][5, 3] = float("nan")  # row 5 of a (no swap mask: always read)
    got, want = run_both(backend, case, torch.float32, -10.0)
    assert bool(torch.isnan(got[0][5])) and bool(torch.isnan(got[1][5]).all())
    # every column meets row 5: all of grad_b is NaN, as are the sums
    assert bool(torch.isnan(got[2]).all()) and bool(torch.isnan(want[2]).all())
    assert bool(torch.isnan(got[3])) and bool(torch.isnan(got[4]))
    # the other rows stay finite and right
    assert_close(got[:2], want[:2], 1e-5, OUTPUTS[:2])


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id != "reference"])
@pytest.mark.parametrize("want_grads", [True, False], ids=["grads", "loss_only"])
def test_sigmoid_strip_deterministic_same_bits(backend, want_grads):
    """deterministic=True: the same bits on every run and, on the CPU, for 1, 2 and 3 threads."""
    kernel, _ = sigmoid_strip_kernels()[backend]
    case = _multi_tile_case(backend, swap_rows=True, swap_cols=True, scale=10.0)
    args = sigmoid_args(case, torch.float32, -10.0)
    n = case["feats"][0].shape[0]
    g_row = torch.linspace(-1, 2, n, device=case["device"])
    thread_counts = (1, 2, 3) if backend == "cpu" else (torch.get_num_threads(),) * 2
    results = []
    for threads in thread_counts:
        with intra_op_threads(threads):
            results.append(kernel(*args, g_row, True, want_grads, True))
    results.append(kernel(*args, g_row, True, want_grads, True))
    for other in results[1:]:
        for name, x, y in zip(OUTPUTS, results[0], other):
            assert torch.equal(x, y), f"{name} differs between runs"


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id in ("cpu", "cuda")])
def test_sigmoid_strip_bad_arguments_named(backend):
    kernel, _ = sigmoid_strip_kernels()[backend]
    case = make_strip(9, 12, 5, 2, torch.float32, seed=1, device=device_for(backend))
    args = list(sigmoid_args(case, torch.float32, -1.0))
    with pytest.raises(RuntimeError, match="bias"):
        kernel(*args[:9], torch.zeros(2), args[10], None, True, True, False)
    with pytest.raises(RuntimeError, match="g_row"):
        kernel(*args, torch.zeros(8), True, True, False)
    with pytest.raises(RuntimeError, match="offset"):
        kernel(*args[:10], 4, None, True, True, False)
