"""The strip scheme (docs/design.md sections 2.4, 2.6) across ranks of a torch.distributed group,
for both losses.

Rank r holds n_r local pairs; the global batch is the concatenation over ranks in rank order
(N = sum n_r) and rank r's rows sit at global offset o_r = n_0 + ... + n_{r-1}.

Forward, per rank:
  1. Local O(n_r d) steps: inverse norms of x and y rows and the pairs' cosines; the column rows
     b_r = where(swap, x, y) (the all-gather's send buffer).
  2. all_gather b (the *only* [N, d] transfer; open_clip gathers both towers), the columns'
     inverse norms and the pairs' cosines (N floats each).
  3. strip_forward(rows routed from the local x/y, columns B [N, d], offset=o_r): complete row
     statistics of the local rows, partial column statistics over the local rows.
  4. Combine the column partials across ranks without losing small ones: each rank contributes
     expm1(partial) for the columns whose positive it owns and exp(partial) for the others; the
     summed value q gives log1p(q). Where any partial exceeds 60 (a large loss, no precision at
     stake, but exp could overflow) a max-shifted log-sum-exp is used: one all_reduce MAX and one
     all_reduce SUM of 2N floats in all.
  5. Local per-pair losses l_i = 1/2 (row_i + col_{o_r + i}).
Backward, per rank, upstream g_local [n_r]:
  6. all_gather g (N floats): the column weights are the global 1/2 g.
  7. strip_backward: gradients of the local rows (complete), of all N columns (partial: this
     rank's rows only), and this rank's share of d(scale).
  8. reduce_scatter (SUM) the column gradients; each rank routes its rows' and columns'
     gradients back to x and y and applies the normalization's projection (O(n_r d)).

The sigmoid loss (docs/design.md section 2.6) uses steps 1-2 (columns and their inverse norms
only), one sigmoid strip of the local rows against all columns (complete per-row losses: nothing to
combine) and step 8; with a scalar upstream the strip's gradients come from the forward and each
rank scales its kept partials by its own upstream scalar before the reduce-scatter.

Per rank: one strip of n_r x N (1/W of the single-device FLOPs), O(N d) memory (the gathered
columns, saved for backward, and the partial column gradient), and N d + O(N) elements sent each
way.

Gradient convention (the one of ``torch.distributed.nn`` and so of open_clip's
``ClipLoss(local_loss=True, gather_with_grad=True)``): autograd through the collectives is exact
for the *sum over ranks* of every rank's objective. A rank's local features receive the gradient
of sum_r objective_r; its logit_scale receives its share of that gradient (the scale gradients of
all ranks sum to the full one). With ``reduction='mean'`` each rank's objective is the global mean
loss L (the same value on every rank), so sum_r objective_r = W L: a rank's features get W dL/dx
and the W scale shares sum to W dL/ds; DDP's averaging over W then leaves exactly the
single-process gradients dL/dtheta and dL/ds. ``gapops.ContrastiveLoss`` maps ClipLoss's other
settings onto this (gapops/module.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from . import _dispatch, _fused, _pair_ids

_DTYPE_CODES = {torch.float16: 1, torch.bfloat16: 2, torch.float32: 3, torch.float64: 4}
_CODE_DTYPES = {v: k for k, v in _DTYPE_CODES.items()}


# ---------------------------------------------------------------------------------------------
# collectives (thin wrappers: the non-deprecated names where this torch has them)

def _all_gather_flat(out: Tensor, inp: Tensor, group) -> None:
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(out, inp, group=group)


def _reduce_scatter_flat(out: Tensor, inp: Tensor, group) -> None:
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    try:
        fn(out, inp, op=dist.ReduceOp.SUM, group=group)
    except (RuntimeError, NotImplementedError) as e:
        # Old gloo builds lack reduce_scatter: all_reduce the whole buffer and keep our slice
        # (twice the traffic, same result).
        if "reduce_scatter" not in str(e).lower() and "not supported" not in str(e).lower():
            raise
        buf = inp.clone()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
        rank = dist.get_rank(group)
        out.copy_(buf.view(-1, *out.shape)[rank])


def _gather_rows(x: Tensor, counts: Sequence[int], group) -> Tensor:
    """Concatenation over ranks of each rank's x [n_r, ...], in rank order: [N, ...]."""
    world, n_max, total = len(counts), max(counts), sum(counts)
    x = x.contiguous()
    if all(c == n_max for c in counts):
        out = x.new_empty((total, *x.shape[1:]))
        _all_gather_flat(out, x, group)
        return out
    # Unequal local batches: pad every rank to n_max, gather, drop the padding.
    padded = x.new_zeros((n_max, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = x.new_empty((world * n_max, *x.shape[1:]))
    _all_gather_flat(out, padded, group)
    out = out.view(world, n_max, *x.shape[1:])
    return torch.cat([out[r, :c] for r, c in enumerate(counts)])


def _scatter_rows_sum(x: Tensor, counts: Sequence[int], rank: int, group) -> Tensor:
    """Sum over ranks of x [N, ...], each rank keeping its own rows [n_rank, ...]."""
    world, n_max = len(counts), max(counts)
    x = x.contiguous()
    if all(c == n_max for c in counts):
        out = x.new_empty((n_max, *x.shape[1:]))
        _reduce_scatter_flat(out, x, group)
        return out
    padded = x.new_zeros((world, n_max, *x.shape[1:]))
    start = 0
    for r, c in enumerate(counts):
        padded[r, :c] = x[start:start + c]
        start += c
    out = x.new_empty((n_max, *x.shape[1:]))
    _reduce_scatter_flat(out, padded.view(world * n_max, *x.shape[1:]), group)
    return out[: counts[rank]]


def _combine_column_stats(partial: Tensor, offset: int, n: int, group) -> Tensor:
    """Column statistics [N] of the whole batch from each rank's partials (module doc, step 4).

    partial_j = log(sum over this rank's rows of e^(x_ij)), plus the positive's exact 1 for the
    columns j in [offset, offset + n) whose positive row is on this rank.
    """
    mx = partial.clone()
    dist.all_reduce(mx, op=dist.ReduceOp.MAX, group=group)
    shift = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    terms = torch.exp(partial)
    terms[offset:offset + n] = torch.expm1(partial[offset:offset + n])
    both = torch.stack([terms, torch.exp(partial - shift)])
    dist.all_reduce(both, op=dist.ReduceOp.SUM, group=group)
    precise = torch.log1p(both[0])
    shifted = shift + torch.log(both[1])
    return torch.where(mx > 60, shifted, precise)


# ---------------------------------------------------------------------------------------------
# validation

def _agree(a: Tensor, b: Tensor, scalars: tuple, group, function: str,
           has_ids: bool = False) -> list[int]:
    """Checks that every rank passes compatible features; returns the local batch sizes.

    One all_gather of 5 integers per rank; every rank sees the same table, so every rank raises
    the same ValueError (instead of hanging in a later collective with mismatched shapes).
    """
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, *scalars))
    dev = a.device if dist.get_backend(group) != "gloo" else torch.device("cpu")
    mine = torch.tensor([a.shape[0], a.shape[1], _DTYPE_CODES.get(a.dtype, 0), int(needs_grad),
                         int(has_ids)], dtype=torch.int64, device=dev)
    world = dist.get_world_size(group)
    table = torch.empty(world * 5, dtype=torch.int64, device=dev)
    _all_gather_flat(table, mine, group)
    rows = table.view(world, 5).tolist()
    ids = [r[4] for r in rows]
    if len(set(ids)) != 1:
        raise ValueError(f"{function}(group=...): some ranks pass pair_ids and others do not "
                         f"(rank -> pair_ids given: {dict(enumerate(map(bool, ids)))}); every "
                         f"rank must pass its local pairs' IDs, or none")
    ds = [r[1] for r in rows]
    if len(set(ds)) != 1:
        raise ValueError(f"{function}(group=...): ranks disagree on the feature size d "
                         f"(rank -> d: {dict(enumerate(ds))}); every rank must pass [n_local, d] "
                         f"features with the same d")
    dts = [r[2] for r in rows]
    if len(set(dts)) != 1:
        names = {i: str(_CODE_DTYPES.get(c, "?")) for i, c in enumerate(dts)}
        raise ValueError(f"{function}(group=...): ranks disagree on the features' dtype "
                         f"(rank -> dtype: {names}); every rank must pass the same dtype")
    grads = [r[3] for r in rows]
    if len(set(grads)) != 1:
        raise ValueError(f"{function}(group=...): some ranks need gradients and others do "
                         f"not (rank -> needs grad: {dict(enumerate(map(bool, grads)))}); the "
                         f"backward is collective, so every rank must run it or none")
    return [r[0] for r in rows]


# ---------------------------------------------------------------------------------------------
# the strip of this rank's rows against every rank's columns, both losses

def _local_rows(x, y, swap_mask, inv_x, inv_y, b_all, b_inv_all) -> tuple:
    """The leading strip arguments (a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm)
    of this rank's routed rows against the gathered columns (already routed: no column mask)."""
    a, a_alt, a_swap, _, _, _, a_inv, _ = _fused.routed_inputs(x, y, swap_mask, inv_x, inv_y)
    return a, a_alt, a_swap, b_all, b_all, None, a_inv, b_inv_all


def _gathered_strip(x, y, swap_mask, inv_x, inv_y, counts, group) -> tuple:
    """_local_rows after the all-gather of every rank's column rows and their inverse norms."""
    b_inv = _fused.routed_inputs(x, y, swap_mask, inv_x, inv_y)[7]
    b_all = _gather_rows(_fused.column_rows(x, y, swap_mask), counts, group)
    return _local_rows(x, y, swap_mask, inv_x, inv_y, b_all, _gather_rows(b_inv, counts, group))


def _finish(grad_a, grad_b_all, x, y, swap_mask, inv_x, inv_y, normalize, counts, rank, group):
    """(dx, dy) of the local features: the partial column gradients [N, d] summed over ranks
    (reduce-scatter), then routed and projected with the local rows' gradient (module doc, 8)."""
    grad_b = _scatter_rows_sum(grad_b_all, counts, rank, group)
    return _fused.finish_gradients(grad_a, grad_b.contiguous(), x, y, swap_mask, inv_x, inv_y,
                                   normalize)


def _global_groups(pair_ids, counts, group, device) -> _pair_ids.Groups:
    """The ID groups of the global batch (pair_ids gathered like the positives' cosines)."""
    ids_all = None if pair_ids is None else _gather_rows(pair_ids, counts, group)
    return _pair_ids.groups_of(ids_all, sum(counts), device)


# ---------------------------------------------------------------------------------------------
# the differentiable ops

class _DistributedRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, swap_mask, scale, normalize, backend, deterministic, group, counts,
                rank, pair_ids, label_smoothing):
        forward, _ = _dispatch.strip_kernels(backend, deterministic)
        offset, n = sum(counts[:rank]), counts[rank]
        inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
        cos = _fused.pair_cosines(x, y, inv_x, inv_y)
        strip = _gathered_strip(x, y, swap_mask, inv_x, inv_y, counts, group)
        b_all, b_inv_all = strip[3], strip[7]
        pos_all = _gather_rows(cos, counts, group)
        row_lse, col_part = forward(*strip, cos, pos_all, scale, offset)
        col_lse = _combine_column_stats(col_part, offset, n, group)
        ctx.groups = None
        if pair_ids is None and label_smoothing == 0:
            rows, excess = 0.5 * (row_lse + col_lse[offset:offset + n]), None
        else:  # design.md 2.7: the column excess partials add up over ranks (N floats)
            ctx.groups = _global_groups(pair_ids, counts, group, x.device)
            a, b = _pair_ids.strip_sides(*strip)
            row_ex, col_ex = _pair_ids.softmax_excess(ctx.groups, a, b, cos, pos_all, offset,
                                                      label_smoothing, deterministic)
            dist.all_reduce(col_ex, op=dist.ReduceOp.SUM, group=group)
            rows, excess = _pair_ids.softmax_rows(row_lse, col_lse[offset:offset + n], row_ex,
                                                  col_ex[offset:offset + n], scale)
        ctx.save_for_backward(x, y, swap_mask, scale, b_all, b_inv_all, pos_all, inv_x, inv_y,
                              cos, row_lse, col_lse, excess)
        ctx.cfg = (normalize, backend, deterministic, group, counts, rank, offset, label_smoothing)
        return rows

    @staticmethod
    def backward(ctx, grad):
        (x, y, swap_mask, scale, b_all, b_inv_all, pos_all, inv_x, inv_y, cos, row_lse,
         col_lse, excess) = ctx.saved_tensors
        normalize, backend, deterministic, group, counts, rank, offset, eps = ctx.cfg
        _, backward = _dispatch.strip_kernels(backend)
        strip = _local_rows(x, y, swap_mask, inv_x, inv_y, b_all, b_inv_all)
        half = 0.5 * grad.to(row_lse.dtype)
        half_all = _gather_rows(half, counts, group)
        grad_a, grad_b_all, ds = backward(*strip, cos, pos_all, scale, offset, row_lse, col_lse,
                                          half, half_all, deterministic)
        if ctx.groups is not None:  # corrections of the local rows, and this rank's column share
            a, b = _pair_ids.strip_sides(*strip)
            _pair_ids.add_softmax_gradients_(grad_a, grad_b_all, ctx.groups, a, b, offset, eps,
                                             scale, half_all, deterministic)
            ds = ds.reshape(()) + _pair_ids.softmax_scale_correction(half, excess).to(ds.dtype)
        dx, dy = _finish(grad_a, grad_b_all, x, y, swap_mask, inv_x, inv_y, normalize, counts,
                         rank, group)
        return (dx, dy, None, ds.reshape(()).to(scale.dtype), None, None, None, None, None, None,
                None, None)


class _DistributedSigmoidTotal(torch.autograd.Function):
    """The sum of this rank's sigmoid terms, its gradients computed in the forward (w = 1) and
    kept: the backward scales them by this rank's upstream scalar before the reduce-scatter."""

    @staticmethod
    def forward(ctx, x, y, swap_mask, scale, bias, normalize, backend, deterministic, group,
                counts, rank, want_grads, pair_ids):
        strip = _dispatch.sigmoid_kernel(backend)
        inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
        args = _gathered_strip(x, y, swap_mask, inv_x, inv_y, counts, group)
        offset = sum(counts[:rank])
        rows, grad_a, grad_b_all, ds, db = strip(*args, scale, bias, offset, None, True,
                                                 want_grads, deterministic)
        if pair_ids is not None:  # design.md 2.7: same-ID pairs, local rows against all columns
            groups = _global_groups(pair_ids, counts, group, x.device)
            a, b = _pair_ids.strip_sides(*args)
            grads = (grad_a, grad_b_all) if want_grads else (None, None)
            delta, cs, cb = _pair_ids.sigmoid_corrections(groups, a, b, offset, scale, bias, None,
                                                          True, *grads, deterministic)
            rows = (rows.to(torch.float64) + delta).to(rows.dtype)
            ds, db = ds.reshape(()) + cs.to(ds.dtype), db.reshape(()) + cb.to(db.dtype)
        ctx.save_for_backward(x, y, swap_mask, inv_x, inv_y, grad_a, grad_b_all, ds, db)
        ctx.cfg = (normalize, group, counts, rank, scale.dtype, bias.dtype)
        return rows.sum()

    @staticmethod
    def backward(ctx, grad):
        x, y, swap_mask, inv_x, inv_y, grad_a, grad_b_all, ds, db = ctx.saved_tensors
        normalize, group, counts, rank, scale_dtype, bias_dtype = ctx.cfg
        g = grad.to(grad_a.dtype)
        dx, dy = _finish(grad_a * g, grad_b_all * g, x, y, swap_mask, inv_x, inv_y, normalize,
                         counts, rank, group)
        return (dx, dy, None, (g * ds).reshape(()).to(scale_dtype),
                (g * db).reshape(()).to(bias_dtype), *([None] * 8))


class _DistributedSigmoidRows(torch.autograd.Function):
    """This rank's sigmoid loss per row [n]; the backward recomputes the strip with the upstream
    weights (only local rows carry weights, so nothing is gathered but the columns)."""

    @staticmethod
    def forward(ctx, x, y, swap_mask, scale, bias, normalize, backend, deterministic, group,
                counts, rank, pair_ids):
        strip = _dispatch.sigmoid_kernel(backend)
        inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
        args = _gathered_strip(x, y, swap_mask, inv_x, inv_y, counts, group)
        offset = sum(counts[:rank])
        rows = strip(*args, scale, bias, offset, None, True, False, deterministic)[0]
        ctx.groups = None
        if pair_ids is not None:
            ctx.groups = _global_groups(pair_ids, counts, group, x.device)
            delta = _pair_ids.sigmoid_corrections(ctx.groups, *_pair_ids.strip_sides(*args),
                                                  offset, scale, bias,
                                                  deterministic=deterministic)[0]
            rows = (rows.to(torch.float64) + delta).to(rows.dtype)
        ctx.save_for_backward(x, y, swap_mask, scale, bias, inv_x, inv_y, args[3], args[7])
        ctx.cfg = (normalize, backend, deterministic, group, counts, rank)
        return rows

    @staticmethod
    def backward(ctx, grad):
        x, y, swap_mask, scale, bias, inv_x, inv_y, b_all, b_inv_all = ctx.saved_tensors
        normalize, backend, deterministic, group, counts, rank = ctx.cfg
        strip = _dispatch.sigmoid_kernel(backend)
        args = _local_rows(x, y, swap_mask, inv_x, inv_y, b_all, b_inv_all)
        offset, weight = sum(counts[:rank]), grad.to(inv_x.dtype)
        _, grad_a, grad_b_all, ds, db = strip(*args, scale, bias, offset, weight, False, True,
                                              deterministic)
        if ctx.groups is not None:
            _, cs, cb = _pair_ids.sigmoid_corrections(ctx.groups, *_pair_ids.strip_sides(*args),
                                                      offset, scale, bias, weight, False, grad_a,
                                                      grad_b_all, deterministic)
            ds, db = ds.reshape(()) + cs.to(ds.dtype), db.reshape(()) + cb.to(db.dtype)
        dx, dy = _finish(grad_a, grad_b_all, x, y, swap_mask, inv_x, inv_y, normalize, counts,
                         rank, group)
        return (dx, dy, None, ds.reshape(()).to(scale.dtype), db.reshape(()).to(bias.dtype),
                *([None] * 7))


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with autograd; backward all_reduces the upstream (torch.distributed.nn)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        g = grad.clone().contiguous()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g, None


def sum_over_ranks(x: Tensor, group) -> Tensor:
    """Sum of ``x`` over the group, the same on every rank, differentiable (see module doc)."""
    return _SumOverRanks.apply(x, group)


def distributed_loss_rows(x: Tensor, y: Tensor, swap_mask, scale: Tensor, normalize: bool,
                          backend: str, deterministic: bool, group, pair_ids=None,
                          label_smoothing: float = 0.0) -> tuple[Tensor, int]:
    """This rank's per-pair losses of the global batch, and the global batch size N.

    x, y: this rank's raw features [n_local, d]; swap_mask: bool [n_local] or None; scale: 0-dim,
    accumulation dtype. Returns (rows [n_local] in the accumulation dtype, differentiable w.r.t.
    x, y, scale through the collectives as the module doc says; N = sum of every rank's n_local).
    Local batch sizes may differ between ranks; d, dtype and whether gradients are needed must
    agree (ValueError on every rank otherwise). Every rank of ``group`` must call it, and, when
    gradients are needed, run the backward.
    """
    group, rank, counts = _membership(x, y, (scale,), group, "contrastive_loss", pair_ids)
    rows = _DistributedRows.apply(x, y, swap_mask, scale, normalize, backend,
                                  bool(deterministic), group, counts, rank, pair_ids,
                                  float(label_smoothing))
    return rows, sum(counts)


def distributed_sigmoid_terms(x: Tensor, y: Tensor, swap_mask, scale: Tensor, bias: Tensor,
                              normalize: bool, backend: str, deterministic: bool, group,
                              per_row: bool, pair_ids=None) -> tuple[Tensor, int]:
    """This rank's sigmoid loss (docs/design.md section 2.6): its rows against the columns of
    every rank, per row [n_local] (per_row) or summed (0-dim), and the global batch size N.

    Arguments as distributed_loss_rows, plus bias (0-dim, accumulation dtype). The rows are
    complete locally (no statistics to combine): the forward all-gathers the column rows and
    their inverse norms; the backward reduce-scatters the column gradient. Differentiable with the
    convention of the module doc: the local features receive the gradient of the sum over ranks
    of every rank's objective, logit_scale and logit_bias this rank's share.
    """
    group, rank, counts = _membership(x, y, (scale, bias), group, "sigmoid_loss", pair_ids)
    det = bool(deterministic)
    if per_row:
        rows = _DistributedSigmoidRows.apply(x, y, swap_mask, scale, bias, normalize, backend,
                                             det, group, counts, rank, pair_ids)
        return rows, sum(counts)
    # _agree made every rank decide the same: gradients wanted everywhere or nowhere
    want_grads = torch.is_grad_enabled() and any(t.requires_grad for t in (x, y, scale, bias))
    total = _DistributedSigmoidTotal.apply(x, y, swap_mask, scale, bias, normalize, backend, det,
                                           group, counts, rank, want_grads, pair_ids)
    return total, sum(counts)


def _membership(x: Tensor, y: Tensor, scalars: tuple, group, function: str,
                pair_ids=None) -> tuple:
    """(group, this process's rank in it, every rank's local batch size), or a clear error."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{function}(group=...) needs torch.distributed to be initialized "
                           "(dist.init_process_group) first")
    if group is None:
        group = dist.group.WORLD
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError(f"{function}(group=...): this process is not a member of the group")
    return group, rank, _agree(x, y, scalars, group, function, pair_ids is not None)
