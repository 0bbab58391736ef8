"""The Triton backend's strip entry points: launchers and host-side work (docs/design.md
section 2.1; docs/triton.md tells how).

``strip_forward`` / ``strip_backward`` have the signatures of ``gapops.reference``'s strip
functions. The kernels read the raw feature rows with per-row swap routing, apply the fp32
inverse norms to the fp32 dot tiles, keep every statistic relative to the positives' cosines and
return gradients w.r.t. the raw routed rows (inverse norms held fixed), in the accumulation dtype.
No swapped or normalized [N, d] copy is made.

Products: tensor cores in the input dtype with fp32 accumulation (fp32 inputs: 'ieee' unless
torch.backends.cuda.matmul.allow_tf32); float64 inputs multiply elementwise in float64 (for
gradcheck). The backward has two shapes (design 2.5), chosen by ``bwd_shape=`` or
GAPOPS_TRITON_BWD=fused|gstrip: 'gstrip' (the default: see benchmarks/RESULTS.md for how the two
compare; deterministic) and 'fused' (relaxed atomics; not deterministic, so deterministic=True
always runs 'gstrip').

fp16 gradient weights: W = s rho_i G_ij sigma_j is ~1e-8 at N = 32k, under fp16's smallest
subnormal (6e-8), so fp16 weights are multiplied by a power of two 2^k chosen on the device from
a bound on |W| (s max rho max sigma (max|g_row| + max|g_col|), which maps to [2^14, 2^15)) and
the fp32 products are multiplied by 2^-k.
"""
from __future__ import annotations

import os

import torch
import triton

from .._dtypes import FLOAT_DTYPES, accumulation_dtype, triton_interpreted
from . import configs
from .backward_fused import fused_bwd_kernel
from .backward_gstrip import gstrip_kernel
from .common import (aligned_rows, aligned_width, alt_offset, check_grid, device_ctx, kernel_consts,
                     num_sms, swap_arg)
from .forward import col_combine_kernel, fwd_kernel

__all__ = ["strip_forward", "strip_backward", "BWD_SHAPES", "DEFAULT_BWD_SHAPE"]

BWD_SHAPES = ("gstrip", "fused")
DEFAULT_BWD_SHAPE = "gstrip"  # the GPU check times both shapes (benchmarks/RESULTS.md)
_COMBINE_BLOCK = 256
_GSTRIP_ROW_MULTIPLE = 128


def _check(a, a_alt, b, b_alt, offset):
    n, m = a.shape[0], b.shape[0]
    for name, t, rows in (("a", a, n), ("a_alt", a_alt, n), ("b", b, m), ("b_alt", b_alt, m)):
        if t.dim() != 2 or t.shape[0] != rows or t.shape[1] != a.shape[1]:
            raise ValueError(f"strip: {name} must be [{rows}, {a.shape[1]}], got {tuple(t.shape)}")
        if t.dtype != a.dtype or t.device != a.device:
            raise ValueError("strip: a, a_alt, b, b_alt must share dtype and device")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"strip: unsupported dtype {a.dtype}")
    if not 0 <= offset <= m - n:
        raise ValueError(f"strip: offset {offset} outside [0, m - n] = [0, {m - n}]")


def _vec(t, acc, dev):
    return t.reshape(-1).to(device=dev, dtype=acc).contiguous()


def _operands(a, a_alt, a_swap, b, b_alt, b_swap):
    """(pointer arguments, row strides, routing constexprs, row width, keep) of every kernel;
    the alternatives are passed as element offsets from their operands (tile.routed_rows).
    The feature operands are passed as the kernels read them (common.aligned_rows: unit inner
    stride, rows of a multiple of 16 elements, zero-padded copies only where the inputs are
    not so); the width is the kernels' d. ``keep``: the tensors the offsets point into, which
    the caller holds until its launches are queued (the kernels see only offsets of them)."""
    width = aligned_width(a.shape[1])
    seen = {}

    def aligned(x):  # one copy for a tensor passed twice (a_alt = a without routing)
        key = (x.data_ptr(), x.shape, x.stride())
        if key not in seen:
            seen[key] = aligned_rows(x, width)
        return seen[key]

    a, a_alt, b, b_alt = (aligned(x) for x in (a, a_alt, b, b_alt))
    asw, has_a = swap_arg(a_swap, a)
    bsw, has_b = swap_arg(b_swap, b)
    ptrs = (a, alt_offset(a, a_alt), asw, b, alt_offset(b, b_alt), bsw)
    strides = (a.stride(0), a_alt.stride(0), b.stride(0), b_alt.stride(0))
    return ptrs, strides, dict(HAS_ASWAP=has_a, HAS_BSWAP=has_b), width, (a_alt, b_alt)


def routes_columns_in_kernel(kind: str, dtype: torch.dtype, precision: str) -> bool:
    """Whether ``kind``'s kernel routes the column operand B itself (else the launcher passes a
    routed copy). Not the forward with IEEE fp32 products: there the per-step load of the
    columns' routing mask left Triton's pipeliner a single buffer (gpu_static.py, Triton 3.8.0,
    2026-12-03); the copy costs one pass over B, against n x m x d FMA products."""
    return not (kind == "fwd" and dtype == torch.float32 and precision == "ieee")


def strip_forward(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                  scale, offset: int, deterministic: bool | None = None):
    """(row_lse [n], col_lse [m]) of the strip, relative to the positives (design 2.1).

    a, a_alt: [n, d]; b, b_alt: [m, d] (one dtype: fp16/bf16/fp32/fp64; any strides);
    a_swap [n], b_swap [m]: bool or None; a_inv_norm, a_pos [n], b_inv_norm, b_pos [m], scale
    (0-dim): accumulation dtype (fp32; fp64 for fp64). Outputs in the accumulation dtype.
    deterministic: run the fixed config of (dtype class, d), never the autotuner's pick, so that
    every process gets the same bits (default: torch.are_deterministic_algorithms_enabled()).
    """
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    _check(a, a_alt, b, b_alt, offset)
    n, d = a.shape
    m = b.shape[0]
    acc, dev = accumulation_dtype(a.dtype), a.device
    if n == 0 or m == 0:
        return (torch.zeros(n, dtype=acc, device=dev), torch.full((m,), float("-inf"),
                                                                   dtype=acc, device=dev))
    scale = scale.reshape(()).to(device=dev, dtype=acc)
    ainv, binv, apos, bpos = (_vec(t, acc, dev) for t in (a_inv_norm, b_inv_norm, a_pos, b_pos))
    consts = kernel_consts(a.dtype)
    if b_swap is not None and not routes_columns_in_kernel("fwd", a.dtype, consts["PREC"]):
        b = b_alt = _routed(b, b_alt, b_swap, 0, m)  # one [m, d] copy, routed on the host
        b_swap = None
    ptrs, strides, routing, width, _keep = _operands(a, a_alt, a_swap, b, b_alt, b_swap)
    consts.pop("OPS")
    cap = 2 * num_sms(dev)
    min_bm = min(c.kwargs["BM"] for c in configs._configs("fwd", configs.dtype_class(a.dtype)))
    # one partial row per program of the smallest-BM config; the combine reads only the rows
    # the last launch's programs wrote (their count is stored in nprog)
    p_alloc = min(triton.cdiv(n, min_bm), cap)
    pm = torch.empty((p_alloc, m), dtype=acc, device=dev)
    ps = torch.empty((p_alloc, m), dtype=acc, device=dev)
    nprog = torch.zeros(1, dtype=torch.int32, device=dev)
    row_lse = torch.empty(n, dtype=acc, device=dev)
    col_lse = torch.empty(m, dtype=acc, device=dev)

    def grid(meta):
        return check_grid((min(triton.cdiv(n, meta["BM"]), cap),))

    args = (*ptrs, ainv, binv, apos, bpos, scale, row_lse, pm, ps, nprog, n, m, width, offset,
            configs.tune_bucket(n, m), *strides)
    with device_ctx(dev):
        configs.launch("fwd", fwd_kernel, grid, args, {**consts, **routing}, a.dtype, n * m,
                       fixed=deterministic)
        col_combine_kernel[(triton.cdiv(m, _COMBINE_BLOCK),)](
            pm, ps, nprog, col_lse, n, m, offset, BLOCK=_COMBINE_BLOCK, ACC=consts["ACC"])
    return row_lse, col_lse


strip_forward.takes_deterministic = True  # _dispatch.strip_kernels passes deterministic=


def _default_bwd_shape() -> str:
    shape = os.environ.get("GAPOPS_TRITON_BWD", DEFAULT_BWD_SHAPE)
    if shape not in BWD_SHAPES:
        raise ValueError(f"GAPOPS_TRITON_BWD={shape!r}: choose one of {BWD_SHAPES}")
    return shape


def _weight_scale(dtype, scale, ainv, binv, g_row, g_col):
    """2^k (0-dim, accumulation dtype, on the device: no host sync) that keeps the fp16 weights
    W = s rho G sigma within [2^-24, 2^15): |G_ij| <= |g_row_i| + |g_col_j| since the complete
    statistics make every probability <= 1. Exactly 1 for the other dtypes."""
    one = torch.ones((), dtype=scale.dtype, device=scale.device)
    if dtype != torch.float16:
        return one
    bound = scale.abs() * ainv.abs().amax() * binv.abs().amax() * \
        (g_row.abs().amax() + g_col.abs().amax())
    e = torch.floor(torch.log2(bound.clamp_min(1e-30)))
    return torch.exp2((14.0 - e).clamp(max=100.0))


def effective_bwd_shape(shape: str, deterministic: bool, dtype: torch.dtype) -> str:
    """The backward shape that runs: 'gstrip' when deterministic (the fused shape's atomics are
    not), and on a GPU for dtype classes without shipped fused configs (fp32: the fused kernel
    spilled 4.5 KB with IEEE products and fell to 4-byte loads with TF32; see docs/triton.md).
    The interpreter runs either shape for every dtype (exactness tests of the kernel logic)."""
    if deterministic:
        return "gstrip"
    if shape == "fused" and not triton_interpreted() and \
            configs.dtype_class(dtype) not in configs.CONFIGS["fused"]:
        return "gstrip"
    return shape


def strip_backward(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                   scale, offset: int, row_lse, col_lse, g_row, g_col, deterministic: bool = False,
                   bwd_shape: str | None = None):
    """(grad_a [n, d], grad_b [m, d], grad_scale 0-dim) of the strip (design 2.1), in the
    accumulation dtype; grad_a row i belongs to the routed row A_i (inverse norms held fixed).

    row_lse, col_lse: the complete statistics; g_row [n], g_col [m]. bwd_shape: 'gstrip' or
    'fused' (default: GAPOPS_TRITON_BWD, else DEFAULT_BWD_SHAPE); deterministic=True always runs
    'gstrip', with fixed configs: the same bits on every run; fp32 on a GPU runs 'gstrip' too
    (effective_bwd_shape).
    """
    _check(a, a_alt, b, b_alt, offset)
    shape = bwd_shape or _default_bwd_shape()
    if shape not in BWD_SHAPES:
        raise ValueError(f"bwd_shape={shape!r}: choose one of {BWD_SHAPES}")
    shape = effective_bwd_shape(shape, deterministic, a.dtype)
    n, d = a.shape
    m = b.shape[0]
    acc, dev = accumulation_dtype(a.dtype), a.device
    if n == 0 or m == 0:
        return (torch.zeros((n, d), dtype=acc, device=dev),
                torch.zeros((m, d), dtype=acc, device=dev), torch.zeros((), dtype=acc, device=dev))
    scale = scale.reshape(()).to(device=dev, dtype=acc)
    vecs = [_vec(t, acc, dev) for t in (a_inv_norm, b_inv_norm, a_pos, b_pos)]
    stats = [_vec(t, acc, dev) for t in (row_lse, col_lse, g_row, g_col)]
    wscale = _weight_scale(a.dtype, scale, vecs[0], vecs[1], stats[2], stats[3])
    run = _gstrip_backward if shape == "gstrip" else _fused_backward
    with device_ctx(dev):
        return run(a, a_alt, a_swap, b, b_alt, b_swap, vecs, scale, offset, stats, wscale,
                   deterministic)


def _fused_backward(a, a_alt, a_swap, b, b_alt, b_swap, vecs, scale, offset, stats, wscale,
                    deterministic):
    n, d = a.shape
    m = b.shape[0]
    acc, dev = accumulation_dtype(a.dtype), a.device
    ptrs, strides, routing, width, _keep = _operands(a, a_alt, a_swap, b, b_alt, b_swap)
    min_bm = min(c.kwargs["BM"] for c in configs._configs("fused", configs.dtype_class(a.dtype)))
    # [rows, width]: the kernel's row width; the zero columns past d are cut off at the end
    da = torch.zeros((n, width), dtype=acc, device=dev)
    db = torch.zeros((m, width), dtype=acc, device=dev)
    dsp = torch.empty(triton.cdiv(n, min_bm), dtype=acc, device=dev)
    nprog = torch.zeros(1, dtype=torch.int32, device=dev)

    def grid(meta):
        return check_grid((triton.cdiv(n, meta["BM"]),))

    args = (*ptrs, *vecs, scale, *stats, wscale, da, db, dsp, nprog, n, m, width, offset,
            configs.tune_bucket(n, m), *strides)
    configs.launch("fused", fused_bwd_kernel, grid, args, {**kernel_consts(a.dtype), **routing},
                   a.dtype, n * m, fixed=deterministic, zero_on_retune=(da, db))
    # programs of the last launch only (a tuning run of another BM may have left more entries)
    live = torch.arange(dsp.numel(), device=dev) < nprog.to(torch.int64)
    ds = torch.where(live, dsp, torch.zeros_like(dsp)).sum()
    if width != d:
        da, db = da[:, :d].contiguous(), db[:, :d].contiguous()
    return da, db, ds


def _gstrip_rows(n: int, m: int, elt: int) -> int:
    """Strip height R: the most rows (a multiple of 128) whose weights fit the scratch budget."""
    budget = int(os.environ.get("GAPOPS_TRITON_GSTRIP_MB", "2048")) << 20
    rows = budget // max(1, m * elt) // _GSTRIP_ROW_MULTIPLE * _GSTRIP_ROW_MULTIPLE
    return max(_GSTRIP_ROW_MULTIPLE, min(rows, triton.cdiv(n, _GSTRIP_ROW_MULTIPLE)
                                         * _GSTRIP_ROW_MULTIPLE))


def _routed(x, x_alt, swap, r0, r1):
    """Rows r0..r1 of the routed operand: a view without routing, else an (r1 - r0)-row copy."""
    if swap is None:
        return x[r0:r1]
    return torch.where(swap[r0:r1, None].to(x.device), x_alt[r0:r1], x[r0:r1])


_ADDMM_OUT_DTYPE = [True]  # torch.addmm(..., out_dtype=) works here (CUDA, recent torch)


def _addmm_fp32(out, x, y):
    """out += x @ y with the products in x's dtype and fp32 (fp64) accumulation and output."""
    if x.dtype == out.dtype:
        out.addmm_(x, y)
    elif x.device.type != "cuda":  # CPU (interpreter runs): exact upcast, fp32 accumulation
        out.addmm_(x.to(out.dtype), y.to(out.dtype))
    else:
        if _ADDMM_OUT_DTYPE[0]:
            try:
                torch.addmm(out, x, y, out_dtype=out.dtype, out=out)
                return
            except (TypeError, RuntimeError):
                _ADDMM_OUT_DTYPE[0] = False
        out.add_(torch.mm(x, y, out_dtype=out.dtype))


def gstrip_grid(rows: int, m: int, BM: int, BN: int) -> tuple:
    """The G-strip kernel's launch grid for ``rows`` x ``m``: one program per tile on grid x
    (CUDA allows 2^31 - 1 there, 65535 on y and z: a 2-D grid with one axis per column block
    fails once m > 65535 BN, ~4.2M columns at BN = 64)."""
    return check_grid((triton.cdiv(rows, BM) * triton.cdiv(m, BN),))


def gstrip_plan(a, b, b_swap):
    """The host plan of a G-strip pass over a's rows against b (shared by every G-strip kernel
    family here): (R, b_chunks, w, min_bm, min_bn). R: the strip height; b_chunks: (c0, c1,
    rows or None: route them) of B, whole without routing, else row chunks within the scratch
    budget (B is needed whole for every strip's grad_a); w: the [R, m] weights' scratch, rows
    padded to aligned_width(m) (aligned stores and cuBLAS operands); min_bm, min_bn: the
    smallest blocks of the 'gstrip' configs (sizes of the per-tile partial buffers)."""
    n, d = a.shape
    m = b.shape[0]
    R = min(_gstrip_rows(n, m, a.element_size()), n)
    chunk = max(_GSTRIP_ROW_MULTIPLE, _gstrip_rows(m, d, a.element_size()))
    b_chunks = [(0, m, b)] if b_swap is None else \
        [(c0, min(c0 + chunk, m), None) for c0 in range(0, m, chunk)]
    w = torch.empty((R, aligned_width(m)), dtype=a.dtype, device=a.device)[:, :m]
    cls = configs.dtype_class(a.dtype)
    min_bm = min(c.kwargs["BM"] for c in configs._configs("gstrip", cls))
    min_bn = min(c.kwargs["BN"] for c in configs._configs("gstrip", cls))
    return R, b_chunks, w, min_bm, min_bn


def gstrip_products(da_r, db, ws, a, a_alt, a_swap, b, b_alt, b_swap, b_chunks, r0, r1):
    """The two products of one G strip (rows r0..r1, weights ws [r1 - r0, m]):
    da_r = ws @ B (routed) and db += ws^T @ A[r0:r1] (routed), fp32 (fp64) accumulation."""
    da_r.zero_()
    for c0, c1, bc in b_chunks:
        _addmm_fp32(da_r, ws[:, c0:c1], bc if bc is not None else _routed(b, b_alt, b_swap,
                                                                            c0, c1))
    _addmm_fp32(db, ws.T, _routed(a, a_alt, a_swap, r0, r1))


def _gstrip_backward(a, a_alt, a_swap, b, b_alt, b_swap, vecs, scale, offset, stats, wscale,
                     deterministic):
    n, d = a.shape
    m = b.shape[0]
    acc, dev = accumulation_dtype(a.dtype), a.device
    ptrs, strides, routing, width, _keep = _operands(a, a_alt, a_swap, b, b_alt, b_swap)
    R, b_chunks, w, min_bm, min_bn = gstrip_plan(a, b, b_swap)
    da = torch.empty((n, d), dtype=acc, device=dev)
    db = torch.zeros((m, d), dtype=acc, device=dev)
    ds_parts = []
    consts = {**kernel_consts(a.dtype), **routing}
    for r0 in range(0, n, R):
        r1 = min(r0 + R, n)
        dsp = torch.zeros(triton.cdiv(r1 - r0, min_bm) * triton.cdiv(m, min_bn), dtype=acc,
                          device=dev)

        def grid(meta, rows=r1 - r0):
            return gstrip_grid(rows, m, meta["BM"], meta["BN"])

        args = (*ptrs, *vecs, scale, *stats, wscale, w, dsp, r0, r1, m, width, offset,
                configs.tune_bucket(n, m), *strides, w.stride(0))
        configs.launch("gstrip", gstrip_kernel, grid, args, consts, a.dtype, n * m,
                       fixed=deterministic, zero_on_retune=(dsp,))
        gstrip_products(da[r0:r1], db, w[: r1 - r0], a, a_alt, a_swap, b, b_alt, b_swap,
                        b_chunks, r0, r1)
        ds_parts.append(dsp.sum())
    unscale = 1.0 / wscale
    da.mul_(unscale)
    db.mul_(unscale)
    return da, db, torch.stack(ds_parts).sum()
