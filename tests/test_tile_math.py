"""The per-tile math of the CUDA kernels (csrc/common/tile_math.h), run on the CPU.

The helpers are __host__ __device__: the CUDA strip kernels compile the same source, so checking
them here through the test-only ops torch.ops.gapops._tile_* (csrc/cpu/tile_math_ops.cpp) proves
the elementwise / per-row math of the GPU path without a GPU. References are torch float64.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from gapops import _extension

_mod, _why = _extension.load()
pytestmark = pytest.mark.skipif(_mod is None or not hasattr(torch.ops.gapops, "_tile_fast_exp"),
                                reason=f"gapops._C without the test-only tile ops: {_why}")

ops = torch.ops.gapops
INF = math.inf
NAN = math.nan


def ulp_error(got: torch.Tensor, want64: torch.Tensor) -> torch.Tensor:
    """|got - want| in units of the float32 spacing at want (float64 math)."""
    w32 = want64.float()
    spacing = (torch.nextafter(w32.abs(), torch.tensor(INF)) - w32.abs()).double()
    return (got.double() - want64).abs() / spacing


# ------------------------------------------------------------------------------- fast_exp
def test_fast_exp_float32_within_2ulp_on_whole_range():
    x = torch.linspace(-87.0, 88.0, 2_000_001, dtype=torch.float32)
    x = torch.cat([x, torch.empty(200_000).uniform_(-87.0, 88.0, generator=torch.Generator().manual_seed(0))])
    x = torch.cat([x, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 0.34657359, -0.34657359])])
    got = ops._tile_fast_exp(x)
    want = torch.exp(x.double())
    err = ulp_error(got, want)
    assert float(err.max()) <= 2.0, f"max ulp error {float(err.max())} at x={float(x[err.argmax()])}"
    assert float(err.mean()) < 0.6


def test_fast_exp_float32_exact_values():
    got = ops._tile_fast_exp(torch.tensor([0.0, -0.0], dtype=torch.float32))
    assert torch.equal(got, torch.ones(2))


def test_fast_exp_float32_underflows_to_exact_zero():
    x = torch.tensor([-87.34, -87.5, -88.0, -100.0, -1e4, -3.4e38, -INF], dtype=torch.float32)
    got = ops._tile_fast_exp(x)
    assert torch.equal(got, torch.zeros_like(x))
    # the first normal float is still produced just above the cutoff
    edge = ops._tile_fast_exp(torch.tensor([-87.33], dtype=torch.float32))
    assert float(edge) > 0 and float(ulp_error(edge, torch.exp(torch.tensor([-87.33], dtype=torch.float32).double()))) <= 2


def test_fast_exp_float32_nan_and_large():
    got = ops._tile_fast_exp(torch.tensor([NAN, 88.3, 1e4, INF], dtype=torch.float32))
    assert math.isnan(float(got[0]))
    assert torch.isfinite(got[1:]).all()  # clamped at the largest float exponent, never inf
    assert float(got[1]) > 1e38


def test_fast_exp_float64_is_exp():
    x = torch.linspace(-700, 700, 10001, dtype=torch.float64)
    torch.testing.assert_close(ops._tile_fast_exp(x), torch.exp(x), rtol=1e-15, atol=0)


# ------------------------------------------------------------------------------ lse_merge
def _state(values: torch.Tensor):
    """(max, sum e^(v - max)) of each row of values, float64."""
    m = values.max(dim=1).values
    s = torch.exp(values - m[:, None]).sum(dim=1)
    return m, s


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lse_merge_matches_logaddexp(dtype):
    g = torch.Generator().manual_seed(1)
    v1 = torch.randn(1000, 7, generator=g, dtype=torch.float64) * 30
    v2 = torch.randn(1000, 5, generator=g, dtype=torch.float64) * 30 + 10
    m1, s1 = _state(v1)
    m2, s2 = _state(v2)
    m, s = ops._tile_lse_merge(m1.to(dtype), s1.to(dtype), m2.to(dtype), s2.to(dtype))
    got = ops._tile_lse_finalize(m, s)
    want = torch.logsumexp(torch.cat([v1, v2], dim=1), dim=1)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * 50)
    assert torch.equal(m.double(), torch.maximum(m1.to(dtype), m2.to(dtype)).double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lse_merge_is_symmetric(dtype):
    g = torch.Generator().manual_seed(2)
    m1, s1 = torch.randn(500, generator=g), torch.rand(500, generator=g) * 10 + 1
    m2, s2 = torch.randn(500, generator=g), torch.rand(500, generator=g) * 10 + 1
    args = [t.to(dtype) for t in (m1, s1, m2, s2)]
    a = ops._tile_lse_merge(*args)
    b = ops._tile_lse_merge(args[2], args[3], args[0], args[1])
    # the two threads of a CUDA row pair merge in opposite orders: the max agrees exactly, the
    # sum to rounding (FMA contraction makes the two orders differ in the last bit; only one
    # thread of the pair writes results, so the kernels stay deterministic)
    assert torch.equal(a[0], b[0])
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(a[1], b[1], rtol=4 * eps, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lse_merge_empty_states(dtype):
    t = lambda *v: torch.tensor(v, dtype=dtype)  # noqa: E731
    # empty + empty stays empty (no NaN), empty + x = x, x + empty = x
    m, s = ops._tile_lse_merge(t(-INF, -INF, 2.0), t(0.0, 0.0, 3.0), t(-INF, 1.5, -INF),
                               t(0.0, 4.0, 0.0))
    assert torch.equal(m, t(-INF, 1.5, 2.0))
    assert torch.equal(s, t(0.0, 4.0, 3.0))
    lse = ops._tile_lse_finalize(m, s)
    assert lse[0] == -INF
    assert torch.allclose(lse[1:].double(), torch.tensor([1.5 + math.log(4.0), 2.0 + math.log(3.0)],
                                                         dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lse_merge_nan_propagates(dtype):
    t = lambda *v: torch.tensor(v, dtype=dtype)  # noqa: E731
    m1 = t(NAN, 1.0, NAN, -INF, 0.0, 1.0)
    s1 = t(1.0, 1.0, 1.0, 0.0, 1.0, NAN)
    m2 = t(1.0, NAN, -INF, NAN, 0.0, 0.0)
    s2 = t(1.0, 1.0, 0.0, 1.0, NAN, 1.0)
    m, s = ops._tile_lse_merge(m1, s1, m2, s2)
    assert torch.isnan(ops._tile_lse_finalize(m, s)).all()


# ------------------------------------------------------------- lse_partial (rows of a tile)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("split", [1, 2, 3, 64])
@pytest.mark.parametrize("cols", [1, 2, 5, 64, 130])
def test_lse_rows_split_like_the_kernel(dtype, split, cols):
    g = torch.Generator().manual_seed(cols * 100 + split)
    x = torch.randn(37, cols, generator=g, dtype=torch.float64).to(dtype)
    scale = torch.tensor(42.5)
    got = ops._tile_lse_rows(x, scale, split)
    want = torch.logsumexp(x.double() * 42.5, dim=1)
    tol = 1e-12 if dtype == torch.float64 else 4e-6
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * 10)


def test_lse_rows_edge_rows():
    x = torch.tensor([[-INF, -INF, -INF], [0.0, -INF, 1.0], [1.0, NAN, 0.0], [1e3, 1e3, 1e3],
                      [-1e3, -1e3, -1e3]], dtype=torch.float32)
    got = ops._tile_lse_rows(x, torch.tensor(1.0), 2)
    want = torch.logsumexp(x.double(), dim=1)
    assert got[0] == -INF
    assert torch.isnan(got[2])
    keep = torch.tensor([1, 3, 4])
    torch.testing.assert_close(got[keep].double(), want[keep], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------ grad_weight
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grad_weight(dtype):
    g = torch.Generator().manual_seed(3)
    n = 4000
    logit = torch.randn(n, generator=g, dtype=torch.float64) * 20
    row_lse = logit + torch.rand(n, generator=g, dtype=torch.float64) * 30
    col_lse = logit + torch.rand(n, generator=g, dtype=torch.float64) * 30
    g_row = torch.rand(n, generator=g, dtype=torch.float64) / 1000
    g_col = torch.rand(n, generator=g, dtype=torch.float64) / 1000
    positive = torch.rand(n, generator=g) < 0.3
    args = [t.to(dtype) for t in (logit, row_lse, col_lse, g_row, g_col)]
    got = ops._tile_grad_weight(*args, positive)
    l64, r64, c64, gr64, gc64 = (t.double() for t in args)
    want = gr64 * torch.exp(l64 - r64) + gc64 * torch.exp(l64 - c64) - positive.double() * (gr64 + gc64)
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    # relative to the size of the terms (the positive entries cancel)
    scale = gr64 + gc64
    assert float(((got.double() - want).abs() / scale).max()) < tol


def test_grad_weight_underflow_and_inf_lse():
    t = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    got = ops._tile_grad_weight(t(-200.0, 0.0), t(0.0, INF), t(0.0, INF), t(1.0, 1.0), t(2.0, 2.0),
                                torch.tensor([False, False]))
    assert torch.equal(got, t(0.0, 0.0))


# ------------------------------------------------------------------------ normalize_backward
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 3, 64, 257])
def test_normalize_backward_matches_autograd(dtype, d):
    g = torch.Generator().manual_seed(d)
    a = torch.randn(11, d, generator=g, dtype=torch.float64) * 3
    a[0] = 0.0  # the eps branch
    a[1] *= 1e-14
    up = torch.randn(11, d, generator=g, dtype=torch.float64)
    a_req = a.clone().requires_grad_()
    (F.normalize(a_req, dim=1, eps=1e-12) * up).sum().backward()
    a_hat = F.normalize(a, dim=1, eps=1e-12)
    norm = a.norm(dim=1)
    got = ops._tile_normalize_backward(a_hat.to(dtype), up.to(dtype), norm.to(dtype), 1e-12)
    want = a_req.grad
    rows = slice(2, None)  # rows with norm above eps: relative comparison
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got[rows].double(), want[rows], rtol=tol, atol=tol)
    # norm <= eps: d_hat / eps exactly (a_hat is 0 for the zero row)
    torch.testing.assert_close(got[0].double(), (up[0].to(dtype) / dtype_eps(dtype)).double(),
                               rtol=1e-6, atol=0)


def dtype_eps(dtype):
    return torch.tensor(1e-12, dtype=dtype)
