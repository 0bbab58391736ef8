"""Jit helpers shared by the Triton strip kernels: routed row pointers, the cosine tile, and the
transcendental functions in the forms the kernels need (docs/design.md section 2.1).

Exponentials are base 2 with log2(e) folded into the scale (``exp2`` is one SFU instruction;
``exp`` is a multiply plus ``exp2``), so the running statistics (M, S) of the kernels are kept in
base-2 units: M2 = M / ln 2, S = sum 2^(y - M2) = sum e^(x - M).
"""
from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

from .._dtypes import triton_interpreted

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
NEG_INF: tl.constexpr = tl.constexpr(float("-inf"))
_LN2: tl.constexpr = tl.constexpr(LN2)
_LOG2E: tl.constexpr = tl.constexpr(LOG2E)
# On a GPU, libdevice gives accurate log1p / expm1 (and fp64 exp2 / log). The interpreter cannot
# run libdevice calls, so there log1p / expm1 use the classic exact-rounding identities on
# numpy's accurate log / exp. TRITON_INTERPRET is read once, at import.
_LIBDEVICE: tl.constexpr = tl.constexpr(not triton_interpreted())


@triton.jit
def exp2(x):
    if (x.dtype == tl.float64) and _LIBDEVICE:
        return libdevice.exp2(x)
    else:
        return tl.exp2(x)


@triton.jit
def log(x):
    if (x.dtype == tl.float64) and _LIBDEVICE:
        return libdevice.log(x)
    else:
        return tl.log(x)


@triton.jit
def log1p(x):
    """log(1 + x) without losing x's digits when x is small."""
    if _LIBDEVICE:
        return libdevice.log1p(x)
    else:
        u = 1.0 + x  # Goldberg: log(u) * x / (u - 1) is exact to rounding when log is
        return tl.where(u == 1.0, x, log(u) * (x / (u - 1.0)))


@triton.jit
def expm1(x):
    """e^x - 1 without cancellation for small x."""
    if _LIBDEVICE:
        return libdevice.expm1(x)
    else:
        u = tl.exp(x)  # Kahan: (u - 1) * x / log(u)
        um1 = u - 1.0
        return tl.where(u == 1.0, x, tl.where(um1 == -1.0, -1.0, um1 * (x / log(u))))


@triton.jit
def rel_lse_finalize(M2, S, HAS_POS):
    """The relative statistic of a state (M2 >= 0 in base-2 units, S), natural log; HAS_POS
    (a tensor of bools or a scalar) says whether the exact positive term 1 is part of it:
    log1p(S) when M2 == 0 (full precision when the positive dominates), else
    M + log(e^-M + S); without the positive M + log(S) (-inf when S underflowed to 0)."""
    with_pos = tl.where(M2 == 0.0, log1p(S), M2 * _LN2 + log(exp2(-M2) + S))
    without = M2 * _LN2 + log(S)
    return tl.where(HAS_POS, with_pos, without)


@triton.jit
def routed_rows(x_ptr, alt_off, swap_ptr, idx, mask, s0, t0, HAS_SWAP: tl.constexpr):
    """Base pointers [B] of rows idx of the routed operand: x[i], or x_alt[i] where swap[i]
    (int32), x_alt being ``alt_off`` elements from x. Rows are contiguous (unit inner stride:
    the launcher guarantees it). Routing is integer arithmetic on the offset, not a pointer
    select: Triton's alignment analysis loses a select's divisibility, and the operand loads
    fall to 2 bytes with no async copies (issue 16). Nothing is added when HAS_SWAP is False."""
    idx64 = idx.to(tl.int64)
    if HAS_SWAP:
        sw = tl.load(swap_ptr + idx, mask=mask, other=0).to(tl.int64)
        base = x_ptr + (idx64 * s0 + sw * (alt_off + idx64 * (t0 - s0)))
    else:
        base = x_ptr + idx64 * s0
    return base


@triton.jit
def mm(x, y, acc, PREC: tl.constexpr, MM: tl.constexpr):
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
def load_k_chunk(base, mask, ks, d, EVEN_K: tl.constexpr, EVEN_B: tl.constexpr,
                 TRANS: tl.constexpr):
    """[B, K] chunk ks of the rows at ``base`` (or its [K, B] transpose when TRANS). EVEN_K: d is
    a multiple of the chunk; EVEN_B: every row is in range; both: a load without a mask."""
    if TRANS:
        ptrs = base[None, :] + ks[:, None]
        kin = ks[:, None] < d
        bin = mask[None, :]
    else:
        ptrs = base[:, None] + ks[None, :]
        kin = ks[None, :] < d
        bin = mask[:, None]
    if EVEN_K:
        if EVEN_B:
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=bin, other=0.0)
    else:
        if EVEN_B:
            x = tl.load(ptrs, mask=kin, other=0.0)
        else:
            x = tl.load(ptrs, mask=bin & kin, other=0.0)
    return x


@triton.jit
def dot_tile(a_base, rmask, b_base, cmask, d,
             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, EVEN_K: tl.constexpr,
             EVEN_MN: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, MM: tl.constexpr):
    """[BM, BN] tile of A_i . B_j (raw rows, no norms), K loop over d in BK chunks."""
    acc = tl.zeros([BM, BN], dtype=ACC)
    for k0 in range(0, d, BK):
        ks = k0 + tl.arange(0, BK)
        a = load_k_chunk(a_base, rmask, ks, d, EVEN_K, EVEN_MN, False)
        bt = load_k_chunk(b_base, cmask, ks, d, EVEN_K, EVEN_MN, True)
        acc = mm(a, bt, acc, PREC, MM)
    return acc


@triton.jit
def grad_tile(dots, rows, rmask, cols, cmask, offset, s2,
              rho, ap, r2, gr, gpos, wrow, sig, bp, c2, gc, NEED_MASK, OPS: tl.constexpr):
    """The scaled gradient weights of one tile and its d(scale) row sums (design 2.1).

    dots: [BM, BN] raw A_i . B_j; per row: rho (inverse norm), ap (positive cosine), r2
    (row_lse / ln 2), gr, gpos (G at the row's positive, by expm1), wrow = s rho_i 2^k; per
    column: sig, bp, c2 (col_lse / ln 2), gc. NEED_MASK (runtime scalar): the tile crosses the
    diagonal j = i + offset or the strip's edge. Returns (W [BM, BN] in OPS, W_ij =
    2^k s rho_i G_ij sigma_j; ds [BM], the cancellation-free d(scale) terms summed per row).
    """
    cos = dots * rho[:, None] * sig[None, :]
    dr = cos - ap[:, None]
    dc = cos - bp[None, :]
    gp = gr[:, None] * exp2(dr * s2 - r2[:, None])
    gq = gc[None, :] * exp2(dc * s2 - c2[None, :])
    G = gp + gq
    dsv = gp * dr + gq * dc
    if NEED_MASK:
        pos = cols[None, :] == rows[:, None] + offset
        live = rmask[:, None] & cmask[None, :]
        G = tl.where(live, tl.where(pos, gpos[:, None], G), 0.0)
        dsv = tl.where(live & (~pos), dsv, 0.0)
    W = (G * wrow[:, None] * sig[None, :]).to(OPS)
    return W, tl.sum(dsv, axis=1)


@triton.jit
def row_weights(rows, rmask, offset, s, wsc, ainv_ptr, apos_ptr, row_lse_ptr, col_lse_ptr,
                g_row_ptr, g_col_ptr):
    """Per-row vectors of grad_tile: (rho, ap, r2, gr, gpos, wrow)."""
    rho = tl.load(ainv_ptr + rows, mask=rmask, other=0.0)
    ap = tl.load(apos_ptr + rows, mask=rmask, other=0.0)
    r = tl.load(row_lse_ptr + rows, mask=rmask, other=0.0)
    gr = tl.load(g_row_ptr + rows, mask=rmask, other=0.0)
    pc = rows + offset  # the positive's column (in range for every row: offset + n <= m)
    cp = tl.load(col_lse_ptr + pc, mask=rmask, other=0.0)
    gcp = tl.load(g_col_ptr + pc, mask=rmask, other=0.0)
    gpos = gr * expm1(-r) + gcp * expm1(-cp)
    return rho, ap, r * _LOG2E, gr, gpos, s * rho * wsc


@triton.jit
def col_weights(cols, cmask, binv_ptr, bpos_ptr, col_lse_ptr, g_col_ptr):
    """Per-column vectors of grad_tile: (sig, bp, c2, gc)."""
    sig = tl.load(binv_ptr + cols, mask=cmask, other=0.0)
    bp = tl.load(bpos_ptr + cols, mask=cmask, other=0.0)
    c = tl.load(col_lse_ptr + cols, mask=cmask, other=0.0)
    gc = tl.load(g_col_ptr + cols, mask=cmask, other=0.0)
    return sig, bp, c * _LOG2E, gc


@triton.jit
def needs_mask(r0, c0, offset, n, m, BM: tl.constexpr, BN: tl.constexpr, EVEN_MN: tl.constexpr):
    """Whether the tile at rows r0.., columns c0.. touches the diagonal or the strip's edge."""
    diag = (c0 < r0 + BM + offset) & (c0 + BN > r0 + offset)
    if EVEN_MN:
        return diag
    else:
        return diag | (r0 + BM > n) | (c0 + BN > m)
