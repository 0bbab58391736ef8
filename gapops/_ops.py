"""torch.library glue: the differentiable per-pair loss op, its backward op, fake kernels.

``gapops::contrastive_loss_rows`` takes the raw features (swap and normalization happen inside:
docs/design.md sections 2.2-2.3), runs one backend's strip_forward over the whole batch and returns
the per-pair loss with what backward needs; ``gapops::contrastive_loss_rows_backward`` runs the same
backend's strip_backward and the O(N·d) finish. Both are opaque custom ops, so autograd,
torch.compile(fullgraph=True) and torch.library.opcheck see one node each. The compiled
extension's own ops (gapops::strip_forward / strip_backward) get fake kernels here.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _dispatch, _extension, _fused
from ._dtypes import accumulation_dtype


@torch.library.custom_op("gapops::contrastive_loss_rows", mutates_args=())
def contrastive_loss_rows(x: Tensor, y: Tensor, swap_mask: Optional[Tensor], scale: Tensor,
                          normalize: bool, backend: str, deterministic: bool
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x, y: [N, d] raw features; swap_mask: bool [N] or None; scale: 0-dim (accumulation dtype).

    Returns (loss_rows, row_lse, col_lse, inv_x, inv_y, pair_cos), each [N] in the accumulation
    dtype; the last five are saved for backward.
    """
    forward, _ = _dispatch.strip_kernels(backend, deterministic)
    inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
    cos = _fused.pair_cosines(x, y, inv_x, inv_y)
    row_lse, col_lse = forward(*_fused.strip_inputs(x, y, swap_mask, inv_x, inv_y, cos), scale, 0)
    return 0.5 * (row_lse + col_lse), row_lse, col_lse, inv_x, inv_y, cos


@contrastive_loss_rows.register_fake
def _(x, y, swap_mask, scale, normalize, backend, deterministic):
    n = x.shape[0]
    return tuple(x.new_empty(n, dtype=accumulation_dtype(x.dtype)) for _ in range(6))


@torch.library.custom_op("gapops::contrastive_loss_rows_backward", mutates_args=())
def contrastive_loss_rows_backward(grad: Tensor, x: Tensor, y: Tensor, swap_mask: Optional[Tensor],
                                   scale: Tensor, row_lse: Tensor, col_lse: Tensor, inv_x: Tensor,
                                   inv_y: Tensor, cos: Tensor, normalize: bool, backend: str,
                                   deterministic: bool) -> tuple[Tensor, Tensor, Tensor]:
    """grad: [N] upstream gradient of loss_rows. Returns (d x, d y, d scale)."""
    _, backward = _dispatch.strip_kernels(backend)
    half = 0.5 * grad.to(row_lse.dtype)
    grad_a, grad_b, grad_scale = backward(*_fused.strip_inputs(x, y, swap_mask, inv_x, inv_y, cos),
                                          scale, 0, row_lse, col_lse, half, half, deterministic)
    dx, dy = _fused.finish_gradients(grad_a, grad_b, x, y, swap_mask, inv_x, inv_y, normalize)
    return dx, dy, grad_scale.reshape(()).to(scale.dtype)


@contrastive_loss_rows_backward.register_fake
def _(grad, x, y, swap_mask, scale, row_lse, col_lse, inv_x, inv_y, cos, normalize, backend,
      deterministic):
    return torch.empty_like(x), torch.empty_like(y), scale.new_empty(())


def _setup_context(ctx, inputs, output):
    x, y, swap_mask, scale, normalize, backend, deterministic = inputs
    _, row_lse, col_lse, inv_x, inv_y, cos = output
    ctx.save_for_backward(x, y, swap_mask, scale, row_lse, col_lse, inv_x, inv_y, cos)
    ctx.config = (normalize, backend, deterministic)
    ctx.mark_non_differentiable(row_lse, col_lse, inv_x, inv_y, cos)


def _backward(ctx, grad_loss, *_unused):
    x, y, swap_mask, scale, row_lse, col_lse, inv_x, inv_y, cos = ctx.saved_tensors
    if grad_loss is None:
        grad_loss = torch.zeros_like(row_lse)
    dx, dy, ds = contrastive_loss_rows_backward(grad_loss, x, y, swap_mask, scale, row_lse,
                                                col_lse, inv_x, inv_y, cos, *ctx.config)
    return dx, dy, None, ds, None, None, None


contrastive_loss_rows.register_autograd(_backward, setup_context=_setup_context)


def _register_native_fakes() -> None:
    """Fake kernels for the C++ ops, so they trace under torch.compile and pass opcheck."""
    if _extension.load()[0] is None:
        return

    @torch.library.register_fake("gapops::strip_forward")
    def _(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos, scale,
          offset):
        acc = accumulation_dtype(a.dtype)
        return a.new_empty(a.shape[0], dtype=acc), a.new_empty(b.shape[0], dtype=acc)

    @torch.library.register_fake("gapops::strip_backward")
    def _(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos, scale,
          offset, row_lse, col_lse, g_row, g_col, deterministic):
        acc = accumulation_dtype(a.dtype)
        return (a.new_empty(a.shape, dtype=acc), b.new_empty(b.shape, dtype=acc),
                scale.new_empty((), dtype=acc))


_register_native_fakes()
