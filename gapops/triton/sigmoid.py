"""The Triton backend of the sigmoid (SigLIP) strip (docs/design.md section 2.6; docs/triton.md).

``sigmoid_strip`` has the signature and return convention of
``gapops.reference.reference_sigmoid_strip``. Two shapes (kernels in sigmoid_kernels.py):

- loss only (want_grads False): ``sigmoid_loss_kernel``, one product, the softplus terms summed
  per row; the columns are split over ``n_split`` programs per row block when the row blocks
  alone would not fill the GPU, and the host adds the splits in a fixed order.
- with gradients: the G-strip shape of the softmax backward (design 2.5 (b)). For R rows at a
  time ``sigmoid_gstrip_kernel`` writes W = 2^k s rho G sigma (input dtype) plus per-tile
  partials of the row losses, grad_scale and grad_bias; grad_a[rows] = W @ B and
  grad_b += W^T @ A_rows run as torch products with fp32 (fp64) output. 3 products in all.

Both are deterministic by construction (no atomics, fixed summation orders); deterministic=True
also pins the first config, so that the bits do not depend on what the autotuner picked. The
kernels are launched through ``configs.launch`` with the softmax kernels' configs of the same
shape: the loss kernel with kind 'fwd', the G-strip kernel with kind 'gstrip'.

fp16 weights: |G_ij| <= |w_i|, so |W| <= |s| max rho max sigma max|w|; fp16 W is multiplied by
the power of two 2^k (on the device: no host sync) that maps this bound into [2^14, 2^15), so
that no weight underflows fp16's subnormals, and the fp32 products are multiplied by 2^-k. bf16
has fp32's exponent range and needs none (k = 0).
"""
from __future__ import annotations

import torch
import triton

from .._dtypes import accumulation_dtype
from . import configs
from .common import check_grid, device_ctx, kernel_consts, num_sms
from .strip import (_check, _operands, _routed, _vec, gstrip_grid, gstrip_plan, gstrip_products,
                    routes_columns_in_kernel)
from .sigmoid_kernels import sigmoid_gstrip_kernel, sigmoid_loss_kernel

__all__ = ["sigmoid_strip"]

# the most tiles a row block's columns are split into for the loss-only kernel
_MAX_SPLIT_BLOCK = 128


def sigmoid_strip(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale, bias,
                  offset: int, g_row=None, want_loss: bool = True, want_grads: bool = True,
                  deterministic: bool = False):
    """The sigmoid strip of docs/design.md section 2.6 on the Triton kernels.

    a, a_alt: [n, d]; b, b_alt: [m, d] (one dtype: fp16/bf16/fp32/fp64; any strides); a_swap [n],
    b_swap [m]: bool or None; a_inv_norm [n], b_inv_norm [m], scale, bias (0-dim), g_row [n] or
    None (ones): accumulation dtype (fp32; fp64 for fp64). Positive of row i at column i + offset.
    Returns (row_loss [n] (empty unless want_loss), grad_a [n, d], grad_b [m, d] (empty [0, d]
    unless want_grads), grad_scale [], grad_bias []) in the accumulation dtype; grad_a row i
    belongs to the routed row A_i (inverse norms held fixed); grad_scale and grad_bias are 0
    unless want_grads.
    """
    _check(a, a_alt, b, b_alt, offset)
    n, d = a.shape
    m = b.shape[0]
    acc, dev = accumulation_dtype(a.dtype), a.device
    if g_row is not None and g_row.numel() != n:
        raise ValueError(f"sigmoid_strip: g_row must have {n} elements, got {g_row.numel()}")
    zero = torch.zeros((), dtype=acc, device=dev)
    no_grad = torch.empty((0, d), dtype=acc, device=dev)
    row_loss = torch.empty(0, dtype=acc, device=dev)
    if n == 0 or m == 0:
        if want_loss:
            row_loss = torch.zeros(n, dtype=acc, device=dev)
        if not want_grads:
            return row_loss, no_grad, no_grad.clone(), zero, zero.clone()
        return (row_loss, torch.zeros((n, d), dtype=acc, device=dev),
                torch.zeros((m, d), dtype=acc, device=dev), zero, zero.clone())
    if not (want_loss or want_grads):
        return row_loss, no_grad, no_grad.clone(), zero, zero.clone()
    scale, bias = (t.reshape(()).to(device=dev, dtype=acc) for t in (scale, bias))
    ainv, binv = _vec(a_inv_norm, acc, dev), _vec(b_inv_norm, acc, dev)
    with device_ctx(dev):
        if not want_grads:
            return (_loss_only(a, a_alt, a_swap, b, b_alt, b_swap, ainv, binv, scale, bias,
                               offset, deterministic), no_grad, no_grad.clone(), zero,
                    zero.clone())
        w = None if g_row is None else _vec(g_row, acc, dev)
        return _with_grads(a, a_alt, a_swap, b, b_alt, b_swap, ainv, binv, scale, bias, offset,
                           w, want_loss, deterministic)


def _n_split(n: int, m: int, dev: torch.device) -> int:
    """Column splits per row block of the loss-only kernel: enough programs for 2 per SM (row
    blocks counted at the smallest BM of the configs), each split at least one column block.
    A function of the sizes only, so every config writes every split's partial row."""
    row_blocks = triton.cdiv(n, 64)
    want = triton.cdiv(2 * num_sms(dev), row_blocks)
    return max(1, min(want, triton.cdiv(m, _MAX_SPLIT_BLOCK)))


def _loss_only(a, a_alt, a_swap, b, b_alt, b_swap, ainv, binv, scale, bias, offset,
               deterministic):
    n = a.shape[0]
    m = b.shape[0]
    consts = kernel_consts(a.dtype)
    consts.pop("OPS")
    # as the softmax forward (same configs, same pipelining): IEEE fp32 routes B on the host
    if b_swap is not None and not routes_columns_in_kernel("fwd", a.dtype, consts["PREC"]):
        b = b_alt = _routed(b, b_alt, b_swap, 0, m)
        b_swap = None
    ptrs, strides, routing, width, _keep = _operands(a, a_alt, a_swap, b, b_alt, b_swap)
    n_split = _n_split(n, m, a.device)
    lossp = torch.empty((n_split, n), dtype=scale.dtype, device=a.device)

    def grid(meta):
        return check_grid((triton.cdiv(n, meta["BM"]) * n_split,))

    args = (*ptrs, ainv, binv, scale, bias, lossp, n, m, width, offset, n_split,
            configs.tune_bucket(n, m), *strides)
    configs.launch("fwd", sigmoid_loss_kernel, grid, args, {**consts, **routing}, a.dtype,
                   n * m, fixed=deterministic)
    return lossp.sum(0)


def _weight_scale(dtype, scale, ainv, binv, w):
    """2^k (0-dim, on the device) mapping the bound |s| max rho max sigma max|w| of the fp16
    weights into [2^14, 2^15); exactly 1 for the other dtypes. The maxima skip NaN and infinite
    entries (NaN inputs), so that NaN stays confined to the gradients it belongs to."""
    one = torch.ones((), dtype=scale.dtype, device=scale.device)
    if dtype != torch.float16:
        return one

    def finite_max(t):
        return t.abs().nan_to_num(0.0, 0.0, 0.0).amax()

    wmax = one if w is None else finite_max(w)
    bound = finite_max(scale) * finite_max(ainv) * finite_max(binv) * wmax
    e = torch.floor(torch.log2(bound.clamp_min(1e-30)))
    return torch.exp2((14.0 - e).clamp(max=100.0))


def _with_grads(a, a_alt, a_swap, b, b_alt, b_swap, ainv, binv, scale, bias, offset, w,
                want_loss, deterministic):
    n, d = a.shape
    m = b.shape[0]
    acc, dev = scale.dtype, a.device
    ptrs, strides, routing, width, _keep = _operands(a, a_alt, a_swap, b, b_alt, b_swap)
    R, b_chunks, W, min_bm, min_bn = gstrip_plan(a, b, b_swap)
    wscale = _weight_scale(a.dtype, scale, ainv, binv, w)
    tiles = triton.cdiv(R, min_bm) * triton.cdiv(m, min_bn)
    grad_a = torch.empty((n, d), dtype=acc, device=dev)
    grad_b = torch.zeros((m, d), dtype=acc, device=dev)
    row_loss = torch.empty(n if want_loss else 0, dtype=acc, device=dev)
    ds_parts, db_parts = [], []
    consts = {**kernel_consts(a.dtype), **routing, "HAS_G": w is not None,
              "WANT_LOSS": bool(want_loss)}
    for r0 in range(0, n, R):
        r1 = min(r0 + R, n)
        # partials are zeroed: a config of larger blocks leaves some entries unwritten
        lossp = torch.zeros((triton.cdiv(m, min_bn), R) if want_loss else (1, 1), dtype=acc,
                            device=dev)
        dsp = torch.zeros(tiles, dtype=torch.float64, device=dev)  # summed in float64, rounded once
        dbp = torch.zeros(tiles, dtype=torch.float64, device=dev)

        def grid(meta, rows=r1 - r0):
            return gstrip_grid(rows, m, meta["BM"], meta["BN"])

        args = (*ptrs, ainv, binv, scale, bias, ainv if w is None else w, wscale, W, lossp, dsp,
                dbp, r0, r1, m, width, offset, configs.tune_bucket(n, m), *strides, W.stride(0),
                lossp.stride(0))
        configs.launch("gstrip", sigmoid_gstrip_kernel, grid, args, consts, a.dtype, n * m,
                       fixed=deterministic, zero_on_retune=(lossp, dsp, dbp))
        gstrip_products(grad_a[r0:r1], grad_b, W[: r1 - r0], a, a_alt, a_swap, b, b_alt, b_swap,
                        b_chunks, r0, r1)
        if want_loss:
            row_loss[r0:r1] = lossp[:, : r1 - r0].sum(0)
        ds_parts.append(dsp.sum())
        db_parts.append(dbp.sum())
    unscale = 1.0 / wscale
    grad_a.mul_(unscale)
    grad_b.mul_(unscale)
    return (row_loss, grad_a, grad_b, torch.stack(ds_parts).sum().to(acc),
            torch.stack(db_parts).sum().to(acc))
