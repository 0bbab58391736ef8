"""backend='cuda' (csrc/cuda/strip.cu) against the float64 oracle gapops.reference.

Everything here needs a CUDA device and an extension built with nvcc: without them every test
skips. The strip ops are checked directly (torch.ops.gapops.strip_forward / strip_backward on
awkward shapes: n = 1, d = 1, sizes off the 64-wide tiles, offset > 0, non-contiguous inputs) and
through the public loss with its three gradients; deterministic=True must give the same bits
run to run.
"""
import pytest
import torch

import gapops
from gapops.reference import (reference_contrastive_loss, reference_strip_backward,
                              reference_strip_forward)


def _cuda_status():
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    why = gapops.backends().get("cuda")
    return None if why == "available" else why


_WHY = _cuda_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_WHY is not None, reason=f"cuda backend: {_WHY}")]

DEV = "cuda"
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
# (n, m, d, offset): rows, columns, features, positive of row i at column i + offset
SHAPES = [
    (1, 1, 1, 0),
    (1, 5, 3, 4),
    (5, 7, 1, 2),
    (3, 3, 100, 0),
    (63, 63, 17, 0),
    (64, 64, 64, 0),
    (65, 130, 33, 65),
    (129, 200, 100, 3),
    (300, 300, 257, 0),
    (100, 1000, 8, 900),
    (700, 700, 40, 0),  # many row and column tiles
]
# relative tolerance (norm of error / norm of value) of the forward statistics and the gradients
TOL = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (2e-6, 1e-4),  # the CPU backend reaches 1.2e-5 on these shapes
    torch.bfloat16: (2e-5, 2e-2),  # exact 16-bit products, fp32 sums; G in TF32, outputs in bf16
    torch.float16: (2e-5, 5e-3),
}
# the public loss normalizes in the input dtype, so 16-bit inputs lose more before the strip
LOSS_TOL = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (1e-5, 1e-4),
    torch.bfloat16: (1e-2, 2e-2),
    torch.float16: (1e-2, 2e-2),
}


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 strips take the exact SIMT path
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def rel_err(got, want, floor=1e-30):
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).norm() / want.norm().clamp_min(floor)) if want.numel() else 0.0


def strip_inputs(n, m, d, dtype, seed, contiguous=True):
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    b = torch.nn.functional.normalize(torch.randn(m, d, generator=g, dtype=torch.float64), dim=1)
    b[:n] += 0.5 * a  # correlated positives (offset handled below by rolling)
    s = torch.tensor(float(torch.empty(()).uniform_(5, 50, generator=g)), dtype=torch.float64)
    g_row = torch.rand(n, generator=g, dtype=torch.float64) / n
    g_col = torch.rand(m, generator=g, dtype=torch.float64) / m
    a, b = a.to(DEV, dtype), b.to(DEV, dtype)
    if not contiguous:  # same values, strided storage
        a = torch.cat([a, a], dim=1)[:, ::2] if d > 1 else a.t().contiguous().t()
        b = b.t().contiguous().t()
    return a, b, s, g_row, g_col


def acc_of(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def oracle_forward(a, b, s, offset):
    return reference_strip_forward(a.double(), b.double(), s.to(DEV, torch.float64), offset)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}_m{}_d{}_o{}".format(*s))
def test_strip_forward(shape, dtype):
    n, m, d, offset = shape
    a, b, s, _, _ = strip_inputs(n, m, d, dtype, seed=n + m + d)
    acc = acc_of(dtype)
    row, col, pos = torch.ops.gapops.strip_forward(a, b, s.to(DEV, acc), offset)
    assert row.dtype == col.dtype == pos.dtype == acc
    assert row.shape == (n,) and col.shape == (m,) and pos.shape == (n,)
    w_row, w_col, w_pos = oracle_forward(a, b, s, offset)
    tol = TOL[dtype][0]
    assert rel_err(row, w_row) < tol
    assert rel_err(col, w_col) < tol
    assert rel_err(pos, w_pos) < max(tol, 1e-6 if dtype != torch.float64 else tol)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}_m{}_d{}_o{}".format(*s))
def test_strip_backward(shape, dtype, deterministic):
    n, m, d, offset = shape
    a, b, s, g_row, g_col = strip_inputs(n, m, d, dtype, seed=7 * n + m + d)
    acc = acc_of(dtype)
    w_row, w_col, _ = oracle_forward(a, b, s, offset)
    args = (s.to(DEV, acc), offset, w_row.to(acc), w_col.to(acc), g_row.to(DEV, acc),
            g_col.to(DEV, acc))
    dA, dB, ds = torch.ops.gapops.strip_backward(a, b, *args, deterministic)
    assert dA.dtype == a.dtype and dB.dtype == b.dtype and ds.dtype == acc and ds.dim() == 0
    assert dA.shape == a.shape and dB.shape == b.shape
    wA, wB, wds = reference_strip_backward(a.double(), b.double(), s.to(DEV, torch.float64), offset,
                                           w_row, w_col, g_row.to(DEV), g_col.to(DEV))
    tol = TOL[dtype][1]
    # gradients that nearly cancel (G_ii = g (p_ii - 1), p_ii ~ 1) are compared against the size
    # of their terms, s * sum(g), as fp32 cannot resolve them better (the CPU backend neither)
    floor = 0.1 * float(s) * float(g_row.sum() + g_col.sum())
    assert rel_err(dA, wA, floor) < tol
    assert rel_err(dB, wB, floor) < tol
    assert abs(float(ds) - float(wds)) <= tol * max(1.0, float(g_row.sum() + g_col.sum()))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strip_non_contiguous(dtype):
    n, m, d, offset = 70, 90, 33, 10
    a, b, s, g_row, g_col = strip_inputs(n, m, d, dtype, seed=5, contiguous=False)
    assert not a.is_contiguous() and not b.is_contiguous()
    acc = acc_of(dtype)
    got = torch.ops.gapops.strip_forward(a, b, s.to(DEV, acc), offset)
    want = torch.ops.gapops.strip_forward(a.contiguous(), b.contiguous(), s.to(DEV, acc), offset)
    for x, y in zip(got, want):
        assert torch.equal(x, y)
    bw = lambda a_, b_: torch.ops.gapops.strip_backward(  # noqa: E731
        a_, b_, s.to(DEV, acc), offset, got[0], got[1], g_row.to(DEV, acc), g_col.to(DEV, acc), True)
    for x, y in zip(bw(a, b), bw(a.contiguous(), b.contiguous())):
        assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strip_backward_deterministic_bits(dtype):
    n, m, d, offset = 333, 520, 96, 100
    a, b, s, g_row, g_col = strip_inputs(n, m, d, dtype, seed=11)
    acc = acc_of(dtype)
    row, col, _ = torch.ops.gapops.strip_forward(a, b, s.to(DEV, acc), offset)
    args = (s.to(DEV, acc), offset, row, col, g_row.to(DEV, acc), g_col.to(DEV, acc))
    first = torch.ops.gapops.strip_backward(a, b, *args, True)
    for _ in range(3):
        again = torch.ops.gapops.strip_backward(a, b, *args, True)
        for x, y in zip(first, again):
            assert torch.equal(x, y)
    # forward is deterministic by construction too (fixed-order merges, no atomics)
    f1 = torch.ops.gapops.strip_forward(a, b, s.to(DEV, acc), offset)
    f2 = torch.ops.gapops.strip_forward(a, b, s.to(DEV, acc), offset)
    for x, y in zip(f1, f2):
        assert torch.equal(x, y)
    # and the atomic mode agrees with it to rounding
    loose = torch.ops.gapops.strip_backward(a, b, *args, False)
    for x, y in zip(first, loose):
        assert rel_err(x, y) < (1e-12 if dtype == torch.float64 else 1e-2)
    assert torch.equal(first[0], loose[0])  # dA is owned by one block in both modes


def test_strip_fp32_tf32_path():
    n, m, d, offset = 200, 260, 130, 30
    a, b, s, g_row, g_col = strip_inputs(n, m, d, torch.float32, seed=13)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        row, col, pos = torch.ops.gapops.strip_forward(a, b, s.to(DEV, torch.float32), offset)
        w_row, w_col, w_pos = oracle_forward(a, b, s, offset)
        assert rel_err(row, w_row) < 1e-3 and rel_err(col, w_col) < 1e-3
        dA, dB, ds = torch.ops.gapops.strip_backward(a, b, s.to(DEV, torch.float32), offset, w_row.float(),
                                                     w_col.float(), g_row.to(DEV).float(),
                                                     g_col.to(DEV).float(), False)
        wA, wB, _ = reference_strip_backward(a.double(), b.double(), s.to(DEV), offset, w_row, w_col,
                                             g_row.to(DEV), g_col.to(DEV))
        assert rel_err(dA, wA) < 2e-2 and rel_err(dB, wB) < 2e-2
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def test_strip_scale_is_read_on_device():
    a, b, s, _, _ = strip_inputs(40, 40, 16, torch.float32, seed=17)
    s_dev = s.to(DEV, torch.float32)
    # a CUDA graph capture fails on any host sync such as .item()
    torch.ops.gapops.strip_forward(a, b, s_dev, 0)  # warm-up (allocations, module load)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = torch.ops.gapops.strip_forward(a, b, s_dev, 0)
    graph.replay()
    torch.cuda.synchronize()
    want = oracle_forward(a, b, s, 0)
    assert rel_err(out[0], want[0]) < 1e-5


# ------------------------------------------------------------------------ the public loss
def loss_and_grads(fn, x, y, s, dtype, **kw):
    xs = x.detach().to(dtype).requires_grad_()
    ys = y.detach().to(dtype).requires_grad_()
    ss = s.detach().to(acc_of(dtype)).requires_grad_()
    loss = fn(xs, ys, ss, **kw)
    dx, dy, ds = torch.autograd.grad(loss, (xs, ys, ss))
    return loss.detach().double(), dx.double(), dy.double(), ds.double()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d", [(1, 1), (2, 3), (100, 64), (257, 130), (1000, 17)])
@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
def test_loss_against_oracle(n, d, dtype, deterministic):
    g = torch.Generator().manual_seed(n * d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64).to(DEV)
    y = (0.5 * x.cpu() + torch.randn(n, d, generator=g, dtype=torch.float64)).to(DEV)
    s = torch.tensor(20.0, dtype=torch.float64, device=DEV)
    swap = (torch.rand(n, generator=g) < 0.3).to(DEV)
    xq, yq = x.to(dtype).double(), y.to(dtype).double()  # the oracle sees the rounded inputs
    want = loss_and_grads(reference_contrastive_loss, xq, yq, s, torch.float64, swap_mask=swap)
    got = loss_and_grads(gapops.contrastive_loss, x, y, s, dtype, swap_mask=swap, backend="cuda",
                         deterministic=deterministic)
    assert rel_err(got[0], want[0]) < LOSS_TOL[dtype][0]
    for gv, wv in zip(got[1:], want[1:]):
        assert rel_err(gv, wv) < LOSS_TOL[dtype][1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_loss_deterministic_bits(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1500, 96, generator=g).to(DEV)
    y = torch.randn(1500, 96, generator=g).to(DEV)
    s = torch.tensor(30.0, device=DEV)
    runs = [loss_and_grads(gapops.contrastive_loss, x, y, s, dtype, backend="cuda",
                           deterministic=True) for _ in range(3)]
    for r in runs[1:]:
        for a_, b_ in zip(runs[0], r):
            assert torch.equal(a_, b_)


@pytest.mark.slow
def test_large_bf16():
    n, d = 8192, 256
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).to(DEV)
    y = (0.5 * x.cpu() + torch.randn(n, d, generator=g)).to(DEV)
    s = torch.tensor(50.0, device=DEV)
    want = loss_and_grads(reference_contrastive_loss, x.bfloat16().double(), y.bfloat16().double(),
                          s.double(), torch.float64)
    got = loss_and_grads(gapops.contrastive_loss, x, y, s, torch.bfloat16, backend="cuda")
    assert rel_err(got[0], want[0]) < 1e-4
    for gv, wv in zip(got[1:], want[1:]):
        assert rel_err(gv, wv) < 2e-2
