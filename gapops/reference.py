"""The naive contrastive loss in plain torch: the oracle every backend is tested against.

It materializes the N x N logits, exactly what DESIGN.md section 1 writes down, and relies on
torch autograd for every gradient. Half-precision inputs are promoted to float32 so that the
oracle itself accumulates in fp32 (tests run it in float64).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-12


def swap_and_normalize(x: torch.Tensor, y: torch.Tensor, swap_mask: torch.Tensor | None,
                       normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Route pair i's features by ``swap_mask`` and L2-normalize them.

    x, y: [N, d]; swap_mask: bool [N] or None. Returns (a, b), each [N, d] in the input dtype:
    a_i = y_i if swap_i else x_i, b_i the other one, divided by max(||.||, 1e-12) if ``normalize``.
    Differentiable through torch autograd; every backend shares this step.
    """
    if swap_mask is not None:
        m = swap_mask.unsqueeze(1)
        x, y = torch.where(m, y, x), torch.where(m, x, y)
    if normalize:
        x = F.normalize(x, dim=1, eps=EPS)
        y = F.normalize(y, dim=1, eps=EPS)
    return x, y


def reference_loss_rows(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Per-pair loss l_i = 1/2[(r_i - L_ii) + (c_i - L_ii)] of the naive N x N form.

    a, b: [N, d] (already swapped and normalized); logit_scale: 0-dim. Returns [N] in
    float32 (float64 for float64 inputs).
    """
    acc = torch.promote_types(a.dtype, torch.float32)
    logits = logit_scale.to(acc) * (a.to(acc) @ b.to(acc).T)
    labels = torch.arange(a.shape[0], device=a.device)
    row = F.cross_entropy(logits, labels, reduction="none")
    col = F.cross_entropy(logits.T, labels, reduction="none")
    return 0.5 * (row + col)


def reference_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                               logit_scale, swap_mask: torch.Tensor | None = None,
                               normalize: bool = True, reduction: str = "mean") -> torch.Tensor:
    """The whole loss, naive form, for tests and benchmarks (no argument checks)."""
    a, b = swap_and_normalize(image_features, text_features, swap_mask, normalize)
    s = torch.as_tensor(logit_scale, device=a.device)
    rows = reference_loss_rows(a, b, s)
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    return rows


def reference_strip_forward(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, offset: int):
    """DESIGN.md's strip_forward in plain torch (materializes the n x m tile).

    a: [n, d] rows, b: [m, d] columns, scale: 0-dim, offset: the positive of row i is column
    i + offset. Returns (row_lse [n], col_lse_partial [m], pos_logit [n]) in the accumulation
    dtype (float32, or float64 for float64 inputs).
    """
    acc = torch.promote_types(a.dtype, torch.float32)
    logits = scale.to(acc) * (a.to(acc) @ b.to(acc).T)
    n = a.shape[0]
    pos = logits.diagonal(offset=offset)[:n] if n else logits.new_empty(0)
    return logits.logsumexp(1), logits.logsumexp(0), pos.clone()


def reference_strip_backward(a, b, scale, offset, row_lse, col_lse, g_row, g_col,
                             deterministic=False):
    """DESIGN.md's strip_backward in plain torch.

    G_ij = g_row_i e^(L_ij - row_lse_i) + g_col_j e^(L_ij - col_lse_j) - [j == i+offset](g_row_i + g_col_j)
    Returns dA = s G B [n, d] (dtype of a), dB = s G^T A [m, d] (dtype of b),
    dscale = sum_ij G_ij a_i.b_j (0-dim, accumulation dtype).
    """
    acc = torch.promote_types(a.dtype, torch.float32)
    a32, b32, s = a.to(acc), b.to(acc), scale.to(acc)
    dots = a32 @ b32.T
    logits = s * dots
    G = g_row.to(acc)[:, None] * torch.exp(logits - row_lse.to(acc)[:, None]) \
        + g_col.to(acc)[None, :] * torch.exp(logits - col_lse.to(acc)[None, :])
    n = a.shape[0]
    idx = torch.arange(n, device=a.device)
    G[idx, idx + offset] -= g_row.to(acc) + g_col.to(acc)[offset:offset + n]
    dA = (s * (G @ b32)).to(a.dtype)
    dB = (s * (G.T @ a32)).to(b.dtype)
    return dA, dB, (G * dots).sum()
