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

from . import _dispatch, _extension, _fused, _pair_ids
from ._dtypes import accumulation_dtype


@torch.library.custom_op("gapops::contrastive_loss_rows", mutates_args=())
def contrastive_loss_rows(x: Tensor, y: Tensor, swap_mask: Optional[Tensor], scale: Tensor,
                          normalize: bool, backend: str, deterministic: bool,
                          pair_ids: Optional[Tensor] = None, label_smoothing: float = 0.0
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x, y: [N, d] raw features; swap_mask: bool [N] or None; scale: 0-dim (accumulation dtype);
    pair_ids: integer [N] or None; label_smoothing: ε in [0, 1] (design.md section 2.7).

    Returns (loss_rows, row_lse, col_lse, inv_x, inv_y, pair_cos, excess), each [N] in the
    accumulation dtype; the last six are saved for backward (excess: the targets' correction
    E_i, zeros without pair_ids and smoothing).
    """
    forward, _ = _dispatch.strip_kernels(backend, deterministic)
    inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
    cos = _fused.pair_cosines(x, y, inv_x, inv_y)
    strip = _fused.strip_inputs(x, y, swap_mask, inv_x, inv_y, cos)
    row_lse, col_lse = forward(*strip, scale, 0)
    if pair_ids is None and label_smoothing == 0:
        return 0.5 * (row_lse + col_lse), row_lse, col_lse, inv_x, inv_y, cos, torch.zeros_like(cos)
    a, b = _pair_ids.strip_sides(*strip[:8])
    groups = _pair_ids.groups_of(pair_ids, x.shape[0], x.device)
    row_ex, col_ex = _pair_ids.softmax_excess(groups, a, b, cos, cos, 0, label_smoothing,
                                              deterministic)
    rows, excess = _pair_ids.softmax_rows(row_lse, col_lse, row_ex, col_ex, scale)
    return rows, row_lse, col_lse, inv_x, inv_y, cos, excess.to(cos.dtype)


@contrastive_loss_rows.register_fake
def _(x, y, swap_mask, scale, normalize, backend, deterministic, pair_ids=None,
      label_smoothing=0.0):
    n = x.shape[0]
    return tuple(x.new_empty(n, dtype=accumulation_dtype(x.dtype)) for _ in range(7))


@torch.library.custom_op("gapops::contrastive_loss_rows_backward", mutates_args=())
def contrastive_loss_rows_backward(grad: Tensor, x: Tensor, y: Tensor, swap_mask: Optional[Tensor],
                                   scale: Tensor, row_lse: Tensor, col_lse: Tensor, inv_x: Tensor,
                                   inv_y: Tensor, cos: Tensor, excess: Tensor, normalize: bool,
                                   backend: str, deterministic: bool,
                                   pair_ids: Optional[Tensor] = None, label_smoothing: float = 0.0
                                   ) -> tuple[Tensor, Tensor, Tensor]:
    """grad: [N] upstream gradient of loss_rows. Returns (d x, d y, d scale)."""
    _, backward = _dispatch.strip_kernels(backend)
    half = 0.5 * grad.to(row_lse.dtype)
    strip = _fused.strip_inputs(x, y, swap_mask, inv_x, inv_y, cos)
    grad_a, grad_b, grad_scale = backward(*strip, scale, 0, row_lse, col_lse, half, half,
                                          deterministic)
    grad_scale = grad_scale.reshape(())
    if pair_ids is not None or label_smoothing != 0:
        a, b = _pair_ids.strip_sides(*strip[:8])
        groups = _pair_ids.groups_of(pair_ids, x.shape[0], x.device)
        _pair_ids.add_softmax_gradients_(grad_a, grad_b, groups, a, b, 0, label_smoothing, scale,
                                         half, deterministic)
        grad_scale = grad_scale + _pair_ids.softmax_scale_correction(half, excess).to(
            grad_scale.dtype)
    dx, dy = _fused.finish_gradients(grad_a, grad_b, x, y, swap_mask, inv_x, inv_y, normalize)
    return dx, dy, grad_scale.to(scale.dtype)


@contrastive_loss_rows_backward.register_fake
def _(grad, x, y, swap_mask, scale, row_lse, col_lse, inv_x, inv_y, cos, excess, normalize,
      backend, deterministic, pair_ids=None, label_smoothing=0.0):
    return torch.empty_like(x), torch.empty_like(y), scale.new_empty(())


def _setup_context(ctx, inputs, output):
    x, y, swap_mask, scale, normalize, backend, deterministic = inputs[:7]
    pair_ids, label_smoothing = (tuple(inputs[7:]) + (None, 0.0)[len(inputs) - 7:])[:2]
    _, row_lse, col_lse, inv_x, inv_y, cos, excess = output
    ctx.save_for_backward(x, y, swap_mask, scale, row_lse, col_lse, inv_x, inv_y, cos, excess,
                          pair_ids)
    ctx.config = (normalize, backend, deterministic)
    ctx.label_smoothing = label_smoothing
    ctx.mark_non_differentiable(row_lse, col_lse, inv_x, inv_y, cos, excess)


def _backward(ctx, grad_loss, *_unused):
    x, y, swap_mask, scale, row_lse, col_lse, inv_x, inv_y, cos, excess, pair_ids = \
        ctx.saved_tensors
    if grad_loss is None:
        grad_loss = torch.zeros_like(row_lse)
    dx, dy, ds = contrastive_loss_rows_backward(grad_loss, x, y, swap_mask, scale, row_lse,
                                                col_lse, inv_x, inv_y, cos, excess, *ctx.config,
                                                pair_ids, ctx.label_smoothing)
    return dx, dy, None, ds, None, None, None, None, None


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


def _sigmoid_pair_ids(pair_ids, x, y, swap_mask, inv_x, inv_y, scale, bias, weight, rows, grads,
                      grad_scale, grad_bias, deterministic) -> tuple:
    """The strip's outputs corrected for same-ID pairs (design.md section 2.7): rows (when
    computed), grad_a / grad_b in place (when grads), and the scalars' gradients."""
    a, b = _pair_ids.strip_sides(*_fused.routed_inputs(x, y, swap_mask, inv_x, inv_y))
    delta, d_scale, d_bias = _pair_ids.sigmoid_corrections(
        _pair_ids.pair_groups(pair_ids), a, b, 0, scale, bias, weight, rows.numel() > 0,
        *(grads or (None, None)), deterministic=deterministic)
    if rows.numel():
        rows = (rows.to(torch.float64) + delta).to(rows.dtype)
    if grads:
        grad_scale = grad_scale.reshape(()) + d_scale.to(grad_scale.dtype)
        grad_bias = grad_bias.reshape(()) + d_bias.to(grad_bias.dtype)
    return rows, grad_scale, grad_bias


def _acc_scalars(scale: Tensor, bias: Tensor, grad_scale: Tensor, grad_bias: Tensor) -> tuple:
    return grad_scale.reshape(()).to(scale.dtype), grad_bias.reshape(()).to(bias.dtype)


@torch.library.custom_op("gapops::sigmoid_loss_total", mutates_args=())
def sigmoid_loss_total(x: Tensor, y: Tensor, swap_mask: Optional[Tensor], scale: Tensor,
                       bias: Tensor, normalize: bool, backend: str, deterministic: bool,
                       want_grads: bool, pair_ids: Optional[Tensor] = None
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x, y: [N, d] raw features; swap_mask: bool [N] or None; scale, bias: 0-dim (accumulation
    dtype); pair_ids: integer [N] or None (label +1 where the IDs are equal).

    Returns (total, dx, dy, d scale, d bias): the loss summed over every row and column (0-dim),
    and, when want_grads, its gradients (dx, dy [N, d] in the accumulation dtype, kept for
    backward); without want_grads the strip runs its tile product only and dx, dy are [0, d].
    """
    inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
    rows, grad_a, grad_b, grad_scale, grad_bias = _sigmoid_strip(
        x, y, swap_mask, inv_x, inv_y, scale, bias, backend, None, True, want_grads, deterministic)
    if pair_ids is not None:
        rows, grad_scale, grad_bias = _sigmoid_pair_ids(
            pair_ids, x, y, swap_mask, inv_x, inv_y, scale, bias, None, rows,
            (grad_a, grad_b) if want_grads else None, grad_scale, grad_bias, deterministic)
    if want_grads:
        grad_a, grad_b = _fused.finish_gradients(grad_a, grad_b, x, y, swap_mask, inv_x, inv_y,
                                                 normalize, cast=False)
    return (_total(rows), grad_a, grad_b, *_acc_scalars(scale, bias, grad_scale, grad_bias))


@sigmoid_loss_total.register_fake
def _(x, y, swap_mask, scale, bias, normalize, backend, deterministic, want_grads,
      pair_ids=None):
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
            None, None, None, None)


sigmoid_loss_total.register_autograd(_backward_total, setup_context=_setup_total)


@torch.library.custom_op("gapops::sigmoid_loss_rows", mutates_args=())
def sigmoid_loss_rows(x: Tensor, y: Tensor, swap_mask: Optional[Tensor], scale: Tensor,
                      bias: Tensor, normalize: bool, backend: str, deterministic: bool,
                      pair_ids: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """The loss of each image row against every column [N], and (inv_x, inv_y) [N] for backward,
    all in the accumulation dtype (arguments as sigmoid_loss_total)."""
    inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
    rows = _sigmoid_strip(x, y, swap_mask, inv_x, inv_y, scale, bias, backend, None, True, False,
                          deterministic)[0]
    if pair_ids is not None:
        rows = _sigmoid_pair_ids(pair_ids, x, y, swap_mask, inv_x, inv_y, scale, bias, None, rows,
                                 None, None, None, deterministic)[0]
    return rows, inv_x, inv_y


@sigmoid_loss_rows.register_fake
def _(x, y, swap_mask, scale, bias, normalize, backend, deterministic, pair_ids=None):
    return tuple(x.new_empty(x.shape[0], dtype=accumulation_dtype(x.dtype)) for _ in range(3))


@torch.library.custom_op("gapops::sigmoid_loss_rows_backward", mutates_args=())
def sigmoid_loss_rows_backward(grad: Tensor, x: Tensor, y: Tensor, swap_mask: Optional[Tensor],
                               scale: Tensor, bias: Tensor, inv_x: Tensor, inv_y: Tensor,
                               normalize: bool, backend: str, deterministic: bool,
                               pair_ids: Optional[Tensor] = None
                               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """grad: [N] upstream gradient of the rows. Returns (d x, d y, d scale, d bias)."""
    weight = grad.to(inv_x.dtype)
    rows, grad_a, grad_b, grad_scale, grad_bias = _sigmoid_strip(
        x, y, swap_mask, inv_x, inv_y, scale, bias, backend, weight, False, True, deterministic)
    if pair_ids is not None:
        _, grad_scale, grad_bias = _sigmoid_pair_ids(
            pair_ids, x, y, swap_mask, inv_x, inv_y, scale, bias, weight, rows, (grad_a, grad_b),
            grad_scale, grad_bias, deterministic)
    dx, dy = _fused.finish_gradients(grad_a, grad_b, x, y, swap_mask, inv_x, inv_y, normalize)
    return (dx, dy, *_acc_scalars(scale, bias, grad_scale, grad_bias))


@sigmoid_loss_rows_backward.register_fake
def _(grad, x, y, swap_mask, scale, bias, inv_x, inv_y, normalize, backend, deterministic,
      pair_ids=None):
    return torch.empty_like(x), torch.empty_like(y), scale.new_empty(()), bias.new_empty(())


def _setup_rows(ctx, inputs, output):
    x, y, swap_mask, scale, bias, normalize, backend, deterministic = inputs[:8]
    pair_ids = inputs[8] if len(inputs) > 8 else None
    _, inv_x, inv_y = output
    ctx.save_for_backward(x, y, swap_mask, scale, bias, inv_x, inv_y, pair_ids)
    ctx.config = (normalize, backend, deterministic)
    ctx.mark_non_differentiable(inv_x, inv_y)


def _backward_rows(ctx, grad_rows, *_unused):
    x, y, swap_mask, scale, bias, inv_x, inv_y, pair_ids = ctx.saved_tensors
    if grad_rows is None:
        grad_rows = torch.zeros_like(inv_x)
    dx, dy, ds, db = sigmoid_loss_rows_backward(grad_rows, x, y, swap_mask, scale, bias, inv_x,
                                                inv_y, *ctx.config, pair_ids)
    return dx, dy, None, ds, db, None, None, None, None


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
