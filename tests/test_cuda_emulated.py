"""The CUDA strip kernels, compiled for the host and run under a thread-per-CUDA-thread emulation.

tests/cuda_emu/emu_strip.cpp includes csrc/cuda/strip_kernels.cuh (the very kernel source nvcc
compiles) and csrc/cuda/strip_plan.h with fake CUDA headers (tests/cuda_emu/fake_include): one
std::thread per CUDA thread, __syncthreads as a barrier, __shared__ as statics, warp shuffles
through a block exchange, nvcuda::wmma as whole-tile load / mma / store with the documented
layouts, real IEEE fp16 / bf16 storage and rounding, TF32 rounding. It mirrors the launchers of
csrc/cuda/strip.cu (same plan, same kernels, same order), with plain fp32 / fp64 loops where
strip.cu calls cuBLAS, and is called here through ctypes on the strips of tests/test_strip.py,
against gapops.reference's strip in float64.

What this proves without a GPU: the v2 contract in every variant (fp64 / fp32 SIMT, TF32 / fp16
/ bf16 WMMA): routing, strides, inverse norms, relative statistics, expm1 weights, grad_scale,
offsets, partial tiles, grid-stride loops, several G-strip chunks and column groups, the fused
grad_a of column-routed strips, the power-of-two scaling of fp16 H; the operand layouts handed to
WMMA and the barrier structure (a missing barrier shows up as a wrong answer or a hang).
What it does not: the real fragment layouts, cuBLAS itself (at::mm_out with out_dtype),
timing, races the barrier-per-step schedule hides. Those need a GPU: tests/test_cuda_backend.py,
tests/test_strip.py -k cuda and benchmarks/gpu_sanitize.sh.
"""
import ctypes
import os
import shutil
import subprocess

import pytest
import torch

from gapops._dtypes import accumulation_dtype
from gapops.reference import reference_strip_backward, reference_strip_forward
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


# Device facts the launch plan is made from (csrc/cuda/strip_plan.h). "wide": one wave covers
# every row block and the whole G strip is one chunk; "chunked": 2 resident blocks and a 64 KiB
# budget, so the forward's blocks loop over row blocks and the G strip comes in 64-row chunks
# with several column groups (and several grad_a partials for column-routed strips).
PLANS = {"wide": (1000, 1 << 30), "chunked": (2, 64 << 10)}


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
    head = [ctypes.c_int, ctypes.c_int, i64, i64, i64, side, side, vp, vp, vp, vp, vp, i64]
    lib.emu_strip_forward.argtypes = head + [plan, vp, vp]
    lib.emu_strip_backward.argtypes = head + [vp, vp, vp, vp, plan, vp, vp, vp]
    lib.emu_round.argtypes = [ctypes.c_int, vp, vp, i64]
    return lib


class EmulatedCuda:
    """strip_forward / strip_backward with the signatures of gapops.reference's strip, run by the
    emulated CUDA launchers with the given plan; mma: TF32 tensor cores for float32."""

    def __init__(self, lib, plan="chunked", mma=False, h_scale=True):
        self.lib, self.mma = lib, int(mma)
        self.plan = Plan(*PLANS[plan], int(h_scale))

    def _common(self, a, a_alt, a_swap, b, b_alt, b_swap, a_inv, b_inv, a_pos, b_pos, scale, offset):
        acc = accumulation_dtype(a.dtype)
        keep = [t.contiguous() if t is not None else None for t in (a_swap, b_swap)]
        keep += [t.to(acc).contiguous() for t in (a_inv, b_inv, a_pos, b_pos, scale.reshape(()))]
        sides = [Side(m.data_ptr(), m.stride(0), m.stride(1), al.data_ptr(), al.stride(0),
                      al.stride(1), None if s is None else s.data_ptr())
                 for m, al, s in ((a, a_alt, keep[0]), (b, b_alt, keep[1]))]
        head = [DTYPE_CODE[a.dtype], self.mma, a.shape[0], b.shape[0], a.shape[1],
                ctypes.byref(sides[0]), ctypes.byref(sides[1])]
        head += [t.data_ptr() for t in keep[2:]] + [offset]
        return acc, keep, head

    def forward(self, *args):
        acc, keep, head = self._common(*args)
        row = torch.empty(args[0].shape[0], dtype=acc)
        col = torch.empty(args[3].shape[0], dtype=acc)
        assert self.lib.emu_strip_forward(*head, ctypes.byref(self.plan), row.data_ptr(),
                                          col.data_ptr()) == 0
        return row, col

    def backward(self, *args):
        row_lse, col_lse, g_row, g_col, _deterministic = args[12:]
        acc, keep, head = self._common(*args[:12])
        stats = [t.to(acc).contiguous() for t in (row_lse, col_lse, g_row, g_col)]
        (n, d), m = args[0].shape, args[3].shape[0]
        ga, gb, gs = torch.empty(n, d, dtype=acc), torch.empty(m, d, dtype=acc), torch.empty((), dtype=acc)
        assert self.lib.emu_strip_backward(*head, *[t.data_ptr() for t in stats],
                                           ctypes.byref(self.plan), ga.data_ptr(), gb.data_ptr(),
                                           gs.data_ptr()) == 0
        return ga, gb, gs


def run_emulated(emu, case, dtype, g_scale=1.0, g_seed=0):
    """tests/test_strip.py's run_both with the emulated kernels; g_scale multiplies the weights."""
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


# (dtype, TF32 tensor cores for float32): every kernel variant strip.cu dispatches to
VARIANTS = [(torch.float64, False), (torch.float32, False), (torch.float32, True),
            (torch.bfloat16, True), (torch.float16, True)]
TF32_TOL = (5e-3, 3e-2)  # fp32 inputs rounded to 10-bit TF32 operands (d = 1: 2e-3, 1.1e-2)


def tol_of(dtype, mma):
    return TF32_TOL if (dtype == torch.float32 and mma) else TOL[dtype]


def variant_id(v):
    return str(v[0]).replace("torch.", "") + ("-tf32" if v[0] == torch.float32 and v[1] else "")


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("n,m,d,offset", STRIPS)
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_emulated_strip_matches_reference(lib, variant, n, m, d, offset, plan):
    dtype, mma = variant
    case = make_strip(n, m, d, offset, dtype, seed=n + 7 * m + d, device="cpu")
    got_f, want_f, got_b, want_b, floor = run_emulated(EmulatedCuda(lib, plan, mma), case, dtype)
    fwd_tol, bwd_tol = tol_of(dtype, mma)
    assert_close(got_f, want_f, fwd_tol, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, bwd_tol, ("grad_a", "grad_b", "grad_scale"), floor)


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("swap_rows,swap_cols,normalize,strided", [
    (True, False, True, False), (False, True, True, False), (True, True, False, False),
    (True, True, True, True)])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_emulated_routing_norms_strides(lib, variant, swap_rows, swap_cols, normalize, strided, plan):
    dtype, mma = variant
    case = make_strip(37, 52, 21, 11, dtype, seed=5, device="cpu", swap_rows=swap_rows,
                      swap_cols=swap_cols, normalize=normalize, strided=strided, scale=7.0)
    got_f, want_f, got_b, want_b, floor = run_emulated(EmulatedCuda(lib, plan, mma), case, dtype)
    fwd_tol, bwd_tol = tol_of(dtype, mma)
    assert_close(got_f, want_f, fwd_tol, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, bwd_tol, ("grad_a", "grad_b", "grad_scale"), floor)


def test_emulated_dominant_positives_fp32(lib):
    """logit_scale 100, positives far above the rest: statistics ~1e-4 stay accurate."""
    case = make_strip(64, 64, 48, 0, torch.float32, seed=9, device="cpu", scale=100.0, aligned=4.0)
    got_f, want_f, got_b, want_b, floor = run_emulated(EmulatedCuda(lib), case, torch.float32)
    assert float(want_f[0].max()) < 0.1  # the regime under test
    assert_close(got_f, want_f, 1e-4, ("row_lse", "col_lse"))
    assert_close(got_b, want_b, 1e-4, ("grad_a", "grad_b", "grad_scale"), floor)


@pytest.mark.parametrize("swap", [False, True])
def test_emulated_large_chunked(lib, swap):
    """700 rows: 11 row blocks and G-strip chunks, 2 forward blocks, column-routed or not."""
    case = make_strip(700, 703, 40, 2, torch.float32, seed=1, device="cpu", swap_rows=swap,
                      swap_cols=swap)
    got_f, want_f, got_b, want_b, floor = run_emulated(EmulatedCuda(lib), case, torch.float32)
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
    g = torch.full((20,), 0.5)
    ga, gb, gs = emu.backward(*args, row, col, g, g, False)
    assert torch.isnan(gs) and torch.isnan(gb).all() and torch.isnan(ga[3]).all()


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


def test_emulated_deterministic_mode_repeats_bits(lib):
    case = make_strip(150, 150, 40, 0, torch.float32, seed=2, device="cpu", swap_rows=True,
                      swap_cols=True)
    emu = EmulatedCuda(lib)
    args = strip_args(case, torch.float32)
    stats = emu.forward(*args)
    g = torch.full((150,), 0.5)
    first, again = emu.backward(*args, *stats, g, g, True), emu.backward(*args, *stats, g, g, True)
    for x, y in zip(first, again):
        assert torch.equal(x, y)


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


def test_fake_tf32_rounding(lib):
    """__float_to_tf32: nearest, ties away from zero, 10 mantissa bits."""
    x = torch.tensor([1.0, 1 + 2 ** -11, 1 + 2 ** -10 + 2 ** -11, -(1 + 2 ** -11), 1 + 2 ** -12,
                      3.0e38, float("inf")])
    out = torch.empty_like(x)
    lib.emu_round(2, x.data_ptr(), out.data_ptr(), x.numel())
    want = torch.tensor([1.0, 1 + 2 ** -10, 1 + 2 ** -9, -(1 + 2 ** -10), 1.0, 3.0e38, float("inf")])
    want[5] = float(torch.tensor(3.0e38).view(torch.int32).add(0x1000).bitwise_and(~0x1fff)
                    .view(torch.float32))
    assert torch.equal(out, want)
