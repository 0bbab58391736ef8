"""The per-tile math of the CUDA kernels (csrc/common/tile_math.h), run on the CPU.

The helpers are __host__ __device__: the CUDA strip kernels compile the same source, so checking
them here through the test-only ops torch.ops.gapops_testing.* (csrc/testing/tile_math_ops.cpp,
their own library namespace, compiled into every build) proves the elementwise / per-row math of
the GPU path without a GPU. References are torch float64.
"""
import math

import pytest
import torch

from gapops import _extension

_mod, _why = _extension.load()
pytestmark = pytest.mark.skipif(_mod is None, reason=f"gapops._C is not built: {_why}")

ops = torch.ops.gapops_testing
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
    got = ops.fast_exp(x)
    want = torch.exp(x.double())
    err = ulp_error(got, want)
    assert float(err.max()) <= 2.0, f"max ulp error {float(err.max())} at x={float(x[err.argmax()])}"
    assert float(err.mean()) < 0.6


def test_fast_exp_float32_exact_values():
    got = ops.fast_exp(torch.tensor([0.0, -0.0], dtype=torch.float32))
    assert torch.equal(got, torch.ones(2))


def test_fast_exp_float32_underflows_to_exact_zero():
    x = torch.tensor([-87.34, -87.5, -88.0, -100.0, -1e4, -3.4e38, -INF], dtype=torch.float32)
    got = ops.fast_exp(x)
    assert torch.equal(got, torch.zeros_like(x))
    # the first normal float is still produced just above the cutoff
    edge = ops.fast_exp(torch.tensor([-87.33], dtype=torch.float32))
    assert float(edge) > 0 and float(ulp_error(edge, torch.exp(torch.tensor([-87.33], dtype=torch.float32).double()))) <= 2


def test_fast_exp_float32_nan_and_large():
    got = ops.fast_exp(torch.tensor([NAN, 88.3, 1e4, INF], dtype=torch.float32))
    assert math.isnan(float(got[0]))
    assert torch.isfinite(got[1:]).all()  # clamped at the largest float exponent, never inf
    assert float(got[1]) > 1e38


def test_fast_exp_float64_is_exp():
    x = torch.linspace(-700, 700, 10001, dtype=torch.float64)
    torch.testing.assert_close(ops.fast_exp(x), torch.exp(x), rtol=1e-15, atol=0)


# ------------------------------------------------------------------------------ lse_merge
def _lse(m, s):
    """log(sum e^x) of a state: rel_lse_finalize without a positive."""
    return ops.rel_lse_finalize(m, s, torch.zeros(m.shape, dtype=torch.bool))


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
    m, s = ops.lse_merge(m1.to(dtype), s1.to(dtype), m2.to(dtype), s2.to(dtype))
    got = _lse(m, s)
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
    a = ops.lse_merge(*args)
    b = ops.lse_merge(args[2], args[3], args[0], args[1])
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
    m, s = ops.lse_merge(t(-INF, -INF, 2.0), t(0.0, 0.0, 3.0), t(-INF, 1.5, -INF),
                               t(0.0, 4.0, 0.0))
    assert torch.equal(m, t(-INF, 1.5, 2.0))
    assert torch.equal(s, t(0.0, 4.0, 3.0))
    lse = _lse(m, s)
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
    m, s = ops.lse_merge(m1, s1, m2, s2)
    assert torch.isnan(_lse(m, s)).all()


# ------------------------------------------------------- relative statistics (strip v2)
def _rel_state(terms: torch.Tensor):
    """The kernels' state of each row of terms (float64): M = max(0, max), S = sum e^(x - M)."""
    m = terms.max(dim=1).values.clamp_min(0.0)
    return m, torch.exp(terms - m[:, None]).sum(dim=1)


def _log1p_sum_exp(terms: torch.Tensor) -> torch.Tensor:
    """log(1 + sum e^x) per row, float64, accurate also when the sum is tiny."""
    m = terms.max(dim=1).values.clamp_min(0.0)
    rest = torch.exp(terms - m[:, None]).sum(dim=1)
    return torch.where(m == 0, torch.log1p(rest), m + torch.log(torch.exp(-m) + rest))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rel_lse_finalize_with_positive(dtype):
    g = torch.Generator().manual_seed(4)
    # rows from "positive dominates by far" (terms ~ -40, result ~ 1e-17) to "lost among many"
    shift = torch.linspace(-40.0, 12.0, 400, dtype=torch.float64)[:, None]
    terms = torch.randn(400, 33, generator=g, dtype=torch.float64) * 3 + shift
    m, s = _rel_state(terms)
    got = ops.rel_lse_finalize(m.to(dtype), s.to(dtype), torch.ones(400, dtype=torch.bool))
    want = _log1p_sum_exp(terms)
    # relative accuracy down to the smallest values: no cancellation against the positive's 1
    eps = torch.finfo(dtype).eps
    assert float(((got.double() - want).abs() / want).max()) < 8 * eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rel_lse_finalize_without_positive(dtype):
    g = torch.Generator().manual_seed(5)
    terms = torch.randn(300, 17, generator=g, dtype=torch.float64) * 5 + torch.linspace(-30, 30, 300,
                                                                                      dtype=torch.float64)[:, None]
    m, s = _rel_state(terms)
    got = ops.rel_lse_finalize(m.to(dtype), s.to(dtype), torch.zeros(300, dtype=torch.bool))
    want = torch.logsumexp(terms, dim=1)
    tol = 1e-13 if dtype == torch.float64 else 4e-6
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rel_lse_finalize_edges(dtype):
    t = lambda *v: torch.tensor(v, dtype=dtype)  # noqa: E731
    has = torch.tensor([True, False, True, True, False, True])
    # no terms at all (state (0, 0)): log 1 = 0 with the positive, log 0 = -inf without; every
    # term underflowed without the positive: -inf; a NaN anywhere stays NaN; a large maximum
    got = ops.rel_lse_finalize(t(0.0, 0.0, NAN, 0.0, 0.0, 200.0), t(0.0, 0.0, 1.0, NAN, 0.0, 1.0), has)
    assert got[0] == 0.0 and got[1] == -INF and got[4] == -INF
    assert math.isnan(float(got[2])) and math.isnan(float(got[3]))
    assert abs(float(got[5]) - 200.0) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("parts", [1, 2, 5])
def test_rel_states_merge_across_tiles(dtype, parts):
    """A row cut into tiles: per-tile states (M >= 0) merged with lse_merge, then finalized."""
    g = torch.Generator().manual_seed(parts)
    terms = torch.randn(200, 40, generator=g, dtype=torch.float64) * 4 + torch.linspace(
        -25, 8, 200, dtype=torch.float64)[:, None]
    m, s = None, None
    for chunk in terms.chunk(parts, dim=1):
        cm, cs = (v.to(dtype) for v in _rel_state(chunk))
        m, s = (cm, cs) if m is None else ops.lse_merge(m, s, cm, cs)
    got = ops.rel_lse_finalize(m, s, torch.ones(200, dtype=torch.bool))
    want = _log1p_sum_exp(terms)
    eps = torch.finfo(dtype).eps
    assert float(((got.double() - want).abs() / want).max()) < 16 * eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_positive_grad_weight_no_cancellation(dtype):
    g = torch.Generator().manual_seed(6)
    n = 2000
    row_lse = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-30, 3, generator=g))
    col_lse = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-30, 3, generator=g))
    g_row = torch.rand(n, generator=g, dtype=torch.float64) + 0.01
    g_col = torch.rand(n, generator=g, dtype=torch.float64) + 0.01
    args = [v.to(dtype) for v in (g_row, row_lse, g_col, col_lse)]
    got = ops.positive_grad_weight(*args)
    gr, rl, gc, cl = (v.double() for v in args)
    want = gr * torch.expm1(-rl) + gc * torch.expm1(-cl)
    # both terms are negative: relative accuracy even for lse ~ 1e-13, where e^-lse - 1 cancels
    eps = torch.finfo(dtype).eps
    assert float(((got.double() - want).abs() / want.abs()).max()) < 8 * eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pair_grad_weight(dtype):
    g = torch.Generator().manual_seed(7)
    n = 3000
    cos = torch.empty(n, dtype=torch.float64).uniform_(-1, 1, generator=g)
    a_pos = torch.empty(n, dtype=torch.float64).uniform_(-1, 1, generator=g)
    b_pos = torch.empty(n, dtype=torch.float64).uniform_(-1, 1, generator=g)
    s = 14.0
    # complete statistics are at least the term's own log(1 + e^x)
    row_lse = torch.logaddexp(torch.zeros(n, dtype=torch.float64), s * (cos - a_pos)) + \
        torch.rand(n, generator=g, dtype=torch.float64) * 5
    col_lse = torch.logaddexp(torch.zeros(n, dtype=torch.float64), s * (cos - b_pos)) + \
        torch.rand(n, generator=g, dtype=torch.float64) * 5
    g_row = torch.rand(n, generator=g, dtype=torch.float64)
    g_col = torch.rand(n, generator=g, dtype=torch.float64)
    args = [v.to(dtype) for v in (cos - a_pos, cos - b_pos, row_lse, col_lse, g_row, g_col)]
    got_g, got_term = ops.pair_grad_weight(torch.tensor(s), *args)
    dr, dc, rl, cl, gr, gc = (v.double() for v in args)
    p, q = gr * torch.exp(s * dr - rl), gc * torch.exp(s * dc - cl)
    tol = 1e-14 if dtype == torch.float64 else 4e-6
    torch.testing.assert_close(got_g.double(), p + q, rtol=tol, atol=0)
    # the scale term's two parts can have opposite signs: measure against their magnitudes
    err = (got_term.double() - (p * dr + q * dc)).abs() / (p * dr.abs() + q * dc.abs()).clamp_min(1e-300)
    assert float(err.max()) < 4 * tol


def test_pair_grad_weight_underflow_and_huge_scale():
    t = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    g, term = ops.pair_grad_weight(torch.tensor(100.0), t(-1.9), t(-1.9), t(0.0), t(0.0), t(1.0), t(1.0))
    assert float(g) == 0.0 and float(term) == 0.0
    # at s = 1e21 the statistic (the term itself, rounded) may fall below s dr: the exponent is
    # clamped at 0, so the weight stays g_row + g_col instead of overflowing
    s, dr = 1e21, 0.3
    lse = float(torch.tensor(s * dr, dtype=torch.float32)) * (1 - 2**-23)
    g, _ = ops.pair_grad_weight(torch.tensor(s), t(dr), t(dr), t(lse), t(lse), t(1.0), t(2.0))
    assert float(g) == 3.0

