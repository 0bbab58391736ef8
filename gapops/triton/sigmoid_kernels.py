"""Kernels of the sigmoid (SigLIP) strip (docs/design.md section 2.6; host code in sigmoid.py).

Every pair's term and gradient weight come from its own logit z_ij = s cos_ij + bias, so both
kernels are the tile product (tile.dot_tile over the routed raw rows) plus a small elementwise
epilogue on t = -l_ij z_ij (l = +1 at the positive j = i + offset, -1 elsewhere):

    u = e^{-|t|}                                   (one exp2, shared by both forms below)
    softplus(t) = max(t, 0) + log1p(u)             (the stable form; the loss term)
    sigmoid(t)  = [t >= 0 ? 1 : u] / (1 + u)       (never 1 - sigmoid: no cancellation)
    G_ij = -l_ij w_i sigmoid(t)                    (the gradient weight, design 2.6)

``sigmoid_loss_kernel``: the loss only (no gradients wanted). Program (row block, split) sweeps
the column blocks split, split + n_split, ... and writes its rows' softplus sums to its own row of
a [n_split, n] partial buffer (no atomics; the host sums the splits in a fixed order).

``sigmoid_gstrip_kernel``: the G-strip shape of the softmax backward (design 2.5 (b)): one
[BM, BN] tile per program over rows r0..r1, writing W_ij = 2^k s rho_i G_ij sigma_j (input dtype,
fp16 scaled by a power of two) for the two torch products, plus per-tile partials of the row
losses, of grad_scale = sum G cos and of grad_bias = sum G. A 1-D grid (tile id -> row block,
column block) keeps any m within CUDA's grid limits.

The operands follow the softmax kernels' conventions (docs/triton.md): rows of unit inner
stride and a width d that is a multiple of 16 (the launcher pads), the routing alternative as an
element offset (``tile.routed_rows``), int32 swap masks.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .tile import LOG2E, dot_tile, exp2, log1p, routed_rows

_LOG2E: tl.constexpr = tl.constexpr(LOG2E)


@triton.jit
def signed_logits(dots, rho, sig, s, bias, rows, cols, offset):
    """(cos [BM, BN], pos (l = +1), t = -l z, u = e^-|t|) of a tile of raw dots A_i . B_j."""
    cos = dots * rho[:, None] * sig[None, :]
    z = cos * s + bias
    pos = cols[None, :] == rows[:, None] + offset
    t = tl.where(pos, -z, z)
    u = exp2(-tl.abs(t) * _LOG2E)
    return cos, pos, t, u


@triton.jit
def softplus(t, u):
    """log(1 + e^t) from t and u = e^-|t| (NaN stays NaN through log1p)."""
    return tl.maximum(t, 0.0) + log1p(u)


@triton.heuristics({
    "EVEN_K": lambda a: a["d"] % a["BK"] == 0,
    "EVEN_MN": lambda a: a["n"] % a["BM"] == 0 and a["m"] % a["BN"] == 0,
})
@triton.jit
def sigmoid_loss_kernel(a_ptr, aalt_off, aswap_ptr, b_ptr, balt_off, bswap_ptr, ainv_ptr,
                        binv_ptr, scale_ptr, bias_ptr, lossp_ptr,
                        n, m, d, offset, n_split, tune_bucket,
                        sa0, saa0, sb0, sba0,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                        EVEN_K: tl.constexpr, EVEN_MN: tl.constexpr,
                        HAS_ASWAP: tl.constexpr, HAS_BSWAP: tl.constexpr,
                        ACC: tl.constexpr, PREC: tl.constexpr, MM: tl.constexpr):
    """Program pid: row block pid // n_split, split pid % n_split; writes
    lossp[split, i] = sum over its column blocks of softplus(-l_ij z_ij) for its rows i."""
    pid = tl.program_id(0)
    rb = pid // n_split
    split = pid % n_split
    s = tl.load(scale_ptr).to(ACC)
    bias = tl.load(bias_ptr).to(ACC)
    rows = rb * BM + tl.arange(0, BM)
    rmask = rows < n
    a_base = routed_rows(a_ptr, aalt_off, aswap_ptr, rows, rmask, sa0, saa0, HAS_ASWAP)
    rho = tl.load(ainv_ptr + rows, mask=rmask, other=0.0)
    total = tl.zeros([BM], dtype=ACC)
    for cb in range(split, tl.cdiv(m, BN), n_split):
        cols = cb * BN + tl.arange(0, BN)
        cmask = cols < m
        b_base = routed_rows(b_ptr, balt_off, bswap_ptr, cols, cmask, sb0, sba0, HAS_BSWAP)
        sig = tl.load(binv_ptr + cols, mask=cmask, other=0.0)
        dots = dot_tile(a_base, rmask, b_base, cmask, d, BM, BN, BK, EVEN_K, EVEN_MN, ACC, PREC,
                        MM)
        _, _, t, u = signed_logits(dots, rho, sig, s, bias, rows, cols, offset)
        sp = softplus(t, u)
        if not EVEN_MN:
            sp = tl.where(rmask[:, None] & cmask[None, :], sp, 0.0)
        total += tl.sum(sp, axis=1)
    tl.store(lossp_ptr + split.to(tl.int64) * n + rows, total, mask=rmask)


@triton.heuristics({
    "EVEN_K": lambda a: a["d"] % a["BK"] == 0,
    "EVEN_MN": lambda a: (a["r1"] - a["r0"]) % a["BM"] == 0 and a["m"] % a["BN"] == 0,
})
@triton.jit
def sigmoid_gstrip_kernel(a_ptr, aalt_off, aswap_ptr, b_ptr, balt_off, bswap_ptr, ainv_ptr,
                          binv_ptr, scale_ptr, bias_ptr, g_row_ptr, wscale_ptr, w_ptr, lossp_ptr,
                          dsp_ptr, dbp_ptr,
                          r0, r1, m, d, offset, tune_bucket,
                          sa0, saa0, sb0, sba0, sw0, sl0,
                          BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                          EVEN_K: tl.constexpr, EVEN_MN: tl.constexpr,
                          HAS_ASWAP: tl.constexpr, HAS_BSWAP: tl.constexpr,
                          HAS_G: tl.constexpr, WANT_LOSS: tl.constexpr, ACC: tl.constexpr,
                          OPS: tl.constexpr, PREC: tl.constexpr, MM: tl.constexpr):
    """Tile pid of rows r0.. (row block pid // cdiv(m, BN), column block pid % cdiv(m, BN)):
    W row r - r0 at w_ptr + (r - r0) sw0; lossp[cb * sl0 + r - r0] = the tile's softplus row
    sums (WANT_LOSS); dsp[pid], dbp[pid] = the tile's sums of G cos and of G. HAS_G: per-row
    upstream weights g_row, else ones."""
    pid = tl.program_id(0)
    n_cb = tl.cdiv(m, BN)
    rb = pid // n_cb
    cb = pid % n_cb
    s = tl.load(scale_ptr).to(ACC)
    bias = tl.load(bias_ptr).to(ACC)
    wsc = tl.load(wscale_ptr).to(ACC)
    rows = r0 + rb * BM + tl.arange(0, BM)
    cols = cb * BN + tl.arange(0, BN)
    rmask = rows < r1
    cmask = cols < m
    a_base = routed_rows(a_ptr, aalt_off, aswap_ptr, rows, rmask, sa0, saa0, HAS_ASWAP)
    b_base = routed_rows(b_ptr, balt_off, bswap_ptr, cols, cmask, sb0, sba0, HAS_BSWAP)
    rho = tl.load(ainv_ptr + rows, mask=rmask, other=0.0)
    sig = tl.load(binv_ptr + cols, mask=cmask, other=0.0)
    dots = dot_tile(a_base, rmask, b_base, cmask, d, BM, BN, BK, EVEN_K, EVEN_MN, ACC, PREC, MM)
    cos, pos, t, u = signed_logits(dots, rho, sig, s, bias, rows, cols, offset)
    sg = tl.where(t >= 0.0, 1.0, u) / (1.0 + u)  # sigmoid(t); NaN when t is NaN
    G = tl.where(pos, -sg, sg)  # -l sigmoid(-l z)
    if HAS_G:
        G = G * tl.load(g_row_ptr + rows, mask=rmask, other=0.0)[:, None]
    live = rmask[:, None] & cmask[None, :]
    if not EVEN_MN:
        G = tl.where(live, G, 0.0)
    W = (G * (s * rho * wsc)[:, None] * sig[None, :]).to(OPS)
    w_rows = (rows - r0).to(tl.int64) * sw0
    tl.store(w_ptr + w_rows[:, None] + cols[None, :], W, mask=live)
    if WANT_LOSS:
        sp = softplus(t, u)
        if not EVEN_MN:
            sp = tl.where(live, sp, 0.0)
        tl.store(lossp_ptr + cb.to(tl.int64) * sl0 + (rows - r0), tl.sum(sp, axis=1), mask=rmask)
    # grad_scale and grad_bias partials: the negatives' terms summed per row in the accumulation
    # dtype, the positive's term (G ~ -1, far larger, and of either sign times cos) and the rows
    # in float64, as the CPU strip does: the positives cancel each other across rows
    gc = G * cos
    ds_rows = tl.sum(tl.where(pos, 0.0, gc), axis=1).to(tl.float64)
    db_rows = tl.sum(tl.where(pos, 0.0, G), axis=1).to(tl.float64)
    ds_rows += tl.sum(tl.where(pos, gc, 0.0).to(tl.float64), axis=1)
    db_rows += tl.sum(tl.where(pos, G, 0.0).to(tl.float64), axis=1)
    tl.store(dsp_ptr + pid, tl.sum(ds_rows, axis=0))
    tl.store(dbp_ptr + pid, tl.sum(db_rows, axis=0))
