"""The strip forward (design 2.1): relative row and column statistics, one product, n x m never
stored.

``fwd_kernel``: a persistent grid of P = min(row blocks, 2 x SMs) programs; program p takes row
blocks p, p + P, ... (the outer loop, one sweep each, ending in the CTA barrier) and sweeps
every column block of each. Inside a sweep the column loop and the K loop are one flattened loop
that recomputes its operand pointers from the step every iteration, so that Triton's software
pipeliner turns its loads into 16-byte async copies with several stages in flight, also across
the epilogue of a tile (the costly part: two exp2 per logit). A barrier inside that loop, or
pointers carried from one iteration to the next, stops the pipeliner (issue 16; the static check
benchmarks/gpu_static.py fails then).
Each tile feeds (a) the row states (M2, S) in registers, finalized at the end of a sweep, and
(b) the program's column partial states in a [P, m] buffer that only program p touches: its
first sweep stores, later sweeps merge. ``col_combine_kernel`` merges the P partials of a column
in the fixed order p = 0..P-1, reading P from where program 0 of the last launch wrote it.

States are relative and in base-2 units: y = s log2(e) (cos - pos), M2 = max(0, max y) and
S = sum over the non-positive terms of 2^(y - M2); the positive's exact term 1 is added at the
finalization (tile.rel_lse_finalize).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .tile import (LOG2E, NEG_INF, exp2, load_k_chunk, mm, needs_mask, rel_lse_finalize,
                   routed_rows)

_LOG2E: tl.constexpr = tl.constexpr(LOG2E)


@triton.heuristics({
    "EVEN_K": lambda a: a["d"] % a["BK"] == 0,
    "EVEN_MN": lambda a: a["n"] % a["BM"] == 0 and a["m"] % a["BN"] == 0,
})
@triton.jit
def fwd_kernel(a_ptr, aalt_off, aswap_ptr, b_ptr, balt_off, bswap_ptr, ainv_ptr, binv_ptr,
               apos_ptr, bpos_ptr, scale_ptr, row_lse_ptr, pm_ptr, ps_ptr, nprog_ptr,
               n, m, d, offset, tune_bucket,
               sa0, saa0, sb0, sba0,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
               EVEN_K: tl.constexpr, EVEN_MN: tl.constexpr,
               HAS_ASWAP: tl.constexpr, HAS_BSWAP: tl.constexpr,
               ACC: tl.constexpr, PREC: tl.constexpr, MM: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if pid == 0:
        tl.store(nprog_ptr, nprog)  # the combine merges exactly the partials of this launch
    s2 = tl.load(scale_ptr).to(ACC) * _LOG2E
    n_cb = tl.cdiv(m, BN)
    k_steps = tl.cdiv(d, BK)
    ar = tl.arange(0, BM)
    ac = tl.arange(0, BN)
    # outer loop: this program's row blocks (a sweep each); it holds the CTA barrier, which
    # would stop the software pipeliner inside the inner loop
    for rb in range(pid, tl.cdiv(n, BM), nprog):
        rows = rb * BM + ar
        rmask = rows < n
        rho = tl.load(ainv_ptr + rows, mask=rmask, other=0.0)
        ap = tl.load(apos_ptr + rows, mask=rmask, other=0.0)
        # the sweep's row pointers: defined outside the inner loop, so not loop-carried
        a_base = routed_rows(a_ptr, aalt_off, aswap_ptr, rows, rmask, sa0, saa0, HAS_ASWAP)
        acc = tl.zeros([BM, BN], dtype=ACC)
        Mr = tl.zeros([BM], dtype=ACC)
        Sr = tl.zeros([BM], dtype=ACC)
        # inner loop: column blocks x K chunks flattened into one pipelined loop. The operand
        # pointers are recomputed from the step every iteration (not carried across
        # iterations), so the compiler keeps their alignment: 16-byte async copies
        for step in range(0, n_cb * k_steps):
            cb = step // k_steps
            ki = step - cb * k_steps
            cols = cb * BN + ac
            cmask = cols < m
            b_base = routed_rows(b_ptr, balt_off, bswap_ptr, cols, cmask, sb0, sba0, HAS_BSWAP)
            ks = ki * BK + tl.arange(0, BK)
            a = load_k_chunk(a_base, rmask, ks, d, EVEN_K, EVEN_MN, False)
            bt = load_k_chunk(b_base, cmask, ks, d, EVEN_K, EVEN_MN, True)
            acc = mm(a, bt, acc, PREC, MM)
            if ki == k_steps - 1:  # epilogue of tile (rb, cb)
                sig = tl.load(binv_ptr + cols, mask=cmask, other=0.0)
                bp = tl.load(bpos_ptr + cols, mask=cmask, other=0.0)
                cos = acc * rho[:, None] * sig[None, :]
                acc = tl.zeros([BM, BN], dtype=ACC)
                yr = (cos - ap[:, None]) * s2
                yc = (cos - bp[None, :]) * s2
                if needs_mask(rb * BM, cb * BN, offset, n, m, BM, BN, EVEN_MN):
                    kill = (cols[None, :] == rows[:, None] + offset) | \
                        ~(rmask[:, None] & cmask[None, :])
                    yr = tl.where(kill, NEG_INF, yr)
                    yc = tl.where(kill, NEG_INF, yc)
                # rows: running state in registers (M2 >= 0, so dead lanes' -inf give 0)
                m_new = tl.maximum(Mr, tl.max(yr, axis=1))
                Sr = Sr * exp2(Mr - m_new) + tl.sum(exp2(yr - m_new[:, None]), axis=1)
                Mr = m_new
                # columns: merge into this program's partial (its first sweep starts at (0, 0))
                pp = pid.to(tl.int64) * m + cols
                seen = cmask & (rb != pid)
                om = tl.load(pm_ptr + pp, mask=seen, other=0.0)
                os_ = tl.load(ps_ptr + pp, mask=seen, other=0.0)
                cm = tl.maximum(om, tl.max(yc, axis=0))
                cs = os_ * exp2(om - cm) + tl.sum(exp2(yc - cm[None, :]), axis=0)
                tl.store(pm_ptr + pp, cm, mask=cmask)
                tl.store(ps_ptr + pp, cs, mask=cmask)
        # end of the sweep: every row has its positive
        tl.store(row_lse_ptr + rows, rel_lse_finalize(Mr, Sr, True), mask=rmask)
        # the next sweep's threads read back partials other threads stored: order them
        # (issue 10, defect 3's pattern) with a CTA barrier, once per sweep, outside the
        # pipelined loop
        tl.debug_barrier()


@triton.jit
def col_combine_kernel(pm_ptr, ps_ptr, nprog_ptr, col_lse_ptr, n, m, offset,
                       BLOCK: tl.constexpr, ACC: tl.constexpr):
    """col_lse_j from the P partial states (P read from nprog_ptr), merged in order p = 0..P-1."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cmask = cols < m
    P = tl.load(nprog_ptr)
    mx = tl.zeros([BLOCK], dtype=ACC)
    pm_p = pm_ptr + cols
    for _ in range(0, P):
        mx = tl.maximum(mx, tl.load(pm_p, mask=cmask, other=0.0))
        pm_p += m
    tot = tl.zeros([BLOCK], dtype=ACC)
    pm_p = pm_ptr + cols
    ps_p = ps_ptr + cols
    for _ in range(0, P):
        pm = tl.load(pm_p, mask=cmask, other=0.0)
        tot += tl.load(ps_p, mask=cmask, other=0.0) * exp2(pm - mx)
        pm_p += m
        ps_p += m
    has_pos = (cols >= offset) & (cols < offset + n)
    tl.store(col_lse_ptr + cols, rel_lse_finalize(mx, tot, has_pos), mask=cmask)
