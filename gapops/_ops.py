"""torch.library glue: the differentiable per-pair loss op, its backward op, fake kernels.

``gapops::clip_loss_rows`` runs one backend's strip_forward over the whole batch (n = m = N,
offset 0) and returns the per-pair loss with the two LSE vectors it saves for backward;
``gapops::clip_loss_rows_backward`` runs the same backend's strip_backward. Both are opaque custom
ops, so autograd, torch.compile(fullgraph=True) and torch.library.opcheck see one node each.
The compiled extension's own ops (gapops::strip_forward / strip_backward) get fake kernels here.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _dispatch, _extension


def _acc_dtype(t: Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


@torch.library.custom_op("gapops::clip_loss_rows", mutates_args=())
def clip_loss_rows(a: Tensor, b: Tensor, scale: Tensor, backend: str,
                   deterministic: bool) -> tuple[Tensor, Tensor, Tensor]:
    """a, b: [N, d] swapped+normalized features; scale: 0-dim (accumulation dtype).

    Returns (loss_rows [N], row_lse [N], col_lse [N]) in the accumulation dtype.
    """
    forward, _ = _dispatch.strip_kernels(backend)
    row_lse, col_lse, pos = forward(a, b, scale, 0)
    return 0.5 * (row_lse + col_lse) - pos, row_lse, col_lse


@clip_loss_rows.register_fake
def _(a, b, scale, backend, deterministic):
    n = a.shape[0]
    return tuple(a.new_empty(n, dtype=_acc_dtype(a)) for _ in range(3))


@torch.library.custom_op("gapops::clip_loss_rows_backward", mutates_args=())
def clip_loss_rows_backward(grad: Tensor, a: Tensor, b: Tensor, scale: Tensor, row_lse: Tensor,
                            col_lse: Tensor, backend: str,
                            deterministic: bool) -> tuple[Tensor, Tensor, Tensor]:
    """grad: [N] upstream gradient of loss_rows. Returns (d a, d b, d scale)."""
    _, backward = _dispatch.strip_kernels(backend)
    half = 0.5 * grad.to(row_lse.dtype)
    return backward(a, b, scale, 0, row_lse, col_lse, half, half, deterministic)


@clip_loss_rows_backward.register_fake
def _(grad, a, b, scale, row_lse, col_lse, backend, deterministic):
    return torch.empty_like(a), torch.empty_like(b), scale.new_empty(())


def _setup_context(ctx, inputs, output):
    a, b, scale, backend, deterministic = inputs
    _, row_lse, col_lse = output
    ctx.save_for_backward(a, b, scale, row_lse, col_lse)
    ctx.backend, ctx.deterministic = backend, deterministic
    ctx.mark_non_differentiable(row_lse, col_lse)


def _backward(ctx, grad_loss, _grad_row_lse, _grad_col_lse):
    a, b, scale, row_lse, col_lse = ctx.saved_tensors
    if grad_loss is None:
        grad_loss = torch.zeros_like(row_lse)
    da, db, ds = clip_loss_rows_backward(grad_loss, a, b, scale, row_lse, col_lse,
                                         ctx.backend, ctx.deterministic)
    return da, db, ds, None, None


clip_loss_rows.register_autograd(_backward, setup_context=_setup_context)


def _register_native_fakes() -> None:
    """Fake kernels for the C++ ops, so they trace under torch.compile and pass opcheck."""
    if _extension.load()[0] is None:
        return

    @torch.library.register_fake("gapops::strip_forward")
    def _(a, b, scale, offset):
        acc = _acc_dtype(a)
        return (a.new_empty(a.shape[0], dtype=acc), a.new_empty(b.shape[0], dtype=acc),
                a.new_empty(a.shape[0], dtype=acc))

    @torch.library.register_fake("gapops::strip_backward")
    def _(a, b, scale, offset, row_lse, col_lse, g_row, g_col, deterministic):
        return torch.empty_like(a), torch.empty_like(b), scale.new_empty(())


_register_native_fakes()
