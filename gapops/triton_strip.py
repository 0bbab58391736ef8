"""Triton strip kernels (DESIGN.md section 2): rows A [n, d] against columns B [m, d].

Exports ``strip_forward`` and ``strip_backward`` with the signatures of
``gapops.reference.reference_strip_forward`` / ``reference_strip_backward``; the autograd and
torch.library wiring lives in gapops/_ops.py, swap + normalize in gapops/loss.py.

Layout, flash-attention style: a program owns a BLOCK_M x BLOCK_N tile of logits at a time; the
logits tile is one ``tl.dot`` product with the K (= d) loop inside; nothing of size n x m is ever
written to memory.

Forward (``_fwd_kernel``), one product (2 n m d FLOPs):
    A grid of P = min(cdiv(n, BLOCK_M), 2 x SMs) programs; program p takes row blocks p, p + P, ...
    and sweeps all column blocks. Each logits tile feeds (a) the row online-LSE, kept in registers,
    (b) the positive logit L_{i,i+offset} when the tile touches that diagonal and (c) the column
    partial LSE of program p, a running (max, sum) pair per column held in a [P, m] buffer that
    only program p reads and writes (no atomics, no second product). ``_col_combine_kernel`` then
    merges the P partials of each column in a fixed order: O(P m) extra memory, O(m) for P fixed.

Backward, with G_ij = g_row_i e^(L_ij - r_i) + g_col_j e^(L_ij - c_j)
                    - [j == i + offset](g_row_i + g_col_j):
    ``_bwd_rows_kernel``: one program per row block. For each column block it recomputes the
    logits tile once (1 product), forms G in registers, adds sum G * (a.b) to the program's
    d(scale) partial, and, looping over d in BLOCK_D chunks, adds s G @ B_blk to the program's own
    rows of dA (1 product; fp32 read-modify-write of rows no other program touches, since a
    [BLOCK_M, d] register accumulator does not fit for d in the hundreds) and, in 'atomic' mode,
    s G^T @ A_blk to dB with fp32 atomics (1 product). Atomic mode: 3 products in backward, 4 in
    all = 8 n m d FLOPs, DESIGN.md section 4's count.
    'partial' mode (and deterministic=True): the rows kernel skips dB, and ``_bwd_cols_kernel``,
    one program per (column block, row split), RECOMPUTES each logits tile (1 product) and G and
    accumulates s G^T @ A_blk into its own rows of a [splits, m, d] partial buffer (1 product),
    summed over splits afterwards in a fixed order. That is 4 products in backward, 5 in all =
    10 n m d FLOPs: 25% more arithmetic in exchange for no atomics and bitwise repeatability.
    Which mode is faster on a GPU is unmeasured here (no GPU when this was written); the default is
    'atomic', GAPOPS_TRITON_DB_MODE=partial or ``db_mode='partial'`` picks the other one.

Precision: products on tensor cores in the input dtype with fp32 accumulation; fp32 inputs use
``input_precision='ieee'`` unless ``torch.backends.cuda.matmul.allow_tf32`` is True. float64 inputs
(for gradcheck) do not use ``tl.dot``: their products are ``tl.sum(a[:, :, None] * b[None, :, :])``
on small blocks, accumulated in float64, slow but exact and free of any fp64-MMA support question.
Scale is read from its pointer inside the kernels (no host sync) and applied in-kernel.

Block sizes are autotuned on a GPU (a few configs per dtype class, keyed on d and dtype, tuned on
the first strip of at least 2^24 logits seen for that key; smaller strips run the first config);
under the Triton interpreter (TRITON_INTERPRET=1, CPU tensors) one config (64 x 64, K chunks of 64)
runs without tuning, and bf16 products upcast exactly to fp32 first (the interpreter's tl.dot
multiplies bf16 bit patterns as integers).

Performance caveat (unmeasured, no GPU when written): the dA read-modify-write and the dB atomics
move about 3 x BLOCK_M x d x 4 bytes per tile through L2 besides the operand loads, so for
d >= 512 the backward may be L2-bound below the 60%-of-dense-matmul target; a register-resident
dA accumulator (d <= 256) or a larger BLOCK_N would be the first things to try.
Deterministic mode uses one fixed config per dtype class, so that the summation order (and the
bits) do not depend on what the autotuner picked in a given process.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from ._dispatch import triton_interpreted

__all__ = ["strip_forward", "strip_backward", "DB_MODES"]

DB_MODES = ("atomic", "partial")
_NEG_INF = float("-inf")
_NINF: tl.constexpr = tl.constexpr(float("-inf"))  # jit code may read only constexpr globals
# fp64 exp/log through libdevice on a GPU; the interpreter's tl.exp/tl.log are numpy's (any dtype),
# and it cannot run libdevice calls on float64. TRITON_INTERPRET is read once, at import.
_LIBDEVICE_FP64: tl.constexpr = tl.constexpr(not triton_interpreted())


# ----------------------------------------------------------------------------------------------
# Tile math
# ----------------------------------------------------------------------------------------------

@triton.jit
def _exp(x):
    """tl.exp, or libdevice's exp for float64 (tl.exp's lowering is meant for fp32)."""
    if (x.dtype == tl.float64) and _LIBDEVICE_FP64:
        return libdevice.exp(x)
    else:
        return tl.exp(x)


@triton.jit
def _log(x):
    if (x.dtype == tl.float64) and _LIBDEVICE_FP64:
        return libdevice.log(x)
    else:
        return tl.log(x)


@triton.jit
def _mm(x, y, acc, PREC: tl.constexpr, MM: tl.constexpr):
    """acc + x @ y. MM=0: tl.dot; MM=1 (float64): elementwise multiply and sum, no tl.dot;
    MM=2 (bfloat16 under the interpreter, whose tl.dot multiplies bf16 bit patterns as integers):
    exact upcast of the bf16 operands to fp32, then tl.dot, as the tensor cores do."""
    if MM == 1:
        acc += tl.sum(x[:, :, None] * y[None, :, :], axis=1)
    elif MM == 2:
        acc = tl.dot(x.to(tl.float32), y.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(x, y, acc, input_precision=PREC)
    return acc


@triton.jit
def _dots_tile(a_ptr, b_ptr, rows, rmask, cols, cmask, d, sa0, sa1, sb0, sb1,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr,
               PREC: tl.constexpr, MM: tl.constexpr):
    """[BM, BN] tile of a_i . b_j (no scale), K loop over d in BK chunks, masked loads."""
    acc = tl.zeros([BM, BN], dtype=ACC)
    for k0 in range(0, d, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < d
        a = tl.load(a_ptr + rows[:, None] * sa0 + ks[None, :] * sa1,
                    mask=rmask[:, None] & kmask[None, :], other=0.0)
        bt = tl.load(b_ptr + cols[None, :] * sb0 + ks[:, None] * sb1,
                     mask=kmask[:, None] & cmask[None, :], other=0.0)
        acc = _mm(a, bt, acc, PREC, MM)
    return acc


@triton.jit
def _grad_weights(dots, s, rows, rmask, cols, cmask, r, gr, c, gc, offset):
    """G (masked to 0 outside the strip) from the raw dots tile."""
    x = dots * s
    G = gr[:, None] * _exp(x - r[:, None]) + gc[None, :] * _exp(x - c[None, :])
    diag = cols[None, :] == rows[:, None] + offset
    G = tl.where(diag, G - (gr[:, None] + gc[None, :]), G)
    return tl.where(rmask[:, None] & cmask[None, :], G, 0.0)


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------

@triton.jit
def _fwd_kernel(a_ptr, b_ptr, scale_ptr, row_lse_ptr, pos_ptr, pmax_ptr, psum_ptr,
                n, m, d, offset, sa0, sa1, sb0, sb1,
                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr,
                PREC: tl.constexpr, MM: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    s = tl.load(scale_ptr).to(ACC)
    n_rb = tl.cdiv(n, BM)
    for rb in range(pid, n_rb, nprog):
        rows = rb * BM + tl.arange(0, BM)
        rmask = rows < n
        rows64 = rows.to(tl.int64)
        m_i = tl.full([BM], _NINF, dtype=ACC)
        l_i = tl.zeros([BM], dtype=ACC)
        pos_i = tl.zeros([BM], dtype=ACC)
        not_first = rb >= nprog  # this program has merged into its column partials before
        for j0 in range(0, m, BN):
            cols = j0 + tl.arange(0, BN)
            cmask = cols < m
            dots = _dots_tile(a_ptr, b_ptr, rows64, rmask, cols.to(tl.int64), cmask, d,
                              sa0, sa1, sb0, sb1, BM, BN, BK, ACC, PREC, MM)
            x = tl.where(cmask[None, :], dots * s, _NINF)
            # rows: online LSE (each tile has a valid column, so the new max is finite)
            m_new = tl.maximum(m_i, tl.max(x, axis=1))
            l_i = l_i * _exp(m_i - m_new) + tl.sum(_exp(x - m_new[:, None]), axis=1)
            m_i = m_new
            # positives, only on tiles that the diagonal j = i + offset crosses
            if (j0 < rb * BM + BM + offset) & (j0 + BN > rb * BM + offset):
                on_diag = (cols[None, :] == rows[:, None] + offset) & cmask[None, :]
                pos_i += tl.sum(tl.where(on_diag, x, 0.0), axis=1)
            # columns: this tile's (max, sum) merged into the program's running partials
            xc = tl.where(rmask[:, None], x, _NINF)
            t_max = tl.where(cmask, tl.max(xc, axis=0), 0.0)  # 0 on dead lanes: no inf - inf
            t_sum = tl.sum(_exp(xc - t_max[None, :]), axis=0)
            pp = pid * m + cols
            old_max = tl.load(pmax_ptr + pp, mask=cmask & not_first, other=_NINF)
            old_sum = tl.load(psum_ptr + pp, mask=cmask & not_first, other=0.0)
            new_max = tl.maximum(old_max, t_max)
            new_sum = old_sum * _exp(old_max - new_max) + t_sum * _exp(t_max - new_max)
            tl.store(pmax_ptr + pp, new_max, mask=cmask)
            tl.store(psum_ptr + pp, new_sum, mask=cmask)
        tl.store(row_lse_ptr + rows, m_i + _log(l_i), mask=rmask)
        tl.store(pos_ptr + rows, pos_i, mask=rmask)


@triton.jit
def _col_combine_kernel(pmax_ptr, psum_ptr, col_lse_ptr, m, P, BLOCK: tl.constexpr,
                        ACC: tl.constexpr):
    """col_lse_j = logsumexp over the P partials (max_pj, sum_pj), in the order p = 0..P-1."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cmask = cols < m
    mx = tl.full([BLOCK], _NINF, dtype=ACC)
    for p in range(0, P):
        mx = tl.maximum(mx, tl.load(pmax_ptr + p * m + cols, mask=cmask, other=_NINF))
    safe = tl.where(mx == _NINF, 0.0, mx)
    tot = tl.zeros([BLOCK], dtype=ACC)
    for p in range(0, P):
        pm = tl.load(pmax_ptr + p * m + cols, mask=cmask, other=_NINF)
        ps = tl.load(psum_ptr + p * m + cols, mask=cmask, other=0.0)
        tot += tl.where(pm == _NINF, 0.0, ps * _exp(pm - safe))
    tl.store(col_lse_ptr + cols, mx + _log(tl.where(cmask, tot, 1.0)), mask=cmask)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------

@triton.jit
def _bwd_rows_kernel(a_ptr, b_ptr, scale_ptr, row_lse_ptr, col_lse_ptr, g_row_ptr, g_col_ptr,
                     da_ptr, db_ptr, dsp_ptr,
                     n, m, d, offset, sa0, sa1, sb0, sb1,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
                     ACC: tl.constexpr, OPS: tl.constexpr, PREC: tl.constexpr,
                     MM: tl.constexpr, DB_ATOMIC: tl.constexpr):
    """One program per row block: dA rows (owned), d(scale) partial, dB by atomics if asked."""
    pid = tl.program_id(0)
    s = tl.load(scale_ptr).to(ACC)
    rows = pid * BM + tl.arange(0, BM)
    rmask = rows < n
    rows64 = rows.to(tl.int64)
    r = tl.load(row_lse_ptr + rows, mask=rmask, other=0.0)
    gr = tl.load(g_row_ptr + rows, mask=rmask, other=0.0)
    ds = tl.zeros([BM], dtype=ACC)
    for j0 in range(0, m, BN):
        cols = j0 + tl.arange(0, BN)
        cmask = cols < m
        cols64 = cols.to(tl.int64)
        c = tl.load(col_lse_ptr + cols, mask=cmask, other=0.0)
        gc = tl.load(g_col_ptr + cols, mask=cmask, other=0.0)
        dots = _dots_tile(a_ptr, b_ptr, rows64, rmask, cols64, cmask, d, sa0, sa1, sb0, sb1,
                          BM, BN, BK, ACC, PREC, MM)
        G = _grad_weights(dots, s, rows, rmask, cols, cmask, r, gr, c, gc, offset)
        ds += tl.sum(G * dots, axis=1)
        Gs = (G * s).to(OPS)
        for k0 in range(0, d, BD):
            ks = k0 + tl.arange(0, BD)
            kmask = ks < d
            bb = tl.load(b_ptr + cols64[:, None] * sb0 + ks[None, :] * sb1,
                         mask=cmask[:, None] & kmask[None, :], other=0.0)
            da_ptrs = da_ptr + rows64[:, None] * d + ks[None, :]
            da_mask = rmask[:, None] & kmask[None, :]
            # the first column block stores, later ones add: re-running (autotune) is safe
            da = tl.load(da_ptrs, mask=da_mask & (j0 > 0), other=0.0)
            da = _mm(Gs, bb, da, PREC, MM)
            tl.store(da_ptrs, da, mask=da_mask)
            if DB_ATOMIC:
                aa = tl.load(a_ptr + rows64[:, None] * sa0 + ks[None, :] * sa1,
                             mask=da_mask, other=0.0)
                db = _mm(tl.trans(Gs), aa, tl.zeros([BN, BD], dtype=ACC), PREC, MM)
                tl.atomic_add(db_ptr + cols64[:, None] * d + ks[None, :], db,
                              mask=cmask[:, None] & kmask[None, :])
    tl.store(dsp_ptr + pid, tl.sum(ds, axis=0))


@triton.jit
def _bwd_cols_kernel(a_ptr, b_ptr, scale_ptr, row_lse_ptr, col_lse_ptr, g_row_ptr, g_col_ptr,
                     dbp_ptr, n, m, d, offset, sa0, sa1, sb0, sb1,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
                     ACC: tl.constexpr, OPS: tl.constexpr, PREC: tl.constexpr,
                     MM: tl.constexpr):
    """Program (column block, split q): recomputes the tiles of row blocks q, q + Q, ... and adds
    s G^T A into rows cols of the partial buffer dbp[q] (owned: no atomics)."""
    pid = tl.program_id(0)
    q = tl.program_id(1)
    nq = tl.num_programs(1)
    s = tl.load(scale_ptr).to(ACC)
    cols = pid * BN + tl.arange(0, BN)
    cmask = cols < m
    cols64 = cols.to(tl.int64)
    c = tl.load(col_lse_ptr + cols, mask=cmask, other=0.0)
    gc = tl.load(g_col_ptr + cols, mask=cmask, other=0.0)
    base = dbp_ptr + q.to(tl.int64) * m * d
    n_rb = tl.cdiv(n, BM)
    for rb in range(q, n_rb, nq):
        rows = rb * BM + tl.arange(0, BM)
        rmask = rows < n
        rows64 = rows.to(tl.int64)
        r = tl.load(row_lse_ptr + rows, mask=rmask, other=0.0)
        gr = tl.load(g_row_ptr + rows, mask=rmask, other=0.0)
        dots = _dots_tile(a_ptr, b_ptr, rows64, rmask, cols64, cmask, d, sa0, sa1, sb0, sb1,
                          BM, BN, BK, ACC, PREC, MM)
        G = _grad_weights(dots, s, rows, rmask, cols, cmask, r, gr, c, gc, offset)
        GsT = tl.trans((G * s).to(OPS))
        for k0 in range(0, d, BD):
            ks = k0 + tl.arange(0, BD)
            kmask = ks < d
            aa = tl.load(a_ptr + rows64[:, None] * sa0 + ks[None, :] * sa1,
                         mask=rmask[:, None] & kmask[None, :], other=0.0)
            db_ptrs = base + cols64[:, None] * d + ks[None, :]
            db_mask = cmask[:, None] & kmask[None, :]
            db = tl.load(db_ptrs, mask=db_mask & (rb >= nq), other=0.0)
            db = _mm(GsT, aa, db, PREC, MM)
            tl.store(db_ptrs, db, mask=db_mask)


# ----------------------------------------------------------------------------------------------
# Configs and launchers
# ----------------------------------------------------------------------------------------------

def _cfg(num_warps, num_stages, **meta):
    return triton.Config(meta, num_warps=num_warps, num_stages=num_stages)


# (dtype class) -> configs; the first one is the fixed config of deterministic mode.
_FWD_CONFIGS = {
    "16": [_cfg(8, 3, BM=128, BN=128, BK=64), _cfg(4, 4, BM=128, BN=64, BK=64),
           _cfg(8, 3, BM=128, BN=256, BK=64), _cfg(4, 4, BM=64, BN=128, BK=64),
           _cfg(8, 4, BM=128, BN=128, BK=32)],
    "32": [_cfg(8, 3, BM=128, BN=64, BK=32), _cfg(4, 3, BM=64, BN=64, BK=32),
           _cfg(8, 3, BM=128, BN=128, BK=32), _cfg(4, 4, BM=64, BN=128, BK=32)],
    "64": [_cfg(4, 2, BM=32, BN=32, BK=8)],
}
_BWD_CONFIGS = {
    "16": [_cfg(8, 2, BM=128, BN=128, BK=64, BD=64), _cfg(4, 3, BM=64, BN=128, BK=64, BD=64),
           _cfg(4, 3, BM=128, BN=64, BK=64, BD=64), _cfg(8, 2, BM=128, BN=128, BK=64, BD=128),
           _cfg(8, 3, BM=64, BN=64, BK=64, BD=128)],
    "32": [_cfg(8, 2, BM=64, BN=64, BK=32, BD=64), _cfg(4, 2, BM=64, BN=64, BK=32, BD=32),
           _cfg(8, 2, BM=128, BN=64, BK=32, BD=64), _cfg(8, 2, BM=64, BN=128, BK=32, BD=64)],
    "64": [_cfg(4, 2, BM=32, BN=32, BK=8, BD=8)],
}
# Under the interpreter: one config, big blocks (fewer interpreted steps), no tuning.
_INTERP_FWD = dict(BM=64, BN=64, BK=64)
_INTERP_BWD = dict(BM=64, BN=64, BK=64, BD=64)
_COMBINE_BLOCK = 256

_KEY = ["d"]  # the autotuner adds the tensor arguments' dtypes to the key by itself
# Strips with fewer logits than this run the first (fixed) config: tuning (and compiling every
# config) costs more than it saves there, and tests stay quick on a GPU.
_TUNE_MIN_LOGITS = 1 << 24
_tuned: dict = {}


def _dtype_class(dtype: torch.dtype) -> str:
    return {torch.float64: "64", torch.float32: "32"}.get(dtype, "16")


def _tuned_kernel(name: str, cls: str):
    """The autotuned wrapper of one kernel for one dtype class, built once."""
    key = (name, cls)
    if key not in _tuned:
        if name == "fwd":
            _tuned[key] = triton.autotune(_FWD_CONFIGS[cls], key=_KEY)(_fwd_kernel)
        elif name == "rows_atomic":
            _tuned[key] = triton.autotune(_BWD_CONFIGS[cls], key=_KEY,
                                          reset_to_zero=["db_ptr"])(_bwd_rows_kernel)
        elif name == "rows":
            _tuned[key] = triton.autotune(_BWD_CONFIGS[cls], key=_KEY)(_bwd_rows_kernel)
        else:
            _tuned[key] = triton.autotune(_BWD_CONFIGS[cls], key=_KEY)(_bwd_cols_kernel)
    return _tuned[key]


def _min_block(configs, key, cls):
    if triton_interpreted():
        return (_INTERP_FWD if configs is _FWD_CONFIGS else _INTERP_BWD)[key]
    return min(c.kwargs[key] for c in configs[cls])


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _kernel_consts(dtype: torch.dtype):
    """(ACC, OPS, PREC, MM) constexprs for an input dtype."""
    if dtype == torch.float64:
        return tl.float64, tl.float64, "ieee", True
    if dtype == torch.float32:
        prec = "tf32" if (torch.backends.cuda.matmul.allow_tf32 and not triton_interpreted()) \
            else "ieee"
        return tl.float32, tl.float32, prec, 0
    if dtype == torch.float16:
        return tl.float32, tl.float16, "tf32", 0
    return tl.float32, tl.bfloat16, "tf32", 2 if triton_interpreted() else 0


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"strip: a [n, d] and b [m, d] expected, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.dtype != b.dtype or a.device != b.device:
        raise ValueError("strip: a and b must share dtype and device")
    if a.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"strip: unsupported dtype {a.dtype}")


def _device_ctx(device: torch.device):
    import contextlib
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def strip_forward(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, offset: int):
    """(row_lse [n], col_lse_partial [m], pos [n]) of L = scale * a @ b.T, pos_i = L[i, i + offset].

    a [n, d], b [m, d]: one dtype (fp16/bf16/fp32/fp64), any strides; scale: 0-dim on the same
    device. Outputs are float32 (float64 for float64 inputs). One logits product in all.
    """
    _check(a, b)
    n, d = a.shape
    m = b.shape[0]
    acc_t = _acc_dtype(a.dtype)
    dev = a.device
    scale = scale.reshape(()).to(device=dev, dtype=acc_t)
    if n == 0 or m == 0:
        return (torch.full((n,), _NEG_INF, dtype=acc_t, device=dev),
                torch.full((m,), _NEG_INF, dtype=acc_t, device=dev),
                torch.zeros(n, dtype=acc_t, device=dev))
    cls = _dtype_class(a.dtype)
    ACC, _, PREC, MM = _kernel_consts(a.dtype)
    cap = 2 * _num_sms(dev)
    # partial buffers sized for the smallest BM any config may use; unused rows stay (-inf, 0)
    p_alloc = min(triton.cdiv(n, _min_block(_FWD_CONFIGS, "BM", cls)), cap)
    pmax = torch.full((p_alloc, m), _NEG_INF, dtype=acc_t, device=dev)
    psum = torch.zeros((p_alloc, m), dtype=acc_t, device=dev)
    row_lse = torch.empty(n, dtype=acc_t, device=dev)
    pos = torch.empty(n, dtype=acc_t, device=dev)
    col_lse = torch.empty(m, dtype=acc_t, device=dev)

    def grid(meta):
        return (min(triton.cdiv(n, meta["BM"]), cap),)

    args = (a, b, scale, row_lse, pos, pmax, psum, n, m, d, offset,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1))
    with _device_ctx(dev):
        if triton_interpreted():
            _fwd_kernel[grid](*args, **_INTERP_FWD, ACC=ACC, PREC=PREC, MM=MM)
        elif len(_FWD_CONFIGS[cls]) == 1 or n * m < _TUNE_MIN_LOGITS:
            cfg = _FWD_CONFIGS[cls][0]
            _fwd_kernel[grid](*args, **cfg.kwargs, ACC=ACC, PREC=PREC, MM=MM,
                              num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        else:
            _tuned_kernel("fwd", cls)[grid](*args, ACC=ACC, PREC=PREC, MM=MM)
        _col_combine_kernel[(triton.cdiv(m, _COMBINE_BLOCK),)](
            pmax, psum, col_lse, m, p_alloc, BLOCK=_COMBINE_BLOCK, ACC=ACC)
    return row_lse, col_lse, pos


def _default_db_mode() -> str:
    mode = os.environ.get("GAPOPS_TRITON_DB_MODE", "atomic")
    if mode not in DB_MODES:
        raise ValueError(f"GAPOPS_TRITON_DB_MODE={mode!r}: choose one of {DB_MODES}")
    return mode


def _col_splits(n: int, m: int, device: torch.device) -> int:
    """Row splits of the column kernel: enough programs to fill the GPU when m is small."""
    col_blocks = triton.cdiv(m, 64)
    want = triton.cdiv(2 * _num_sms(device), col_blocks)
    return max(1, min(want, triton.cdiv(n, 128), 8))


def strip_backward(a, b, scale, offset, row_lse, col_lse, g_row, g_col, deterministic=False,
                   db_mode=None):
    """(dA [n, d], dB [m, d], dscale 0-dim) of the strip, G as in the module docstring.

    deterministic=True: no atomics (``db_mode='partial'``), one fixed config, fixed summation
    orders: the same bits run to run. ``db_mode`` ('atomic' or 'partial') overrides
    GAPOPS_TRITON_DB_MODE when not deterministic.
    """
    _check(a, b)
    n, d = a.shape
    m = b.shape[0]
    acc_t = _acc_dtype(a.dtype)
    dev = a.device
    mode = "partial" if deterministic else (db_mode or _default_db_mode())
    if mode not in DB_MODES:
        raise ValueError(f"db_mode={mode!r}: choose one of {DB_MODES}")
    scale = scale.reshape(()).to(device=dev, dtype=acc_t)
    if n == 0 or m == 0:
        return torch.zeros_like(a), torch.zeros_like(b), torch.zeros((), dtype=acc_t, device=dev)
    vec = [t.reshape(-1).to(device=dev, dtype=acc_t).contiguous()
           for t in (row_lse, col_lse, g_row, g_col)]
    cls = _dtype_class(a.dtype)
    ACC, OPS, PREC, MM = _kernel_consts(a.dtype)
    consts = dict(ACC=ACC, OPS=OPS, PREC=PREC, MM=MM)
    interp = triton_interpreted()
    fixed = deterministic or len(_BWD_CONFIGS[cls]) == 1 or n * m < _TUNE_MIN_LOGITS

    da = torch.empty((n, d), dtype=acc_t, device=dev)  # every element is stored by the kernel
    atomic = mode == "atomic"
    db = torch.zeros((m, d), dtype=acc_t, device=dev) if atomic else da  # da: unused dummy
    dsp = torch.zeros(triton.cdiv(n, _min_block(_BWD_CONFIGS, "BM", cls)), dtype=acc_t,
                      device=dev)
    strides = (a.stride(0), a.stride(1), b.stride(0), b.stride(1))
    row_args = (a, b, scale, *vec, da, db, dsp, n, m, d, offset, *strides)

    def row_grid(meta):
        return (triton.cdiv(n, meta["BM"]),)

    with _device_ctx(dev):
        if interp:
            _bwd_rows_kernel[row_grid](*row_args, **_INTERP_BWD, **consts, DB_ATOMIC=atomic)
        elif fixed:
            cfg = _BWD_CONFIGS[cls][0]
            _bwd_rows_kernel[row_grid](*row_args, **cfg.kwargs, **consts, DB_ATOMIC=atomic,
                                       num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        else:
            name = "rows_atomic" if atomic else "rows"
            _tuned_kernel(name, cls)[row_grid](*row_args, **consts, DB_ATOMIC=atomic)

        if not atomic:
            splits = _col_splits(n, m, dev)
            dbp = torch.zeros((splits, m, d), dtype=acc_t, device=dev)
            col_args = (a, b, scale, *vec, dbp, n, m, d, offset, *strides)

            def col_grid(meta):
                return (triton.cdiv(m, meta["BN"]), splits)

            if interp:
                _bwd_cols_kernel[col_grid](*col_args, **_INTERP_BWD, **consts)
            elif fixed:
                cfg = _BWD_CONFIGS[cls][0]
                _bwd_cols_kernel[col_grid](*col_args, **cfg.kwargs, **consts,
                                           num_warps=cfg.num_warps, num_stages=cfg.num_stages)
            else:
                _tuned_kernel("cols", cls)[col_grid](*col_args, **consts)
            db = dbp[0] if splits == 1 else dbp.sum(0)

    return da.to(a.dtype), db.to(b.dtype), dsp.sum()
