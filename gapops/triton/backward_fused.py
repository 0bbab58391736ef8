"""Backward shape (a), fused (design 2.5): one kernel recomputes each tile, forms the gradient
weights and accumulates both gradients with relaxed fp32 atomics.

One program per row block. For each column block: the cosine tile (1 product), the weights W
(tile.grad_tile) and the d(scale) row sums; then, over d in BD chunks, W @ B_blk added to the
program's rows of grad_a and W^T @ A_blk added to grad_b (2 products), both with
``sem="relaxed"`` atomics: the default acq_rel wraps every add in GPU-scope fences (issue 10),
and nothing here orders against other memory. grad_a goes through atomics as well, although
only its program touches those rows: a read-modify-write would read back, in another layout,
what other threads of the program stored (issue 10, defect 3), and the atomic add moves half
the bytes. Not deterministic (the adds' order varies); deterministic=True uses the G strip.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .tile import col_weights, dot_tile, grad_tile, load_k_chunk, mm, needs_mask, row_weights, \
    routed_rows
from .tile import LOG2E

_LOG2E: tl.constexpr = tl.constexpr(LOG2E)


@triton.heuristics({
    "EVEN_K": lambda a: a["d"] % a["BK"] == 0,
    "EVEN_D": lambda a: a["d"] % a["BD"] == 0,
    "EVEN_MN": lambda a: a["n"] % a["BM"] == 0 and a["m"] % a["BN"] == 0,
})
@triton.jit
def fused_bwd_kernel(a_ptr, aalt_off, aswap_ptr, b_ptr, balt_off, bswap_ptr, ainv_ptr, binv_ptr,
                     apos_ptr, bpos_ptr, scale_ptr, row_lse_ptr, col_lse_ptr, g_row_ptr,
                     g_col_ptr, wscale_ptr, da_ptr, db_ptr, dsp_ptr, nprog_ptr,
                     n, m, d, offset, tune_bucket,
                     sa0, saa0, sb0, sba0,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
                     EVEN_K: tl.constexpr, EVEN_D: tl.constexpr, EVEN_MN: tl.constexpr,
                     HAS_ASWAP: tl.constexpr, HAS_BSWAP: tl.constexpr, ACC: tl.constexpr,
                     OPS: tl.constexpr, PREC: tl.constexpr, MM: tl.constexpr):
    pid = tl.program_id(0)
    if pid == 0:
        tl.store(nprog_ptr, tl.num_programs(0))
    s = tl.load(scale_ptr).to(ACC)
    s2 = s * _LOG2E
    wsc = tl.load(wscale_ptr).to(ACC)  # power of two keeping fp16 weights above underflow
    unscale = 1.0 / wsc
    rows = pid * BM + tl.arange(0, BM)
    rmask = rows < n
    rows64 = rows.to(tl.int64)
    a_base = routed_rows(a_ptr, aalt_off, aswap_ptr, rows, rmask, sa0, saa0, HAS_ASWAP)
    rho, ap, r2, gr, gpos, wrow = row_weights(rows, rmask, offset, s, wsc, ainv_ptr, apos_ptr,
                                              row_lse_ptr, col_lse_ptr, g_row_ptr, g_col_ptr)
    ds = tl.zeros([BM], dtype=ACC)
    for c0 in range(0, m, BN):
        cols = c0 + tl.arange(0, BN)
        cmask = cols < m
        cols64 = cols.to(tl.int64)
        b_base = routed_rows(b_ptr, balt_off, bswap_ptr, cols, cmask, sb0, sba0, HAS_BSWAP)
        sig, bp, c2, gc = col_weights(cols, cmask, binv_ptr, bpos_ptr, col_lse_ptr, g_col_ptr)
        dots = dot_tile(a_base, rmask, b_base, cmask, d, BM, BN, BK, EVEN_K, EVEN_MN,
                        ACC, PREC, MM)
        W, dsr = grad_tile(dots, rows, rmask, cols, cmask, offset, s2, rho, ap, r2, gr, gpos,
                           wrow, sig, bp, c2, gc,
                           needs_mask(pid * BM, c0, offset, n, m, BM, BN, EVEN_MN), OPS)
        ds += dsr
        Wt = tl.trans(W)
        for k0 in range(0, d, BD):
            ks = k0 + tl.arange(0, BD)
            kmask = ks < d
            bb = load_k_chunk(b_base, cmask, ks, d, EVEN_D, EVEN_MN, False)  # [BN, BD]
            da = mm(W, bb, tl.zeros([BM, BD], dtype=ACC), PREC, MM) * unscale
            tl.atomic_add(da_ptr + rows64[:, None] * d + ks[None, :], da,
                          mask=rmask[:, None] & kmask[None, :], sem="relaxed")
            aa = load_k_chunk(a_base, rmask, ks, d, EVEN_D, EVEN_MN, False)  # [BM, BD]
            db = mm(Wt, aa, tl.zeros([BN, BD], dtype=ACC), PREC, MM) * unscale
            tl.atomic_add(db_ptr + cols64[:, None] * d + ks[None, :], db,
                          mask=cmask[:, None] & kmask[None, :], sem="relaxed")
    tl.store(dsp_ptr + pid, tl.sum(ds, axis=0))
