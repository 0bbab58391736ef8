"""The O(N·d) steps around the strip (docs/design.md section 2.3), shared by every fused backend.

Before the strip: per-row inverse norms and the positives' cosines, in fp32 (fp64 for fp64
features) whatever the feature dtype, so that fp16 norms cannot overflow. After it: the gradients
of the routed rows are routed back to x and y, and the normalization's projection is applied in
place. Every pass walks the rows in chunks, so no [N, d] temporary is made.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._dtypes import accumulation_dtype

EPS = 1e-12  # as F.normalize
# Elements per chunk of rows: bounds the temporaries (rows cast to float64) at 8 MiB on the CPU
# and 32 MiB on a GPU, where fewer, larger chunks save kernel launches.
_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 22}


def _row_chunks(n: int, d: int, device: torch.device):
    step = max(1, _CHUNK_ELEMENTS.get(device.type, 1 << 20) // max(d, 1))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def inverse_norms(t: Tensor, normalize: bool) -> Tensor:
    """1 / max(||t_i||, 1e-12) per row of t [N, d] (ones if not normalize), accumulation dtype.

    Accumulated in float64 and rounded once: a row's inverse norm scales every logit of that
    row, so its error does not average out (O(N·d), a negligible cost).
    """
    acc = accumulation_dtype(t.dtype)
    n, d = t.shape
    if not normalize:
        return torch.ones(n, dtype=acc, device=t.device)
    out = torch.empty(n, dtype=acc, device=t.device)
    for rows in _row_chunks(n, d, t.device):
        norms = torch.linalg.vector_norm(t[rows].to(torch.float64), dim=1)
        out[rows] = norms.clamp_min(EPS).reciprocal().to(acc)
    return out


def pair_cosines(x: Tensor, y: Tensor, inv_x: Tensor, inv_y: Tensor) -> Tensor:
    """inv_x_i inv_y_i (x_i . y_i): the cosine of each positive pair [N] (raw dot if the inverse
    norms are ones), accumulation dtype. Symmetric in x and y, so swapping does not change it.

    Every statistic is relative to these cosines, so an error here shifts a whole row: the dots
    are accumulated in float64, with the rounded inverse norms the kernels use.
    """
    acc = inv_x.dtype
    n, d = x.shape
    out = torch.empty(n, dtype=acc, device=x.device)
    for rows in _row_chunks(n, d, x.device):
        dots = torch.linalg.vecdot(x[rows].to(torch.float64), y[rows].to(torch.float64), dim=1)
        out[rows] = (dots * inv_x[rows].double() * inv_y[rows].double()).to(acc)
    return out


def exchange_rows_(u: Tensor, v: Tensor, mask: Optional[Tensor]) -> None:
    """Swaps rows u[i] <-> v[i] in place where mask[i] (chunked temporaries of swapped rows)."""
    if mask is None:
        return
    idx = mask.nonzero().squeeze(1)
    for part in _row_chunks(idx.numel(), u.shape[1], u.device):
        rows = idx[part]
        u_rows = u.index_select(0, rows)
        u.index_copy_(0, rows, v.index_select(0, rows))
        v.index_copy_(0, rows, u_rows)


def project_normalization_(grad: Tensor, t: Tensor, inv: Tensor) -> None:
    """grad_i -= inv_i^2 (t_i . grad_i) t_i in place where ||t_i|| > eps.

    grad [N, d] holds the gradient w.r.t. the raw row t_i with the inverse norm held fixed; this
    adds the inverse norm's own dependence on t_i, giving the gradient through t / max(||t||, eps).
    Where the clamp is active (||t_i|| <= eps) the inverse norm is a constant and nothing changes.
    """
    n, d = grad.shape
    for rows in _row_chunks(n, d, grad.device):
        t_rows = t[rows].to(grad.dtype)  # a view when the dtypes agree
        g_rows = grad[rows]
        inv_rows = inv[rows]
        coef = torch.linalg.vecdot(t_rows, g_rows, dim=1) * inv_rows * inv_rows
        coef = torch.where(inv_rows < 1.0 / EPS, coef, torch.zeros_like(coef))
        g_rows.addcmul_(t_rows, coef.unsqueeze(1), value=-1.0)


def finish_gradients(grad_a: Tensor, grad_b: Tensor, x: Tensor, y: Tensor,
                     swap_mask: Optional[Tensor], inv_x: Tensor, inv_y: Tensor,
                     normalize: bool, cast: bool = True) -> tuple[Tensor, Tensor]:
    """(dx, dy) in the features' dtype (the accumulation dtype unless ``cast``) from the strip's
    raw-row gradients of A and B.

    grad_a [N, d] belongs to A_i (x_i, or y_i where swapped), grad_b to B_i (the other one); both in
    the accumulation dtype, consumed in place.
    """
    exchange_rows_(grad_a, grad_b, swap_mask)
    dx, dy = grad_a, grad_b
    if normalize:
        project_normalization_(dx, x, inv_x)
        project_normalization_(dy, y, inv_y)
    return (dx.to(x.dtype), dy.to(y.dtype)) if cast else (dx, dy)


def routed_inputs(x: Tensor, y: Tensor, swap_mask: Optional[Tensor], inv_x: Tensor,
                  inv_y: Tensor) -> tuple:
    """The routed rows and columns of the single-device strip (design.md section 2.2), the
    leading arguments of both losses' strips: (a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm,
    b_inv_norm)."""
    if swap_mask is None:
        a_inv, b_inv = inv_x, inv_y
    else:
        a_inv, b_inv = torch.where(swap_mask, inv_y, inv_x), torch.where(swap_mask, inv_x, inv_y)
    return x, y, swap_mask, y, x, swap_mask, a_inv, b_inv


def strip_inputs(x: Tensor, y: Tensor, swap_mask: Optional[Tensor], inv_x: Tensor, inv_y: Tensor,
                 cos: Tensor) -> tuple:
    """The leading softmax strip arguments of the single-device loss (design.md section 2.2):
    (a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos)."""
    return (*routed_inputs(x, y, swap_mask, inv_x, inv_y), cos, cos)


def column_rows(x: Tensor, y: Tensor, swap_mask: Optional[Tensor]) -> Tensor:
    """B_i = where(swap_i, x_i, y_i) [N, d]: the strip's column rows as one tensor (a copy only
    where a row is swapped), the send buffer of the distributed all-gather."""
    return y if swap_mask is None else torch.where(swap_mask.unsqueeze(1), x, y)
