"""Backward shape (b), G strip (design 2.5): for R rows at a time, ``gstrip_kernel`` recomputes
the cosine tiles and writes the scaled gradient weights W (R x m, in the input dtype; fp16 scaled
by a power of two) plus per-tile d(scale) partials; grad_a = W @ B and grad_b += W^T @ A are two
dense matrix products (torch.mm / addmm with fp32 output on CUDA: cuBLAS speed). Deterministic:
no atomics, fixed summation orders. R is the largest multiple of 128 rows whose W fits the
scratch budget (GAPOPS_TRITON_GSTRIP_MB, default 2048 MiB).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .tile import LOG2E, col_weights, dot_tile, grad_tile, needs_mask, row_weights, routed_rows

_LOG2E: tl.constexpr = tl.constexpr(LOG2E)


@triton.heuristics({
    "EVEN_K": lambda a: a["d"] % a["BK"] == 0,
    "EVEN_MN": lambda a: (a["r1"] - a["r0"]) % a["BM"] == 0 and a["m"] % a["BN"] == 0,
})
@triton.jit
def gstrip_kernel(a_ptr, aalt_off, aswap_ptr, b_ptr, balt_off, bswap_ptr, ainv_ptr, binv_ptr,
                  apos_ptr, bpos_ptr, scale_ptr, row_lse_ptr, col_lse_ptr, g_row_ptr, g_col_ptr,
                  wscale_ptr, w_ptr, dsp_ptr,
                  r0, r1, m, d, offset, tune_bucket,
                  sa0, saa0, sb0, sba0, sw0,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                  EVEN_K: tl.constexpr, EVEN_MN: tl.constexpr,
                  HAS_ASWAP: tl.constexpr, HAS_BSWAP: tl.constexpr, ACC: tl.constexpr,
                  OPS: tl.constexpr, PREC: tl.constexpr, MM: tl.constexpr):
    """Program p = i cdiv(m, BN) + j (a 1-D grid: strip.gstrip_grid): rows r0 + i BM..,
    columns j BN..; W row r - r0 at w_ptr + (r - r0) sw0; dsp[p] = the tile's d(scale) sum."""
    pid = tl.program_id(0)
    n_cb = tl.cdiv(m, BN)
    pid_m = pid // n_cb
    pid_n = pid - pid_m * n_cb
    s = tl.load(scale_ptr).to(ACC)
    wsc = tl.load(wscale_ptr).to(ACC)
    rows = r0 + pid_m * BM + tl.arange(0, BM)
    cols = pid_n * BN + tl.arange(0, BN)
    rmask = rows < r1
    cmask = cols < m
    a_base = routed_rows(a_ptr, aalt_off, aswap_ptr, rows, rmask, sa0, saa0, HAS_ASWAP)
    b_base = routed_rows(b_ptr, balt_off, bswap_ptr, cols, cmask, sb0, sba0, HAS_BSWAP)
    rho, ap, r2, gr, gpos, wrow = row_weights(rows, rmask, offset, s, wsc, ainv_ptr, apos_ptr,
                                              row_lse_ptr, col_lse_ptr, g_row_ptr, g_col_ptr)
    sig, bp, c2, gc = col_weights(cols, cmask, binv_ptr, bpos_ptr, col_lse_ptr, g_col_ptr)
    dots = dot_tile(a_base, rmask, b_base, cmask, d, BM, BN, BK, EVEN_K, EVEN_MN,
                    ACC, PREC, MM)
    need = needs_mask(pid_m * BM + r0, pid_n * BN, offset, r1, m, BM, BN, EVEN_MN)
    W, dsr = grad_tile(dots, rows, rmask, cols, cmask, offset, s * _LOG2E, rho, ap, r2, gr, gpos,
                       wrow, sig, bp, c2, gc, need, OPS)
    w_rows = (rows - r0).to(tl.int64) * sw0
    tl.store(w_ptr + w_rows[:, None] + cols[None, :], W, mask=rmask[:, None] & cmask[None, :])
    tl.store(dsp_ptr + pid, tl.sum(dsr, axis=0))
