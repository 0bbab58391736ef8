"""The CUDA strip epilogues, compiled for the host and run under a thread-per-CUDA-thread emulation.

tests/cuda_emu/emu_strip.cpp includes csrc/cuda/strip_kernels.cuh (the very kernel source nvcc
compiles) and csrc/cuda/strip_plan.h with fake CUDA headers (tests/cuda_emu/fake_include): one
std::thread per CUDA thread, __syncthreads as a barrier, __shared__ as statics, warp shuffles
through a block exchange, real IEEE fp16 / bf16 storage and rounding. It mirrors the launchers of
csrc/cuda/strip.cu (same plan, chunks, grids, buffers with their padded leading dimensions, 16-bit
H with its power of two, fp32 H over S, same merge order), with plain fp32 / fp64 loops where
strip.cu calls cuBLAS, and is called here through ctypes on the strips of tests/helpers.py,
against gapops.reference's softmax and sigmoid strips in float64.

What this proves without a GPU: the contracts of design.md 2.1 and 2.6 in every dtype (fp64,
fp32, bf16 and fp16 with real rounding of H): routing, strides, inverse norms, relative
statistics and their online folds and merges, expm1 weights, stable softplus / sigmoid forms,
grad_scale and grad_bias, offsets, partial row blocks and column tiles, padding columns never
read, several chunks and column groups, the power-of-two scaling of fp16 H; the barrier
structure (a missing barrier shows up as a wrong answer or a hang).
What it does not: cuBLAS itself (at::mm_out with out_dtype into a padded strip, TF32), timing,
races the barrier-per-step schedule hides. Those need a GPU: tests/test_cuda_backend.py,
tests/test_strip.py -k cuda and benchmarks/gpu_sanitize.sh.
"""
import ctypes
import os
import shutil
import subprocess

import pytest
import torch

from gapops._dtypes import accumulation_dtype
from gapops.reference import (reference_sigmoid_strip, reference_strip_backward,
                              reference_strip_forward)
from helpers import STRIPS, TOL, assert_close, make_strip, rel_err, strip_args

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emu")
DTYPE_CODE = {torch.float64: 0, torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}


class Side(ctypes.Structure):
    _fields_ = [("main", ctypes.c_void_p), ("main_s0", ctypes.c_int64), ("main_s1", ctypes.c_int64),
                ("alt", ctypes.c_void_p), ("alt_s0", ctypes.c_int64), ("alt_s1", ctypes.c_int64),
                ("swap", ctypes.c_void_p)]


class Plan(ctypes.Structure):
    _fields_ = [("resident_blocks", ctypes.c_int64), ("scratch_bytes", ctypes.c_int64),
                ("h_scale", ctypes.c_int32)]


# Device facts the launch plan is made from (csrc/cuda/strip_plan.h). "wide": two waves cover
# every column tile and the strip is one chunk; "chunked": 1 resident block and a 48 KiB budget,
# so the strip comes in chunks of a few rows (not a multiple of the 128-row block) and the
# blocks loop over several column tiles each.
PLANS = {"wide": (1000, 1 << 30), "chunked": (1, 48 << 10)}
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA emulation")
    so = str(tmp_path_factory.mktemp("cuda_emu") / "emu_strip.so")
    cmd = [cxx, "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-Wno-unknown-pragmas",
           "-I", os.path.join(HERE, "fake_include"), os.path.join(HERE, "emu_strip.cpp"), "-o", so]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 and "barrier" in proc.stderr and "No such file" in proc.stderr:
        pytest.skip("the C++ compiler lacks <barrier> (C++20)")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lib = ctypes.CDLL(so)
    vp, i64, side, plan = ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(Side), ctypes.POINTER(Plan)
    head = [ctypes.c_int, i64, i64, i64, side, side]
    i32 = ctypes.c_int
    lib.emu_strip_forward.argtypes = head + [vp] * 5 + [i64, plan, vp, vp]
    lib.emu_strip_backward.argtypes = head + [vp] * 5 + [i64] + [vp] * 4 + [plan, vp, vp, vp]
    lib.emu_sigmoid_strip.argtypes = head + [vp] * 4 + [i64, vp, i32, i32, plan] + [vp] * 5
    lib.emu_round.argtypes = [ctypes.c_int, vp, vp, i64]
    return lib


class EmulatedCuda:
    """strip_forward / strip_backward / sigmoid_strip with the signatures of gapops.reference's
    strips, run by the emulated CUDA launchers with the given plan."""

    def __init__(self, lib, plan="chunked", h_scale=True):
        self.lib = lib
        self.plan = Plan(*PLANS[plan], int(h_scale))

    def _common(self, a, a_alt, a_swap, b, b_alt, b_swap, *vectors):
        acc = accumulation_dtype(a.dtype)
        keep = [t.contiguous() if t is not None else None for t in (a_swap, b_swap)]
        keep += [t.to(acc).contiguous().reshape(-1) for t in vectors]
        sides = [Side(m.data_ptr(), m.stride(0), m.stride(1), al.data_ptr(), al.stride(0),
                      al.stride(1), None if s is None else s.data_ptr())
                 for m, al, s in ((a, a_alt, keep[0]), (b, b_alt, keep[1]))]
        head = [DTYPE_CODE[a.dtype], a.shape[0], b.shape[0], a.shape[1],
                ctypes.byref(sides[0]), ctypes.byref(sides[1])]
        return acc, keep + sides, head + [t.data_ptr() for t in keep[2:]]

    def forward(self, *args):
        acc, keep, head = self._common(*args[:11])
        row = torch.empty(args[0].shape[0], dtype=acc)
        col = torch.empty(args[3].shape[0], dtype=acc)
        assert self.lib.emu_strip_forward(*head, args[11], ctypes.byref(self.plan),
                                          row.data_ptr(), col.data_ptr()) == 0
        return row, col

    def backward(self, *args):
        acc, keep, head = self._common(*args[:11])
        stats = [t.to(acc).contiguous() for t in args[12:16]]
        (n, d), m = args[0].shape, args[3].shape[0]
        ga, gb, gs = torch.empty(n, d, dtype=acc), torch.empty(m, d, dtype=acc), torch.empty((), dtype=acc)
        assert self.lib.emu_strip_backward(*head, args[11], *[t.data_ptr() for t in stats],
                                           ctypes.byref(self.plan), ga.data_ptr(), gb.data_ptr(),
                                           gs.data_ptr()) == 0
        return ga, gb, gs

    def sigmoid(self, a, a_alt, a_swap, b, b_alt, b_swap, a_inv, b_inv, scale, bias, offset,
                g_row=None, want_loss=True, want_grads=True, deterministic=False):
        acc, keep, head = self._common(a, a_alt, a_swap, b, b_alt, b_swap, a_inv, b_inv, scale, bias)
        w = None if g_row is None else g_row.to(acc).contiguous()
        (n, d), m = a.shape, b.shape[0]
        loss = torch.empty(n if want_loss else 0, dtype=acc)
        ga = torch.empty(n if want_grads else 0, d, dtype=acc)
        gb = torch.empty(m if want_grads else 0, d, dtype=acc)
        gs, gbias = torch.empty((), dtype=acc), torch.empty((), dtype=acc)
        assert self.lib.emu_sigmoid_strip(*head, offset, None if w is None else w.data_ptr(),
                                          int(want_loss), int(want_grads), ctypes.byref(self.plan),
                                          loss.data_ptr(), ga.data_ptr(), gb.data_ptr(),
                                          gs.data_ptr(), gbias.data_ptr()) == 0
        return loss, ga, gb, gs, gbias


def run_emulated(emu, case, dtype, g_scale=1.0, g_seed=0):
    """Forward and backward of the emulated softmax strip and of the float64 oracle on the same
    inputs (backward with the oracle's statistics); g_scale multiplies the weights."""
    acc = accumulation_dtype(dtype)
    got_args, want_args = strip_args(case, acc), strip_args(case, torch.float64)
    got_f = emu.forward(*got_args)
    want_f = reference_strip_forward(*want_args)
    n, m = got_args[0].shape[0], got_args[3].shape[0]
    g = torch.Generator().manual_seed(g_seed)
    g_row = g_scale * torch.rand(n, generator=g, dtype=torch.float64)
    g_col = g_scale * torch.rand(m, generator=g, dtype=torch.float64)
    got_b = emu.backward(*got_args, want_f[0].to(acc), want_f[1].to(acc), g_row.to(acc),
                         g_col.to(acc), False)
    want_b = reference_strip_backward(*want_args, *want_f, g_row, g_col)
    return got_f, want_f, got_b, want_b, 1e-3 * float(g_row.sum() + g_col.sum())


def check_softmax(emu, case, dtype, tol=None):
    fwd_tol, bwd_tol = tol or TOL[dtype]
    got_f, want_f, got_b, want_b, floor = run_emulated(emu, case, dtype)
    assert_close(got_f, want_f, fwd_tol, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, bwd_tol, ("grad_a", "grad_b", "grad_scale"), floor)


def sigmoid_args(case, acc, bias):
    """The sigmoid strip's leading arguments from a softmax strip case (no positives' cosines)."""
    args = strip_args(case, acc)
    return args[:8] + (args[10], torch.tensor(bias, dtype=acc), args[11])


def check_sigmoid(emu, case, dtype, bias=-10.0, weights=False, want_loss=True, want_grads=True,
                  tol=None):
    acc = accumulation_dtype(dtype)
    n = case["feats"][0].shape[0]
    w = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64) if weights else None
    got = emu.sigmoid(*sigmoid_args(case, acc, bias), None if w is None else w.to(acc), want_loss,
                      want_grads)
    want = reference_sigmoid_strip(*sigmoid_args(case, torch.float64, bias), w, want_loss, want_grads)
    fwd_tol, bwd_tol = tol or TOL[dtype]
    if want_loss:
        assert_close(got[:1], want[:1], fwd_tol, ("row_loss",))
    else:
        assert got[0].numel() == 0
    if want_grads:
        floor = 1e-3 * float(want[1].abs().sum() / max(1, want[1].shape[1]) + 1)
        assert_close(got[1:], want[1:], bwd_tol, ("grad_a", "grad_b", "grad_scale", "grad_bias"), floor)
    else:
        assert got[1].shape == (0, got[1].shape[1]) and got[2].shape[0] == 0
        assert float(got[3]) == 0 and float(got[4]) == 0


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("n,m,d,offset", STRIPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_emulated_strip_matches_reference(lib, dtype, n, m, d, offset, plan):
    case = make_strip(n, m, d, offset, dtype, seed=n + 7 * m + d, device="cpu")
    check_softmax(EmulatedCuda(lib, plan), case, dtype)


ROUTINGS = [(True, False, True, False), (False, True, True, False), (True, True, False, False),
            (True, True, True, True)]


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("swap_rows,swap_cols,normalize,strided", ROUTINGS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_emulated_routing_norms_strides(lib, dtype, swap_rows, swap_cols, normalize, strided, plan):
    case = make_strip(37, 52, 21, 11, dtype, seed=5, device="cpu", swap_rows=swap_rows,
                      swap_cols=swap_cols, normalize=normalize, strided=strided, scale=7.0)
    check_softmax(EmulatedCuda(lib, plan), case, dtype)


def test_emulated_dominant_positives_fp32(lib):
    """logit_scale 100, positives far above the rest: statistics ~1e-4 stay accurate."""
    case = make_strip(64, 64, 48, 0, torch.float32, seed=9, device="cpu", scale=100.0, aligned=4.0)
    got_f, want_f, got_b, want_b, floor = run_emulated(EmulatedCuda(lib), case, torch.float32)
    assert float(want_f[0].max()) < 0.1  # the regime under test
    assert_close(got_f, want_f, 1e-4, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, 1e-4, ("grad_a", "grad_b", "grad_scale"), floor)


@pytest.mark.parametrize("swap", [False, True])
def test_emulated_large_chunked(lib, swap):
    """300 rows x 517 columns: several 128-row blocks per chunk, a short last block, 5 column
    tiles, a 256 KiB budget (several chunks), routed or not."""
    case = make_strip(300, 517, 24, 2, torch.float32, seed=1, device="cpu", swap_rows=swap,
                      swap_cols=swap)
    emu = EmulatedCuda(lib)
    emu.plan = Plan(3, 256 << 10, 1)
    got_f, want_f, got_b, want_b, floor = run_emulated(emu, case, torch.float32)
    assert_close(got_f, want_f, 1e-5, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, 1e-4, ("grad_a", "grad_b", "grad_scale"), floor)


@pytest.mark.parametrize("swap_cols", [False, True])
def test_emulated_nan_propagates(lib, swap_cols):
    case = make_strip(20, 20, 8, 0, torch.float32, seed=3, device="cpu", swap_cols=swap_cols)
    case["feats"][0][3, 2] = float("nan")
    emu = EmulatedCuda(lib)
    args = strip_args(case, torch.float32)
    row, col = emu.forward(*args)
    assert torch.isnan(row[3]) and torch.isnan(col).all()
    assert not torch.isnan(row[torch.arange(20) != 3]).any()
    g = torch.full((20,), 0.5)
    ga, gb, gs = emu.backward(*args, row, col, g, g, False)
    assert torch.isnan(gs) and torch.isnan(gb).all() and torch.isnan(ga[3]).all()
    loss, ga, gb, gs, gbias = emu.sigmoid(*sigmoid_args(case, torch.float32, -10.0))
    assert torch.isnan(loss[3]) and not torch.isnan(loss[torch.arange(20) != 3]).any()
    assert torch.isnan(gs) and torch.isnan(gbias) and torch.isnan(gb).all() and torch.isnan(ga[3]).all()


@pytest.mark.parametrize("swap_cols", [False, True])
def test_emulated_fp16_tiny_weights(lib, swap_cols):
    """g ~ 1e-9 (N = 1e9 rows' worth of 1/N): s rho sigma G falls below fp16's smallest subnormal
    (6e-8), so unscaled fp16 H would be all zeros; H times 2^k keeps the gradients, and turning
    the scaling off (the negative control) loses grad_b."""
    case = make_strip(70, 90, 24, 10, torch.float16, seed=4, device="cpu", swap_cols=swap_cols)
    got_f, want_f, got_b, want_b, _ = run_emulated(EmulatedCuda(lib), case, torch.float16, g_scale=1e-9)
    for name, gv, wv in zip(("grad_a", "grad_b"), got_b[:2], want_b[:2]):
        assert rel_err(gv, wv) < TOL[torch.float16][1], name
    _, _, off_b, want_b, _ = run_emulated(EmulatedCuda(lib, h_scale=False), case, torch.float16,
                                          g_scale=1e-9)
    assert rel_err(off_b[1], want_b[1]) > 0.5  # H underflows without the scaling


def test_emulated_repeats_bits(lib):
    case = make_strip(150, 150, 40, 0, torch.float32, seed=2, device="cpu", swap_rows=True,
                      swap_cols=True)
    emu = EmulatedCuda(lib)
    args = strip_args(case, torch.float32)
    stats = emu.forward(*args)
    assert all(torch.equal(x, y) for x, y in zip(stats, emu.forward(*args)))
    g = torch.full((150,), 0.5)
    first, again = emu.backward(*args, *stats, g, g, True), emu.backward(*args, *stats, g, g, True)
    for x, y in zip(first, again):
        assert torch.equal(x, y)
    sargs = sigmoid_args(case, torch.float32, -5.0)
    for x, y in zip(emu.sigmoid(*sargs), emu.sigmoid(*sargs)):
        assert torch.equal(x, y)


# ------------------------------------------------------------------ the sigmoid strip
@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("n,m,d,offset", STRIPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_emulated_sigmoid_matches_reference(lib, dtype, n, m, d, offset, plan):
    case = make_strip(n, m, d, offset, dtype, seed=n + 7 * m + d, device="cpu", scale=10.0)
    check_sigmoid(EmulatedCuda(lib, plan), case, dtype, weights=n % 2 == 1)


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("swap_rows,swap_cols,normalize,strided", ROUTINGS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_emulated_sigmoid_routing_norms_strides(lib, dtype, swap_rows, swap_cols, normalize,
                                                strided, plan):
    case = make_strip(37, 52, 21, 11, dtype, seed=6, device="cpu", swap_rows=swap_rows,
                      swap_cols=swap_cols, normalize=normalize, strided=strided, scale=7.0)
    check_sigmoid(EmulatedCuda(lib, plan), case, dtype, bias=-3.0, weights=True)


@pytest.mark.parametrize("want_loss,want_grads", [(True, False), (False, True), (False, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_emulated_sigmoid_partial_outputs(lib, dtype, want_loss, want_grads):
    """want_loss alone: one product and the loss epilogue, no H; want_grads alone: no losses."""
    case = make_strip(130, 257, 19, 127, dtype, seed=8, device="cpu", swap_rows=True, scale=10.0)
    check_sigmoid(EmulatedCuda(lib), case, dtype, want_loss=want_loss, want_grads=want_grads)


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (100.0, -12.0)])
def test_emulated_sigmoid_trained_regime_fp32(lib, scale, bias):
    """open_clip's initialization (10, -10) and trained values (~100, ~-12): losses of ~1e-5 per
    pair and weights of sigmoid(-|z|) stay accurate in fp32 (no 1 - sigmoid)."""
    case = make_strip(96, 160, 48, 30, torch.float32, seed=12, device="cpu", scale=scale, aligned=3.0)
    check_sigmoid(EmulatedCuda(lib), case, torch.float32, bias=bias, weights=True, tol=(1e-5, 1e-4))


def test_emulated_sigmoid_fp16_tiny_weights(lib):
    """w ~ 1e-9: H underflows fp16 without the power of two (negative control), not with it."""
    case = make_strip(70, 90, 24, 10, torch.float16, seed=4, device="cpu", scale=10.0)
    args = sigmoid_args(case, torch.float32, -2.0)
    w = 1e-9 * torch.rand(70, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = reference_sigmoid_strip(*sigmoid_args(case, torch.float64, -2.0), w)
    got = EmulatedCuda(lib).sigmoid(*args, w.float())
    off = EmulatedCuda(lib, h_scale=False).sigmoid(*args, w.float())
    for name, k in (("grad_a", 1), ("grad_b", 2)):
        assert rel_err(got[k], want[k]) < TOL[torch.float16][1], name
    assert rel_err(off[2], want[2]) > 0.5


@pytest.mark.parametrize("kind,dtype", [(0, torch.float16), (1, torch.bfloat16)])
def test_fake_16bit_rounding_matches_torch(lib, kind, dtype):
    """The emulation's __float2half_rn / __float2bfloat16_rn round like torch (RNE, subnormals,
    overflow to inf, NaN), so the emulated 16-bit paths see the device's values."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g) * torch.exp2(torch.randint(-30, 20, (20000,), generator=g).float())
    x = torch.cat([x, torch.tensor([0.0, -0.0, 65504.0, 65519.0, 65520.0, 6e-8, 3e-8, 2.9e-8,
                                    float("inf"), float("nan"), 1e-45, 3.4e38])])
    out = torch.empty(x.numel(), dtype=dtype)
    lib.emu_round(kind, x.data_ptr(), out.data_ptr(), x.numel())
    want = x.to(dtype)
    assert torch.equal(out.view(torch.int16)[~want.isnan()], want.view(torch.int16)[~want.isnan()])
    assert torch.equal(out.isnan(), want.isnan())
