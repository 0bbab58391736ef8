"""Positives from pair IDs and label smoothing as O(N·d) corrections around the strips
(docs/design.md section 2.7). No kernel knows about IDs.

The strips (design 2.1 softmax, 2.6 sigmoid) take one positive per row, the diagonal pair at
column p(i) = i + offset. With IDs every pair j with id_j = id_i (the group P_i, n_i = |P_i|) is a
positive too. Each difference from the strip's one-positive loss is linear in the cosines of
same-group pairs, so it is a dot product with a *group sum* of unit rows: O(N·d) work and memory,
done here in float64 and the same for every backend.

Notation: rows A_i (local, i < n, pair p(i) = offset + i of the global batch), columns B_j
(j < m, the whole batch), unit rows â_i = ρ_i A_i and b̂_j = σ_j B_j, cos_ij = â_i·b̂_j, s the
scale. Group sums over columns U_g = Σ_{j∈g} b̂_j and over local rows V_g = Σ_{i∈g} â_i (the
slot of group g is the first position of its ID in sorted order, so sums are [m, d] without a
host sync or ``torch.unique``).

Softmax (targets t_ij = (1-ε)[id_j = id_i]/n_i + ε/m, ``cross_entropy``'s label smoothing):
row_i = r̃_i - s E^row_i and col_j = c̃_j - s E^col_j with the *excess*
E^row_i = Σ_j (t_ij - δ_{j,p(i)}) cos_ij (and E^col_j over column j), written relative to the
diagonal cosine so that nothing large cancels. The gradient weights differ from the strip's by
ΔG_ij = (h_i + h_j)(δ_ij - t_ij) (h = the per-pair upstream / 2; t is symmetric within a group).

Sigmoid: softplus(-z) = softplus(z) - z, so a same-ID pair j != p(i) adds -z_ij to row_i and
-w_i to G_ij.

Distributed (rows local, columns gathered): everything over columns is local; the sums over
rows are per-rank partials: the column excess is a partial [m] vector to all-reduce, the column
gradient corrections go into the partial grad_b before its reduce-scatter.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._fused import _row_chunks

F64 = torch.float64


class Groups(NamedTuple):
    """slot: int64 [m], the group slot of each pair, in [0, size); count: float64 [m], n_j >= 1;
    dup: int64 [k], the positions j with n_j > 1 in increasing order, or None: then every pair is
    visited, and a pair whose ID is unique gets a correction of exactly 0; size: the number of
    slots (the rows of each group sum)."""
    slot: Tensor
    count: Tensor
    dup: Optional[Tensor]
    size: int


class Side(NamedTuple):
    """The routed rows of one side of a strip: t[i], or alt[i] where swap[i]; inv [.] the inverse
    norms the kernels use (ones without normalization)."""
    t: Tensor
    alt: Tensor
    swap: Optional[Tensor]
    inv: Tensor


def pair_groups(pair_ids: Tensor, compact: Optional[bool] = None) -> Groups:
    """Group slots and sizes of integer IDs [m] (the whole batch, gathered across ranks).

    slot_j = the first position of id_j in the sorted IDs, count_j = how many pairs share id_j:
    neither needs a host sync or ``torch.unique``. ``compact`` (default: on CPU tensors, where the
    host sync it needs costs nothing) lists the pairs that have same-ID partners and numbers their
    groups densely, so that the corrections visit only those pairs (a batch of unique IDs then
    costs O(N) beyond the strip).
    """
    ids = pair_ids.reshape(-1).to(torch.int64)
    sorted_ids, _ = torch.sort(ids)
    slot = torch.searchsorted(sorted_ids, ids)
    sizes = torch.zeros_like(slot).index_add_(0, slot, torch.ones_like(slot))
    count = sizes[slot]
    if compact is None:
        compact = ids.device.type == "cpu"
    if not compact:
        return Groups(slot, count.to(F64), None, ids.numel())
    dup = (count > 1).nonzero().squeeze(1)
    used, dense = torch.unique(slot[dup], return_inverse=True)
    slot = torch.zeros_like(slot).index_copy_(0, dup, dense)  # pairs without partners: unread
    return Groups(slot, count.to(F64), dup, used.numel())


def groups_of(pair_ids: Optional[Tensor], n: int, device: torch.device) -> Groups:
    """The groups of pair_ids [n]; None: every pair alone, with nothing to visit on any device."""
    if pair_ids is None:
        return Groups(torch.zeros(n, dtype=torch.int64, device=device),
                      torch.ones(n, dtype=F64, device=device),
                      torch.zeros(0, dtype=torch.int64, device=device), 0)
    return pair_groups(pair_ids)


def strip_sides(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm) -> tuple[Side, Side]:
    """The rows and columns of a strip from its eight leading arguments (design.md 2.1)."""
    return Side(a, a_alt, a_swap, a_inv_norm), Side(b, b_alt, b_swap, b_inv_norm)


def has_duplicates(groups: Groups) -> bool:
    """Whether any two pairs share an ID (a host sync on a GPU)."""
    return bool((groups.count > 1).any())


# ---------------------------------------------------------------------------------------------
# which rows to visit, in chunks: slices of all rows, or pieces of the list of duplicates

def _chunks(n: int, d: int, device: torch.device, subset: Optional[Tensor]):
    if subset is None:
        yield from _row_chunks(n, d, device)
    else:
        for part in _row_chunks(subset.numel(), d, device):
            yield subset[part]


def _local_subset(groups: Groups, offset: int, n: int) -> Optional[Tensor]:
    """The strip's rows (local indices) that have same-ID partners, or None: all."""
    if groups.dup is None:
        return None
    return groups.dup[(groups.dup >= offset) & (groups.dup < offset + n)] - offset


def _local_pairs(groups: Groups, offset: int, n: int, d: int, device):
    """Chunks of the strip's rows i (local indices) to visit; column p(i) = i + offset is the same
    pair's column."""
    return _chunks(n, d, device, _local_subset(groups, offset, n))


def _foreign_columns(dup: Optional[Tensor], offset: int, n: int, m: int, d: int, device):
    """Chunks of the columns whose pair is not one of the strip's rows (distributed: another
    rank's pairs), among ``dup`` (None: all); none on a single device."""
    if dup is not None:
        yield from _chunks(m, d, device, dup[(dup < offset) | (dup >= offset + n)])
        return
    for lo, hi in ((0, offset), (offset + n, m)):
        for cols in _row_chunks(hi - lo, d, device):
            yield slice(cols.start + lo, cols.stop + lo)


def _plus(rows, k: int):
    return slice(rows.start + k, rows.stop + k) if isinstance(rows, slice) else rows + k


def _routed(side: Side, rows) -> Tensor:
    t = side.t[rows]
    if side.swap is not None:
        t = torch.where(side.swap[rows].unsqueeze(1), side.alt[rows], t)
    return t


def _unit(side: Side, rows, dtype: torch.dtype = F64) -> Tensor:
    """Unit rows (routed, times the kernels' inverse norms) of side for ``rows``, in dtype (never
    narrower than the features': the product promotes, one pass)."""
    return _routed(side, rows) * side.inv[rows].to(dtype).unsqueeze(1)


def _scatter_add_(out: Tensor, slot: Tensor, src: Tensor, deterministic: bool) -> None:
    # index_add_ on CUDA adds with atomics in no fixed order; index_put_ with accumulate sorts the
    # indices first and sums each slot in one order (used for deterministic=True).
    if deterministic and out.device.type != "cpu":
        out.index_put_((slot,), src, accumulate=True)
    else:
        out.index_add_(0, slot, src)


def group_sums(side: Side, slot: Tensor, size: int, weights=(None,),
               subset: Optional[Tensor] = None, deterministic: bool = False,
               dtype: torch.dtype = F64) -> list[Tensor]:
    """For each weight vector w (None: ones), Σ_{i: slot_i = k} w_i x̂_i into row k: [size, d]
    in dtype each, over the unit rows x̂ of ``side`` (those in ``subset``, or all), in one pass."""
    n, d = side.t.shape
    outs = [torch.zeros(size, d, dtype=dtype, device=side.t.device) for _ in weights]
    for rows in _chunks(n, d, side.t.device, subset):
        u = _unit(side, rows, dtype)
        for out, w in zip(outs, weights):
            src = u if w is None else u * w[rows].unsqueeze(1)
            _scatter_add_(out, slot[rows], src, deterministic)
    return outs


def _strip_sums(groups: Groups, a: Side, b: Side, offset: int, b_weights, a_weights,
                deterministic: bool, dtype: torch.dtype = F64):
    """Group sums over every column (of b̂, for b_weights) and over the strip's rows (of â)."""
    n = a.t.shape[0]
    slot_r = groups.slot[offset:offset + n]
    return (group_sums(b, groups.slot, groups.size, b_weights, groups.dup, deterministic, dtype),
            group_sums(a, slot_r, groups.size, a_weights, _local_subset(groups, offset, n),
                       deterministic, dtype))


def _totals(side: Side, weights=(None,), dtype: torch.dtype = F64) -> list[Tensor]:
    """For each weight vector w (None: ones), Σ_i w_i x̂_i over all rows of side: [d] in dtype."""
    n, d = side.t.shape
    outs = [torch.zeros(d, dtype=dtype, device=side.t.device) for _ in weights]
    for rows in _row_chunks(n, d, side.t.device):
        raw, inv = _routed(side, rows).to(dtype), side.inv[rows].to(dtype)
        for out, w in zip(outs, weights):
            out += raw.T @ (inv if w is None else inv * w[rows])
    return outs


def _dots(side: Side, v: Tensor) -> Tensor:
    """x̂_i · v for every row of side: [n] float64."""
    n, d = side.t.shape
    out = torch.empty(n, dtype=F64, device=side.t.device)
    for rows in _row_chunks(n, d, side.t.device):
        out[rows] = (_routed(side, rows).to(F64) @ v) * side.inv[rows].to(F64)
    return out


def _col(side: Side, cols, dtype: torch.dtype = F64) -> Tensor:
    return side.inv[cols].to(dtype).unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# softmax

def softmax_excess(groups: Groups, a: Side, b: Side, a_pos: Tensor, b_pos: Tensor, offset: int,
                   label_smoothing: float, deterministic: bool = False) -> tuple[Tensor, Tensor]:
    """The loss corrections of the softmax strip: (row [n], col_partial [m]), float64.

    a_pos [n], b_pos [m]: the positives' cosines the strip was given (its diagonal logit is
    s a_pos exactly, so the targets are weighed against the same value). row_i =
    Σ_j (t_ij - δ_{j,p(i)}) cos_ij (complete: every column is here), so that the per-row loss is
    r̃_i - s row_i. col_partial_j = the same over this strip's rows for column j: the complete
    column excess is its sum over ranks (single device: itself), and c̃_j - s col_j the column's
    loss. A pair whose ID is unique gets exactly 0 when ε = 0.
    """
    n, d = a.t.shape
    m, dev = b.t.shape[0], a.t.device
    eps = float(label_smoothing)
    slot_c, cnt_c = groups.slot, groups.count
    slot_r, cnt_r = slot_c[offset:offset + n], cnt_c[offset:offset + n]
    pa, pb = a_pos.to(F64), b_pos.to(F64)
    (U,), (V,) = _strip_sums(groups, a, b, offset, (None,), (None,), deterministic)
    row = torch.zeros(n, dtype=F64, device=dev)
    col = torch.zeros(m, dtype=F64, device=dev)
    for rows in _local_pairs(groups, offset, n, d, dev):
        ah, bp, cols = _unit(a, rows), _unit(b, _plus(rows, offset)), _plus(rows, offset)
        g, k = slot_r[rows], cnt_r[rows]
        # (1/n_i) Σ_{j in P_i, j != p(i)} (cos_ij - a_pos_i): the group sum less the pair itself
        row[rows] = (torch.linalg.vecdot(ah, U[g] - bp) - (k - 1) * pa[rows]) / k
        col[cols] = (torch.linalg.vecdot(bp, V[g] - ah) - (k - 1) * pb[cols]) / k
    for cols in _foreign_columns(groups.dup, offset, n, m, d, dev):
        col[cols] = torch.linalg.vecdot(_unit(b, cols), V[slot_c[cols]]) / cnt_c[cols]
    if eps:
        # the smoothing target ε/m on every pair: ε (x̂ · total / m - the pair's own cosine)
        ((u_total,), (v_total,)) = _totals(b), _totals(a)
        own = torch.zeros(m, dtype=F64, device=dev)
        own[offset:offset + n] = 1.0
        row = (1 - eps) * row + eps * (_dots(a, u_total) / m - pa)
        col = (1 - eps) * col + eps * (_dots(b, v_total) / m - own * pb)
    return row, col


def softmax_rows(row_lse: Tensor, col_lse: Tensor, row_excess: Tensor, col_excess: Tensor,
                 scale: Tensor) -> tuple[Tensor, Tensor]:
    """The per-pair loss ½(r̃_i - s E^row_i + c̃_p(i) - s E^col_p(i)) [n] in row_lse's dtype (summed
    in float64), and E_i = E^row_i + E^col_p(i) [n] (float64) for the scale's gradient; col_lse and
    col_excess are the complete values of this strip's own pairs."""
    excess = row_excess + col_excess
    s = scale.detach().to(F64)
    rows = 0.5 * (row_lse.to(F64) + col_lse.to(F64) - s * excess)
    return rows.to(row_lse.dtype), excess


def softmax_scale_correction(half: Tensor, excess: Tensor) -> Tensor:
    """d(scale) to add to the strip's grad_scale: -Σ_i h_i E_i over this strip's pairs (h = the
    local upstream / 2, E from softmax_rows); the correction is linear in s."""
    return -(half.to(F64) * excess.to(F64)).sum()


def add_softmax_gradients_(grad_a: Tensor, grad_b: Tensor, groups: Groups, a: Side, b: Side,
                           offset: int, label_smoothing: float, scale: Tensor, half: Tensor,
                           deterministic: bool = False) -> None:
    """Adds ΔG's share to the strip's grad_a [n, d] and (partial) grad_b [m, d] in place.

    half: [m], the column weights g_col = upstream / 2 of every pair (distributed: gathered); the
    strip rows' weights are half[offset:offset + n]. Gradients are w.r.t. the raw routed rows with
    the inverse norms held fixed, as the strip's: s ρ_i Σ_j ΔG_ij b̂_j and s σ_j Σ_i ΔG_ij â_i with
    ΔG_ij = (h_i + h_j)(δ_ij - t_ij), split as (1-ε)(δ_ij - [same]/n_i) + ε(δ_ij - 1/m); the
    column part sums over this strip's rows only. Computed in grad_a's dtype (the accumulation
    dtype, as the strip's own gradient: no cancellation here needs more).
    """
    n, d = a.t.shape
    m, dev, acc = b.t.shape[0], a.t.device, grad_a.dtype
    eps = float(label_smoothing)
    s = (1 - eps) * scale.detach().to(acc)
    h = half.to(acc)
    h_r = h[offset:offset + n]
    slot_c, cnt_c = groups.slot, groups.count.to(acc)
    slot_r, cnt_r = slot_c[offset:offset + n], cnt_c[offset:offset + n]
    (U, W), (V, X) = _strip_sums(groups, a, b, offset, (None, h), (None, h_r), deterministic, acc)

    def share(hk, k, sums, weighted_sums, own):
        # Σ over the group of (h_i + h_j)(δ - 1/n) x̂ = (h U_g + W_g)/n - 2 h x̂_own: exactly 0 for a
        # unique ID (U_g = x̂_own, W_g = h x̂_own, and doubling is exact)
        return (hk * sums + weighted_sums) / k - own * (2 * hk)

    for rows in _local_pairs(groups, offset, n, d, dev):
        ah, cols = _unit(a, rows, acc), _plus(rows, offset)
        bp = _unit(b, cols, acc)
        g, hk, k = slot_r[rows], h_r[rows].unsqueeze(1), cnt_r[rows].unsqueeze(1)
        grad_a[rows] -= share(hk, k, U[g], W[g], bp) * (s * _col(a, rows, acc))
        grad_b[cols] -= share(hk, k, V[g], X[g], ah) * (s * _col(b, cols, acc))
    for cols in _foreign_columns(groups.dup, offset, n, m, d, dev):
        g, hk, k = slot_c[cols], h[cols].unsqueeze(1), cnt_c[cols].unsqueeze(1)
        grad_b[cols] -= (hk * V[g] + X[g]) * (s * _col(b, cols, acc) / k)
    if eps:
        _add_smoothing_gradients_(grad_a, grad_b, a, b, offset, eps * scale.detach().to(acc), h)


def _add_smoothing_gradients_(grad_a, grad_b, a: Side, b: Side, offset: int, eps_s: Tensor,
                              h: Tensor) -> None:
    """The ε(δ_ij - 1/m) share of ΔG on every pair: s ε [2 h_i b̂_p(i) - (h_i ū + w̄)/m] for row i
    (ū = Σ_j b̂_j, w̄ = Σ_j h_j b̂_j) and s ε [2 h_j â_j - (h_j v̄ + x̄)/m] for column j (v̄, x̄
    over this strip's rows; the 2 h_j â_j only where the column's pair is one of them)."""
    n, d = a.t.shape
    m, dev, acc = b.t.shape[0], a.t.device, grad_a.dtype
    h_r = h[offset:offset + n]
    u_total, w_total = _totals(b, (None, h), acc)
    v_total, x_total = _totals(a, (None, h_r), acc)
    for rows in _row_chunks(n, d, dev):
        cols, hk = _plus(rows, offset), h_r[rows].unsqueeze(1)
        e = (2 * hk) * _unit(b, cols, acc) - (hk * u_total + w_total) / m
        grad_a[rows] += e * (eps_s * _col(a, rows, acc))
        e = (2 * hk) * _unit(a, rows, acc) - (hk * v_total + x_total) / m
        grad_b[cols] += e * (eps_s * _col(b, cols, acc))
    for cols in _foreign_columns(None, offset, n, m, d, dev):
        e = -(h[cols].unsqueeze(1) * v_total + x_total) / m
        grad_b[cols] += e * (eps_s * _col(b, cols, acc))


# ---------------------------------------------------------------------------------------------
# sigmoid

def sigmoid_corrections(groups: Groups, a: Side, b: Side, offset: int, scale: Tensor,
                        bias: Tensor, weight: Optional[Tensor] = None, want_loss: bool = True,
                        grad_a: Optional[Tensor] = None, grad_b: Optional[Tensor] = None,
                        deterministic: bool = False):
    """Corrections of the sigmoid strip for same-ID pairs off the diagonal.

    Returns (row_delta [n] float64 to add to the strip's row_loss (empty unless want_loss),
    d_scale, d_bias (float64 0-dim, to add to the strip's)); when grad_a [n, d] and the (partial)
    grad_b [m, d] are given, adds to them in place. weight [n]: the strip's g_row (None: ones).
    With S_i = Σ_{j in P_i, j != p(i)} cos_ij and k_i = n_i - 1: row_delta_i = -(s S_i + b k_i);
    grad_a_i -= s ρ_i w_i (U_g - b̂_p(i)); grad_b_j -= s σ_j Σ_{i in P_j, i != j} w_i â_i
    (this strip's rows); d_scale = -Σ w_i S_i; d_bias = -Σ w_i k_i.
    """
    n, d = a.t.shape
    m, dev = b.t.shape[0], a.t.device
    s, bias64 = scale.detach().to(F64), bias.detach().to(F64)
    slot_c = groups.slot
    slot_r, cnt_r = slot_c[offset:offset + n], groups.count[offset:offset + n]
    w = torch.ones(n, dtype=F64, device=dev) if weight is None else weight.to(F64)
    grads = grad_a is not None
    (U,), row_sums = _strip_sums(groups, a, b, offset, (None,),
                                 (None if weight is None else w,) if grads else (), deterministic)
    Y = row_sums[0] if grads else None
    row = torch.zeros(n if want_loss else 0, dtype=F64, device=dev)
    d_scale = torch.zeros((), dtype=F64, device=dev)
    for rows in _local_pairs(groups, offset, n, d, dev):
        ah, cols = _unit(a, rows), _plus(rows, offset)
        others = U[slot_r[rows]] - _unit(b, cols)  # exactly 0 for a unique ID
        S = torch.linalg.vecdot(ah, others)
        if want_loss:
            row[rows] = -(s * S + bias64 * (cnt_r[rows] - 1))
        d_scale -= (w[rows] * S).sum()
        if grads:
            grad_a[rows] -= ((s * w[rows]).unsqueeze(1) * _col(a, rows) * others).to(grad_a.dtype)
            own = ah if weight is None else ah * w[rows].unsqueeze(1)
            grad_b[cols] -= (s * _col(b, cols) * (Y[slot_r[rows]] - own)).to(grad_b.dtype)
    if grads:
        for cols in _foreign_columns(groups.dup, offset, n, m, d, dev):
            grad_b[cols] -= (s * _col(b, cols) * Y[slot_c[cols]]).to(grad_b.dtype)
    return row, d_scale, -(w * (cnt_r - 1)).sum()
