"""The naive losses in plain torch: the oracles every backend is tested against.

It materializes the N x N logits, exactly what docs/design.md section 1 writes down, and relies on
torch autograd for every gradient. Half-precision inputs are promoted to float32 so that the
oracle itself accumulates in fp32 (tests run it in float64).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dtypes import accumulation_dtype

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
    acc = accumulation_dtype(a.dtype)
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


def _same_id(pair_ids, n: int, device) -> torch.Tensor:
    """bool [n, n]: entry (i, j) is True where pairs i and j share an ID (the diagonal always).

    pair_ids: integer [n] or None (None: every pair its own ID, the plain one-positive loss).
    IDs belong to pairs, not to sides: a swap mask exchanges x_i and y_i and leaves id_i alone.
    """
    if pair_ids is None:
        return torch.eye(n, dtype=torch.bool, device=device)
    ids = torch.as_tensor(pair_ids, device=device).reshape(n)
    return ids[:, None] == ids[None, :]


def _reduced(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    """[N] per-pair (or per-row) losses -> their mean, sum, or themselves ('none')."""
    return rows.mean() if reduction == "mean" else rows.sum() if reduction == "sum" else rows


def reference_contrastive_loss_ids(image_features: torch.Tensor, text_features: torch.Tensor,
                                   logit_scale, pair_ids=None, label_smoothing: float = 0.0,
                                   swap_mask: torch.Tensor | None = None, normalize: bool = True,
                                   reduction: str = "mean") -> torch.Tensor:
    """The softmax loss with positives from IDs and label smoothing, naive form (the oracle).

    image_features, text_features: [N, d]; logit_scale: 0-dim (or a float); pair_ids: integer
    [N] or None; swap_mask: bool [N] or None. With L = s a b^T ([N, N], a, b the swapped and
    normalized rows) and P_i = {j : id_j = id_i}, each direction is
    ``torch.nn.functional.cross_entropy`` with probability targets: row i's target is uniform over
    P_i, then label smoothing eps as cross_entropy defines it, (1 - eps) target + eps / N. So

        row_i = LSE_j L_ij - (1 - eps) / |P_i| sum_{p in P_i} L_ip - eps / N sum_j L_ij

    and col_i the same over column i of L (P is symmetric). Per pair: 1/2 (row_i + col_i);
    ``reduction`` 'mean' (the default), 'sum' or 'none' ([N]). Unique IDs (or None) and eps = 0:
    exactly :func:`reference_contrastive_loss` and open_clip's ``ClipLoss``. Float32 (float64
    for float64 inputs), differentiable by torch autograd; no argument checks.
    """
    a, b = swap_and_normalize(image_features, text_features, swap_mask, normalize)
    acc = accumulation_dtype(a.dtype)
    s = torch.as_tensor(logit_scale, device=a.device).to(acc)
    logits = s * (a.to(acc) @ b.to(acc).T)
    same = _same_id(pair_ids, a.shape[0], a.device).to(acc)
    row_target = same / same.sum(1, keepdim=True)
    col_target = same.T / same.T.sum(1, keepdim=True)  # = row_target: P is symmetric
    row = F.cross_entropy(logits, row_target, label_smoothing=label_smoothing, reduction="none")
    col = F.cross_entropy(logits.T, col_target, label_smoothing=label_smoothing,
                          reduction="none")
    return _reduced(0.5 * (row + col), reduction)


def reference_sigmoid_loss_ids(image_features: torch.Tensor, text_features: torch.Tensor,
                               logit_scale, logit_bias, pair_ids=None,
                               swap_mask: torch.Tensor | None = None, normalize: bool = True,
                               reduction: str = "mean") -> torch.Tensor:
    """The sigmoid (SigLIP) loss with positives from IDs, naive form (the oracle).

    image_features, text_features: [N, d]; logit_scale, logit_bias: 0-dim (or floats);
    pair_ids: integer [N] or None; swap_mask: bool [N] or None. From the explicit label matrix
    l_ij = +1 where id_i = id_j (the diagonal always), -1 elsewhere, and z = s a b^T + bias:

        row_i = sum_j -log sigmoid(l_ij z_ij)        (a loss per image row, [N])

    ``reduction`` 'mean' = (1/N) sum_i row_i (open_clip's ``SigLipLoss`` normalization, which it
    equals for unique IDs or None), 'sum', or 'none' ([N]). Float32 (float64 for float64 inputs),
    differentiable by torch autograd; no argument checks.
    """
    a, b = swap_and_normalize(image_features, text_features, swap_mask, normalize)
    acc = accumulation_dtype(a.dtype)
    s = torch.as_tensor(logit_scale, device=a.device).to(acc)
    bias = torch.as_tensor(logit_bias, device=a.device).to(acc)
    z = s * (a.to(acc) @ b.to(acc).T) + bias
    labels = torch.where(_same_id(pair_ids, a.shape[0], a.device), 1.0, -1.0).to(acc)
    return _reduced(-F.logsigmoid(labels * z).sum(1), reduction)

def reference_sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                           logit_scale, logit_bias=None, swap_mask: torch.Tensor | None = None,
                           normalize: bool = True, reduction: str = "mean") -> torch.Tensor:
    """The sigmoid (SigLIP) loss in its naive N x N form, open_clip's ``SigLipLoss`` math:
    logits = s a b^T + bias, labels 2I - 1, -logsigmoid(labels * logits) summed per row
    ([N] for 'none'), over everything ('sum'), or over everything / N ('mean'). For tests and
    benchmarks (no argument checks); torch autograd gives every gradient, forward mode included.
    """
    a, b = swap_and_normalize(image_features, text_features, swap_mask, normalize)
    acc = accumulation_dtype(a.dtype)
    logits = torch.as_tensor(logit_scale, device=a.device).to(acc) * (a.to(acc) @ b.to(acc).T)
    if logit_bias is not None:
        logits = logits + torch.as_tensor(logit_bias, device=a.device).to(acc)
    labels = 2 * torch.eye(a.shape[0], dtype=acc, device=a.device) - 1
    rows = -F.logsigmoid(labels * logits).sum(1)
    if reduction == "mean":
        return rows.sum() / a.shape[0]
    return rows.sum() if reduction == "sum" else rows


def _routed(a, a_alt, a_swap):
    """Rows a[i], or a_alt[i] where a_swap[i] (a_swap may be None)."""
    if a_swap is None:
        return a
    return torch.where(a_swap.unsqueeze(1), a_alt, a)


def _strip_cosines(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm):
    acc = accumulation_dtype(a.dtype)
    A = _routed(a, a_alt, a_swap).to(acc)
    B = _routed(b, b_alt, b_swap).to(acc)
    cos = a_inv_norm.to(acc)[:, None] * (A @ B.T) * b_inv_norm.to(acc)[None, :]
    return A, B, cos


def _positive_mask(n: int, m: int, offset: int, device) -> torch.Tensor:
    idx = torch.arange(n, device=device)
    mask = torch.zeros(n, m, dtype=torch.bool, device=device)
    mask[idx, idx + offset] = True
    return mask


def _log_one_plus(terms: torch.Tensor, dim: int, one: torch.Tensor) -> torch.Tensor:
    """log(one + sum(exp(terms), dim)) with one in {0, 1}, stable: the shift M = max(0, max)."""
    mx = terms.amax(dim).clamp_min(0.0)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    rest = torch.exp(terms - mx.unsqueeze(dim)).sum(dim)
    small = (mx == 0) & (one > 0)
    return torch.where(small, torch.log1p(rest), mx + torch.log(one * torch.exp(-mx) + rest))


def reference_strip_forward(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm,
                            a_pos, b_pos, scale, offset: int):
    """The strip forward of docs/design.md section 2.1 in plain torch (materializes n x m).

    a, a_alt: [n, d] row sources, a_swap: bool [n] or None; b, b_alt, b_swap likewise for the
    m columns; a_inv_norm [n], b_inv_norm [m]; a_pos [n], b_pos [m] the positives' cosines;
    scale 0-dim; positive of row i at column i + offset. Returns (row_lse [n], col_lse [m]),
    relative to the positives, in the accumulation dtype (float32, float64 for float64).
    """
    _, _, cos = _strip_cosines(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm)
    acc = cos.dtype
    n, m = cos.shape
    s = scale.to(acc)
    pos = _positive_mask(n, m, offset, cos.device)
    xr = (s * (cos - a_pos.to(acc)[:, None])).masked_fill(pos, float("-inf"))
    xc = (s * (cos - b_pos.to(acc)[None, :])).masked_fill(pos, float("-inf"))
    col_has_pos = pos.any(0).to(acc)
    row_lse = _log_one_plus(xr, 1, torch.ones(n, dtype=acc, device=cos.device))
    col_lse = _log_one_plus(xc, 0, col_has_pos)
    return row_lse, col_lse


def reference_strip_backward(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm,
                             a_pos, b_pos, scale, offset: int, row_lse, col_lse, g_row, g_col,
                             deterministic: bool = False):
    """The strip backward of docs/design.md section 2.1 in plain torch.

    Returns (grad_a [n, d], grad_b [m, d], grad_scale 0-dim), all in the accumulation dtype:
    grad_a_i = s rho_i sum_j G_ij sigma_j B_j (the gradient w.r.t. the raw routed row A_i with
    the inverse norms held fixed), grad_b likewise, grad_scale in the cancellation-free form.
    """
    A, B, cos = _strip_cosines(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm)
    acc = cos.dtype
    n, m = cos.shape
    s = scale.to(acc)
    rho, sigma = a_inv_norm.to(acc), b_inv_norm.to(acc)
    rl, cl = row_lse.to(acc), col_lse.to(acc)
    gr, gc = g_row.to(acc), g_col.to(acc)
    pos = _positive_mask(n, m, offset, cos.device)
    dr = cos - a_pos.to(acc)[:, None]
    dc = cos - b_pos.to(acc)[None, :]
    P = torch.exp(s * dr - rl[:, None]).masked_fill(pos, 0.0)
    Q = torch.exp(s * dc - cl[None, :]).masked_fill(pos, 0.0)
    G = gr[:, None] * P + gc[None, :] * Q
    idx = torch.arange(n, device=cos.device)
    G[idx, idx + offset] = gr * torch.expm1(-rl) + gc[idx + offset] * torch.expm1(-cl[idx + offset])
    grad_scale = (gr[:, None] * P * dr + gc[None, :] * Q * dc).sum()
    H = s * rho[:, None] * G * sigma[None, :]
    return H @ B, H.T @ A, grad_scale


def _softplus(t: torch.Tensor) -> torch.Tensor:
    """log(1 + e^t) in the stable form max(t, 0) + log1p(e^-|t|) (NaN stays NaN)."""
    return t.clamp_min(0.0) + torch.log1p(torch.exp(-t.abs()))


def reference_sigmoid_strip(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale,
                            bias, offset: int, g_row=None, want_loss: bool = True,
                            want_grads: bool = True, deterministic: bool = False):
    """The sigmoid (SigLIP) strip of docs/design.md section 2.6 in plain torch (materializes n x m).

    Rows A [n, d] and columns B [m, d] routed as in the softmax strip (a, a_alt [n, d], a_swap
    bool [n] or None; b, b_alt, b_swap likewise for the m columns); a_inv_norm [n], b_inv_norm
    [m]; scale and bias 0-dim; the positive of row i at column i + offset. With
    z_ij = s rho_i sigma_j (A_i . B_j) + bias and l_ij = +1 at the positive, -1 elsewhere:

      row_loss_i = sum_j softplus(-l_ij z_ij)                                   [n]
      G_ij = w_i (sigmoid(z_ij) - [l_ij = +1]) = -l_ij w_i sigmoid(-l_ij z_ij)
      grad_a_i = s rho_i sum_j G_ij sigma_j B_j,  grad_b_j = s sigma_j sum_i G_ij rho_i A_i
      grad_scale = sum_ij G_ij cos_ij,  grad_bias = sum_ij G_ij

    with w = g_row [n], or ones when g_row is None (the forward-with-gradients of a scalar
    upstream). Gradients are w.r.t. the raw routed rows with the inverse norms held fixed, as the
    softmax strip's. Returns (row_loss [n], grad_a [n, d], grad_b [m, d], grad_scale [],
    grad_bias []) in the accumulation dtype; row_loss is empty ([0]) unless want_loss, grad_a and
    grad_b are empty ([0, d]) unless want_grads (grad_scale and grad_bias are then 0).
    """
    A, B, cos = _strip_cosines(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm)
    acc = cos.dtype
    n, m = cos.shape
    d = A.shape[1]
    s, bb = scale.to(acc), bias.to(acc)
    z = s * cos + bb
    label = torch.where(_positive_mask(n, m, offset, cos.device), 1.0, -1.0).to(acc)
    row_loss = _softplus(-label * z).sum(1) if want_loss else cos.new_empty(0)
    if not want_grads:
        zero = cos.new_zeros(())
        return row_loss, cos.new_empty(0, d), cos.new_empty(0, d), zero, zero.clone()
    w = torch.ones(n, dtype=acc, device=cos.device) if g_row is None else g_row.to(acc)
    G = -label * w[:, None] * torch.sigmoid(-label * z)
    H = s * a_inv_norm.to(acc)[:, None] * G * b_inv_norm.to(acc)[None, :]
    return row_loss, H @ B, H.T @ A, (G * cos).sum(), G.sum()
