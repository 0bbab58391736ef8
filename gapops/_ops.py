"""torch.library glue: the differentiable loss ops of both losses, their backward ops, fakes.

``gapops::contrastive_loss_rows`` takes the raw features (swap and normalization happen inside:
docs/design.md sections 2.2-2.3), runs one backend's strip_forward over the whole batch and returns
the per-pair loss with what backward needs; ``gapops::contrastive_loss_rows_backward`` runs the same
backend's strip_backward and the O(N·d) finish.

The sigmoid loss (section 2.6) has two forms. ``gapops::sigmoid_loss_total`` returns the summed
loss, and, when gradients are wanted, its gradients from the same strip call (3 products): its
backward only scales them by the upstream scalar. ``gapops::sigmoid_loss_rows`` returns the loss
per image row (reduction='none'); ``gapops::sigmoid_loss_rows_backward`` recomputes the strip with
the upstream weights.

All are opaque custom ops, so autograd, torch.compile(fullgraph=True) and torch.library.opcheck
see one node each. The compiled extension's own ops (gapops::strip_forward / strip_backward /
sigmoid_strip) get fake kernels here.
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
    forward, _ = _dispatch.strip_kernels(backend)
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


# ---------------------------------------------------------------------------------------------
# the sigmoid (SigLIP) loss

def _sigmoid_strip(x, y, swap_mask, inv_x, inv_y, scale, bias, backend, g_row, want_loss,
                   want_grads, deterministic):
    """One backend's sigmoid strip over the whole batch (rows x / y routed, columns the other)."""
    strip = _dispatch.sigmoid_kernel(backend)
    return strip(*_fused.routed_inputs(x, y, swap_mask, inv_x, inv_y), scale, bias, 0, g_row,
                 want_loss, want_grads, deterministic)


def _total(rows: Tensor) -> Tensor:
    """The sum of the row losses [N], accumulated in float64 and rounded once (O(N)): every row
    holds a positive's term of order s next to N small ones, and an fp32 sum of N such rows
    would add its own rounding to the kernel's."""
    return rows.sum(dtype=torch.float64).to(rows.dtype)


def _acc_scalars(scale: Tensor, bias: Tensor, grad_scale: Tensor, grad_bias: Tensor) -> tuple:
    return grad_scale.reshape(()).to(scale.dtype), grad_bias.reshape(()).to(bias.dtype)


@torch.library.custom_op("gapops::sigmoid_loss_total", mutates_args=())
def sigmoid_loss_total(x: Tensor, y: Tensor, swap_mask: Optional[Tensor], scale: Tensor,
                       bias: Tensor, normalize: bool, backend: str, deterministic: bool,
                       want_grads: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x, y: [N, d] raw features; swap_mask: bool [N] or None; scale, bias: 0-dim (accumulation
    dtype).

    Returns (total, dx, dy, d scale, d bias): the loss summed over every row and column (0-dim),
    and, when want_grads, its gradients (dx, dy [N, d] in the accumulation dtype, kept for
    backward); without want_grads the strip runs its tile product only and dx, dy are [0, d].
    """
    inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
    rows, grad_a, grad_b, grad_scale, grad_bias = _sigmoid_strip(
        x, y, swap_mask, inv_x, inv_y, scale, bias, backend, None, True, want_grads, deterministic)
    if want_grads:
        grad_a, grad_b = _fused.finish_gradients(grad_a, grad_b, x, y, swap_mask, inv_x, inv_y,
                                                 normalize, cast=False)
    return (_total(rows), grad_a, grad_b, *_acc_scalars(scale, bias, grad_scale, grad_bias))


@sigmoid_loss_total.register_fake
def _(x, y, swap_mask, scale, bias, normalize, backend, deterministic, want_grads):
    acc = accumulation_dtype(x.dtype)
    kept = x.shape[0] if want_grads else 0
    return (x.new_empty((), dtype=acc), x.new_empty((kept, x.shape[1]), dtype=acc),
            y.new_empty((kept, y.shape[1]), dtype=acc), scale.new_empty(()), bias.new_empty(()))


def _setup_total(ctx, inputs, output):
    x, y = inputs[:2]
    _, dx, dy, ds, db = output
    ctx.save_for_backward(dx, dy, ds, db)
    ctx.dtypes, ctx.n = (x.dtype, y.dtype), x.shape[0]
    ctx.mark_non_differentiable(dx, dy, ds, db)


def _backward_total(ctx, grad_total, *_unused):
    dx, dy, ds, db = ctx.saved_tensors
    if dx.shape[0] != ctx.n:
        raise RuntimeError("gapops::sigmoid_loss_total ran with want_grads=False and kept no "
                           "gradients; call it with want_grads=True to differentiate it")
    g = grad_total.to(dx.dtype)
    return ((g * dx).to(ctx.dtypes[0]), (g * dy).to(ctx.dtypes[1]), None, g * ds, g * db, None,
            None, None, None)


sigmoid_loss_total.register_autograd(_backward_total, setup_context=_setup_total)


@torch.library.custom_op("gapops::sigmoid_loss_rows", mutates_args=())
def sigmoid_loss_rows(x: Tensor, y: Tensor, swap_mask: Optional[Tensor], scale: Tensor,
                      bias: Tensor, normalize: bool, backend: str, deterministic: bool
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """The loss of each image row against every column [N], and (inv_x, inv_y) [N] for backward,
    all in the accumulation dtype (arguments as sigmoid_loss_total)."""
    inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
    rows = _sigmoid_strip(x, y, swap_mask, inv_x, inv_y, scale, bias, backend, None, True, False,
                          deterministic)[0]
    return rows, inv_x, inv_y


@sigmoid_loss_rows.register_fake
def _(x, y, swap_mask, scale, bias, normalize, backend, deterministic):
    return tuple(x.new_empty(x.shape[0], dtype=accumulation_dtype(x.dtype)) for _ in range(3))


@torch.library.custom_op("gapops::sigmoid_loss_rows_backward", mutates_args=())
def sigmoid_loss_rows_backward(grad: Tensor, x: Tensor, y: Tensor, swap_mask: Optional[Tensor],
                               scale: Tensor, bias: Tensor, inv_x: Tensor, inv_y: Tensor,
                               normalize: bool, backend: str, deterministic: bool
                               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """grad: [N] upstream gradient of the rows. Returns (d x, d y, d scale, d bias)."""
    _, grad_a, grad_b, grad_scale, grad_bias = _sigmoid_strip(
        x, y, swap_mask, inv_x, inv_y, scale, bias, backend, grad.to(inv_x.dtype), False, True,
        deterministic)
    dx, dy = _fused.finish_gradients(grad_a, grad_b, x, y, swap_mask, inv_x, inv_y, normalize)
    return (dx, dy, *_acc_scalars(scale, bias, grad_scale, grad_bias))


@sigmoid_loss_rows_backward.register_fake
def _(grad, x, y, swap_mask, scale, bias, inv_x, inv_y, normalize, backend, deterministic):
    return torch.empty_like(x), torch.empty_like(y), scale.new_empty(()), bias.new_empty(())


def _setup_rows(ctx, inputs, output):
    x, y, swap_mask, scale, bias, normalize, backend, deterministic = inputs
    _, inv_x, inv_y = output
    ctx.save_for_backward(x, y, swap_mask, scale, bias, inv_x, inv_y)
    ctx.config = (normalize, backend, deterministic)
    ctx.mark_non_differentiable(inv_x, inv_y)


def _backward_rows(ctx, grad_rows, *_unused):
    x, y, swap_mask, scale, bias, inv_x, inv_y = ctx.saved_tensors
    if grad_rows is None:
        grad_rows = torch.zeros_like(inv_x)
    dx, dy, ds, db = sigmoid_loss_rows_backward(grad_rows, x, y, swap_mask, scale, bias, inv_x,
                                                inv_y, *ctx.config)
    return dx, dy, None, ds, db, None, None, None


sigmoid_loss_rows.register_autograd(_backward_rows, setup_context=_setup_rows)


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

    @torch.library.register_fake("gapops::sigmoid_strip")
    def _(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale, bias, offset, g_row,
          want_loss, want_grads, deterministic):
        acc = accumulation_dtype(a.dtype)
        n, m, d = a.shape[0], b.shape[0], a.shape[1]
        return (a.new_empty(n if want_loss else 0, dtype=acc),
                a.new_empty((n if want_grads else 0, d), dtype=acc),
                a.new_empty((m if want_grads else 0, d), dtype=acc),
                scale.new_empty((), dtype=acc), scale.new_empty((), dtype=acc))


_register_native_fakes()
