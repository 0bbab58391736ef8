"""backend='cuda' (csrc/cuda/strip.cu): what tests/test_strip.py does not already check.

tests/test_strip.py runs the cuda strip against the reference strip on its awkward shapes; this
file adds the CUDA-specific parts: the strip in several chunks (forced by
GAPOPS_CUDA_SCRATCH_MB), fp16 with tiny gradient weights (the power-of-two scaling of H), the
TF32 path, bit-identical repeats, CUDA-graph capture (scale read on the device, no host sync),
int64 indexing past 2^31 elements, the sigmoid strip against its float64 oracle, and the public
loss end to end. Everything needs a CUDA device and an extension built with nvcc: without them
every test skips.
"""
import pytest
import torch

import gapops
from gapops._dtypes import accumulation_dtype
from gapops.reference import (reference_contrastive_loss, reference_sigmoid_strip,
                              reference_strip_backward, reference_strip_forward)
from helpers import (TOL, assert_close, loss_and_grads, make_strip, oracle, rel_err,
                     strip_args)


def _cuda_status():
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    why = gapops.backends().get("cuda")
    return None if why == "available" else why


_WHY = _cuda_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_WHY is not None, reason=f"cuda backend: {_WHY}")]

DEV = "cuda"
OPS = torch.ops.gapops
TF32_TOL = (5e-3, 3e-2)  # fp32 inputs rounded to 10-bit TF32 operands (as in the emulation)


@pytest.fixture(autouse=True)
def _exact_fp32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 products in IEEE fp32 (torch's default)
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def run_cuda(case, dtype, g_scale=1.0, deterministic=False):
    """Forward and backward of the cuda strip and of the float64 oracle on the same inputs
    (backward with the oracle's statistics), as tests/test_strip.py's run_both."""
    acc = accumulation_dtype(dtype)
    got_args = strip_args(case, acc)
    want_args = tuple(t.cpu() if isinstance(t, torch.Tensor) else t
                      for t in strip_args(case, torch.float64))
    got_f = OPS.strip_forward(*got_args)
    want_f = reference_strip_forward(*want_args)
    n, m = got_args[0].shape[0], got_args[3].shape[0]
    g = torch.Generator().manual_seed(0)
    g_row = g_scale * torch.rand(n, generator=g, dtype=torch.float64)
    g_col = g_scale * torch.rand(m, generator=g, dtype=torch.float64)
    got_b = OPS.strip_backward(*got_args, want_f[0].to(DEV, acc), want_f[1].to(DEV, acc),
                               g_row.to(DEV, acc), g_col.to(DEV, acc), deterministic)
    want_b = reference_strip_backward(*want_args, *want_f, g_row, g_col)
    return got_f, want_f, got_b, want_b, 1e-3 * float(g_row.sum() + g_col.sum())


def check(case, dtype, tol=None, **kw):
    fwd_tol, bwd_tol = tol or TOL[dtype]
    got_f, want_f, got_b, want_b, floor = run_cuda(case, dtype, **kw)
    assert_close(got_f, want_f, fwd_tol, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, bwd_tol, ("grad_a", "grad_b", "grad_scale"), floor)


# ------------------------------------------------------------------ the strip in chunks
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16],
                         ids=str)
@pytest.mark.parametrize("swap", [False, True], ids=["plain", "swapped"])
def test_g_strip_chunks_and_column_groups(monkeypatch, dtype, swap):
    """A 1 MiB budget against 40000 columns: chunks of a few rows (plus a short last one), so
    every row's and column's statistics and the weight products are assembled from many chunks."""
    monkeypatch.setenv("GAPOPS_CUDA_SCRATCH_MB", "1")
    case = make_strip(333, 40000, 72, 3000, dtype, seed=21, device=DEV, swap_rows=swap,
                      swap_cols=swap, strided=swap)
    check(case, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_budget_does_not_change_the_result_beyond_rounding(monkeypatch, dtype):
    case = make_strip(300, 300, 64, 0, dtype, seed=22, device=DEV)
    args = strip_args(case, accumulation_dtype(dtype))
    stats = OPS.strip_forward(*args)
    g = torch.full((300,), 1 / 300, device=DEV, dtype=accumulation_dtype(dtype))
    whole = OPS.strip_backward(*args, *stats, g, g, True)
    monkeypatch.setenv("GAPOPS_CUDA_SCRATCH_MB", "1")
    pieces = OPS.strip_backward(*args, *stats, g, g, True)
    for x, y in zip(whole, pieces):
        assert rel_err(x, y) < (1e-6 if dtype == torch.float32 else 1e-2)


# ------------------------------------------------------------------ fp16 and the scaled H
@pytest.mark.parametrize("swap_cols", [False, True])
def test_fp16_tiny_gradient_weights(swap_cols):
    """g ~ 1e-9: s rho sigma G is far below fp16's smallest subnormal (6e-8); H is stored times
    2^k, so the gradients keep fp16 precision instead of vanishing."""
    case = make_strip(70, 90, 24, 10, torch.float16, seed=4, device=DEV, swap_cols=swap_cols)
    _, _, got_b, want_b, _ = run_cuda(case, torch.float16, g_scale=1e-9)
    for gv, wv in zip(got_b[:2], want_b[:2]):
        assert float((gv.cpu().double() - wv).norm() / wv.norm()) < TOL[torch.float16][1]


def test_fp32_tf32_path():
    torch.backends.cuda.matmul.allow_tf32 = True  # restored by the fixture
    case = make_strip(200, 260, 130, 30, torch.float32, seed=13, device=DEV, swap_rows=True)
    check(case, torch.float32, tol=TF32_TOL)


# ------------------------------------------------------------------ determinism, capture
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("swap", [False, True], ids=["plain", "swapped"])
def test_repeats_are_bit_identical(monkeypatch, dtype, swap):
    monkeypatch.setenv("GAPOPS_CUDA_SCRATCH_MB", "2")
    case = make_strip(333, 520, 96, 100, dtype, seed=11, device=DEV, swap_rows=swap, swap_cols=swap)
    args = strip_args(case, accumulation_dtype(dtype))
    f1, f2 = OPS.strip_forward(*args), OPS.strip_forward(*args)
    for x, y in zip(f1, f2):
        assert torch.equal(x, y)
    g_row = torch.rand(333, device=DEV, dtype=accumulation_dtype(dtype))
    g_col = torch.rand(520, device=DEV, dtype=accumulation_dtype(dtype))
    first = OPS.strip_backward(*args, *f1, g_row, g_col, True)
    for _ in range(3):
        for x, y in zip(first, OPS.strip_backward(*args, *f1, g_row, g_col, False)):
            assert torch.equal(x, y)  # the G strip is deterministic in both modes


def test_strided_features_forward_bits():
    """Strided features are read in place: the forward sees the same values in the same order."""
    case = make_strip(70, 90, 33, 10, torch.bfloat16, seed=5, device=DEV, strided=True)
    args = strip_args(case, torch.float32)
    dense = tuple(t.contiguous() if isinstance(t, torch.Tensor) else t for t in args)
    assert not args[0].is_contiguous() and not args[3].is_contiguous()
    for x, y in zip(OPS.strip_forward(*args), OPS.strip_forward(*dense)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("swap", [False, True], ids=["plain", "swapped"])
def test_cuda_graph_capture(swap):
    """Forward and backward capture into a CUDA graph: no host sync (scale and the fp16 power of
    two stay on the device) and replays give the eager result."""
    case = make_strip(100, 130, 32, 20, torch.float16, seed=17, device=DEV, swap_rows=swap,
                      swap_cols=swap)
    args = strip_args(case, torch.float32)
    g = torch.full((100,), 0.01, device=DEV)
    gc = torch.full((130,), 0.01, device=DEV)
    eager_f = OPS.strip_forward(*args)
    eager_b = OPS.strip_backward(*args, *eager_f, g, gc, True)  # also the warm-up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out_f = OPS.strip_forward(*args)
        out_b = OPS.strip_backward(*args, *out_f, g, gc, True)
    graph.replay()
    torch.cuda.synchronize()
    for x, y in zip((*eager_f, *eager_b), (*out_f, *out_b)):
        assert torch.equal(x, y)


# ------------------------------------------------------------------ int64 indexing
def _spot_oracle(args, rows, cols, row_lse, col_lse, g_row, g_col, block=1 << 14):
    """float64 row_lse / grad_a of the strip rows `rows` and col_lse / grad_b of the columns
    `cols`, plus grad_scale, from the given statistics, in blocks (no n x m tile)."""
    a, a_alt, a_swap, b, b_alt, b_swap, ra, rb, a_pos, b_pos, s, off = args
    f64 = torch.float64
    A = a if a_swap is None else torch.where(a_swap[:, None], a_alt, a)
    B = b if b_swap is None else torch.where(b_swap[:, None], b_alt, b)
    n, m = A.shape[0], B.shape[0]
    s, ra, rb, a_pos, b_pos = (t.to(f64) for t in (s, ra, rb, a_pos, b_pos))
    rl, cl, gr, gc = (t.to(f64) for t in (row_lse, col_lse, g_row, g_col))

    def weights(i, j):  # G-derived pieces of the sub-tile rows i x columns j
        cos = ra[i, None] * (A[i].to(f64) @ B[j].to(f64).T) * rb[None, j]
        pos = (i[:, None] + off) == j[None, :]
        dr, dc = cos - a_pos[i, None], cos - b_pos[None, j]
        P = torch.exp(s * dr - rl[i, None]).masked_fill(pos, 0)
        Q = torch.exp(s * dc - cl[None, j]).masked_fill(pos, 0)
        expm = gr[i, None] * torch.expm1(-rl[i, None]) + gc[None, j] * torch.expm1(-cl[None, j])
        G = torch.where(pos, expm, gr[i, None] * P + gc[None, j] * Q)
        H = s * ra[i, None] * G * rb[None, j]
        return dr, dc, P, Q, H, pos

    want = {"row_lse": [], "grad_a": [], "col_lse": [], "grad_b": []}
    dev = A.device
    for i in rows:
        i = torch.tensor([i], device=dev)
        terms, ga = [], 0
        for j0 in range(0, m, block):
            j = torch.arange(j0, min(m, j0 + block), device=dev)
            dr, _, _, _, H, pos = weights(i, j)
            terms.append((s * dr).masked_fill(pos, float("-inf")))
            ga = ga + H @ B[j].to(f64)
        t = torch.cat(terms, 1)
        want["row_lse"].append(torch.logaddexp(torch.zeros(1, dtype=f64, device=dev),
                                               torch.logsumexp(t, 1)))
        want["grad_a"].append(ga)
    for j in cols:
        j = torch.tensor([j], device=dev)
        terms, gb = [], 0
        for i0 in range(0, n, block):
            i = torch.arange(i0, min(n, i0 + block), device=dev)
            _, dc, _, _, H, pos = weights(i, j)
            terms.append((s * dc).masked_fill(pos, float("-inf")))
            gb = gb + H.T @ A[i].to(f64)
        t = torch.cat(terms, 0).T
        lse = torch.logsumexp(t, 1)
        has_pos = bool(off <= int(j) < off + n)
        want["col_lse"].append(torch.logaddexp(torch.zeros(1, dtype=f64, device=dev), lse)
                               if has_pos else lse)
        want["grad_b"].append(gb)
    ds = 0
    for i0 in range(0, n, max(1, block * block // m)):
        i = torch.arange(i0, min(n, i0 + max(1, block * block // m)), device=dev)
        for j0 in range(0, m, block):
            j = torch.arange(j0, min(m, j0 + block), device=dev)
            dr, dc, P, Q, _, _ = weights(i, j)
            ds = ds + float((gr[i, None] * P * dr + gc[None, j] * Q * dc).sum())
    return {k: torch.cat(v) for k, v in want.items()}, ds


def _inv_norms(t, rows=1 << 18):
    return torch.cat([1 / t[i:i + rows].double().norm(dim=1) for i in range(0, t.shape[0], rows)])


@pytest.mark.slow
@pytest.mark.parametrize("what", ["feature_index", "g_strip_index"])
def test_int64_indexing(monkeypatch, what):
    """feature_index: m d > 2^31 (bf16 columns, 4.3 GB), positives at the far end.
    g_strip_index: one chunk of more than 2^31 strip elements (fp16: 9.2 GB of fp32 S and
    4.6 GB of H)."""
    g = torch.Generator(device=DEV).manual_seed(0)
    if what == "feature_index":
        n, m, d, dtype = 64, (1 << 22) + 5, 512, torch.bfloat16
        off = m - n
    else:
        n, m, d, dtype = 32768, 70000, 16, torch.float16
        off = 1000
        monkeypatch.setenv("GAPOPS_CUDA_SCRATCH_MB", "16384")
    b = torch.randn(m, d, device=DEV, generator=g, dtype=dtype)
    a = (0.5 * b[off:off + n].float() + torch.randn(n, d, device=DEV, generator=g)).to(dtype)
    ra, rb = _inv_norms(a), _inv_norms(b)
    a_pos = (ra * (a.double() * b[off:off + n].double()).sum(1) * rb[off:off + n])
    b_pos = torch.zeros(m, dtype=torch.float64, device=DEV)
    b_pos[off:off + n] = a_pos
    s = torch.tensor(30.0, device=DEV)
    args = (a, a, None, b, b, None, ra.float(), rb.float(), a_pos.float(), b_pos.float(), s, off)
    row_lse, col_lse = OPS.strip_forward(*args)
    g_row = torch.full((n,), 1 / n, device=DEV)
    g_col = torch.full((m,), 1 / n, device=DEV)
    grad_a, grad_b, grad_s = OPS.strip_backward(*args, row_lse, col_lse, g_row, g_col, True)
    rows = [0, n // 2, n - 1]
    cols = [0, off, off + n // 2, m - 1]
    want, want_ds = _spot_oracle(args, rows, cols, row_lse, col_lse, g_row, g_col)
    assert rel_err(row_lse[rows], want["row_lse"]) < 1e-5
    assert rel_err(col_lse[cols], want["col_lse"]) < 1e-5
    assert rel_err(grad_a[rows], want["grad_a"]) < 2e-2
    assert rel_err(grad_b[cols], want["grad_b"]) < 2e-2
    assert abs(float(grad_s) - want_ds) <= 1e-3 * max(1.0, abs(want_ds))


# ------------------------------------------------------------------ the sigmoid strip
def _sigmoid_args(case, acc, bias):
    args = strip_args(case, acc)
    return args[:8] + (args[10], torch.tensor(bias, dtype=acc, device=args[10].device), args[11])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16],
                         ids=str)
@pytest.mark.parametrize("swap,budget", [(False, None), (True, None), (True, "1")],
                         ids=["plain", "swapped", "swapped-chunked"])
@pytest.mark.parametrize("weights", [False, True], ids=["scalar", "rows"])
def test_sigmoid_strip_against_oracle(monkeypatch, dtype, swap, budget, weights):
    if budget:
        monkeypatch.setenv("GAPOPS_CUDA_SCRATCH_MB", budget)
    case = make_strip(333, 4000 if budget else 520, 72, 100, dtype, seed=23, device=DEV,
                      swap_rows=swap, swap_cols=swap, strided=swap, scale=10.0)
    acc = accumulation_dtype(dtype)
    w = torch.rand(333, generator=torch.Generator().manual_seed(2), dtype=torch.float64) if weights else None
    got = OPS.sigmoid_strip(*_sigmoid_args(case, acc, -10.0), None if w is None else w.to(DEV, acc),
                            True, True, False)
    want_args = tuple(t.cpu() if isinstance(t, torch.Tensor) else t
                      for t in _sigmoid_args(case, torch.float64, -10.0))
    want = reference_sigmoid_strip(*want_args, w)
    fwd_tol, bwd_tol = TOL[dtype]
    assert_close(got[:1], want[:1], fwd_tol, ("row_loss",))
    assert_close(got[1:], want[1:], bwd_tol, ("grad_a", "grad_b", "grad_scale", "grad_bias"),
                 1e-3 * float(want[1].abs().mean() * 333 + 1))
    loss_only = OPS.sigmoid_strip(*_sigmoid_args(case, acc, -10.0), None, True, False, False)
    assert torch.equal(loss_only[0], got[0]) and loss_only[1].shape == (0, 72)


# ------------------------------------------------------------------ the public loss
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16],
                         ids=str)
@pytest.mark.parametrize("n,d", [(1, 1), (2, 3), (100, 64), (257, 130), (1000, 17)])
def test_loss_against_oracle(n, d, dtype):
    g = torch.Generator().manual_seed(n * d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 0.5 * x + torch.randn(n, d, generator=g, dtype=torch.float64)
    s = torch.tensor(20.0, dtype=torch.float64)
    swap = torch.rand(n, generator=g) < 0.3
    xq, yq = x.to(dtype).double(), y.to(dtype).double()  # the oracle sees the rounded inputs
    want = oracle(xq, yq, s, swap_mask=swap)
    got = loss_and_grads(gapops.contrastive_loss, x.to(DEV), y.to(DEV), s.to(DEV), dtype,
                         swap_mask=swap.to(DEV), backend="cuda")
    fwd_tol, bwd_tol = TOL[dtype]
    assert rel_err(got[0], want[0]) < fwd_tol
    for gv, wv in zip(got[1:], want[1:]):
        assert rel_err(gv, wv) < bwd_tol


@pytest.mark.slow
def test_large_bf16_loss():
    n, d = 8192, 256
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = 0.5 * x + torch.randn(n, d, generator=g)
    s = torch.tensor(50.0)
    want = loss_and_grads(reference_contrastive_loss, x.bfloat16().double().to(DEV),
                          y.bfloat16().double().to(DEV), s.double().to(DEV), torch.float64)
    got = loss_and_grads(gapops.contrastive_loss, x.to(DEV), y.to(DEV), s.to(DEV), torch.bfloat16,
                         backend="cuda")
    assert rel_err(got[0], want[0]) < 1e-4
    for gv, wv in zip(got[1:], want[1:]):
        assert rel_err(gv, wv) < 2e-2
