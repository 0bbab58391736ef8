"""gapops/_pair_ids.py: the O(N·d) corrections for positives from IDs and label smoothing,
composed with the reference strips (one device, and ranks simulated in one process) and checked
against the float64 oracles reference_contrastive_loss_ids / reference_sigmoid_loss_ids: values
and the gradients of x, y, logit_scale and logit_bias."""
import pytest
import torch

from gapops import _fused, _pair_ids
from gapops._pair_ids import Side
from gapops.reference import (reference_contrastive_loss_ids, reference_sigmoid_loss_ids,
                              reference_sigmoid_strip, reference_strip_backward,
                              reference_strip_forward)

F64 = torch.float64


def _ids(kind, n, seed):
    """pair IDs with many, few or no duplicates, one ID for all (rows of positives only), or
    None (smoothing alone)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    if kind == "unique":
        return torch.randperm(n, generator=g) * 3 - 7
    if kind == "one":
        return torch.full((n,), 5, dtype=torch.long)
    groups = {"many": max(1, n // 4), "few": max(1, n - 2)}[kind]
    return torch.randint(0, groups, (n,), generator=g) * 1000 - 50  # arbitrary, some negative


def _inputs(n, d, seed, swap):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = 0.5 * x + torch.randn(n, d, generator=g, dtype=F64)
    mask = (torch.rand(n, generator=g) < 0.4) if swap else None
    up = torch.rand(n, generator=g, dtype=F64) + 0.5  # per-pair upstream, not a constant
    return x, y, mask, up


def _split(n, ranks):
    """Local batch sizes of simulated ranks (unequal when n does not divide)."""
    base = [n // ranks + (r < n % ranks) for r in range(ranks)]
    return [sum(base[:r]) for r in range(ranks)], base


def _sides(x, y, mask, normalize):
    inv_x, inv_y = _fused.inverse_norms(x, normalize), _fused.inverse_norms(y, normalize)
    cos = _fused.pair_cosines(x, y, inv_x, inv_y)
    a, a_alt, a_swap, b, b_alt, b_swap, a_inv, b_inv, _, _ = _fused.strip_inputs(
        x, y, mask, inv_x, inv_y, cos)
    return Side(a, a_alt, a_swap, a_inv), Side(b, b_alt, b_swap, b_inv), inv_x, inv_y, cos


def _local(side, o, n):
    sl = slice(o, o + n)
    return Side(side.t[sl], side.alt[sl], None if side.swap is None else side.swap[sl],
                side.inv[sl])


def fused_softmax(x, y, s, ids, eps, mask, up, normalize=True, ranks=1, compact=None):
    """The softmax loss with IDs as the fused path computes it: reference strips of each rank's
    rows against all columns, plus gapops._pair_ids. Returns (rows [N], dx, dy, ds)."""
    n = x.shape[0]
    A, B, inv_x, inv_y, cos = _sides(x, y, mask, normalize)
    acc = inv_x.dtype
    scale = s.to(acc)
    groups = _pair_ids.groups_of(ids, n, x.device) if compact is None else \
        _pair_ids.pair_groups(ids, compact)
    offsets, counts = _split(n, ranks)
    parts = []
    for o, k in zip(offsets, counts):
        a = _local(A, o, k)
        row_lse, col_part = reference_strip_forward(*a[:3], *B[:3], a.inv, B.inv, cos[o:o + k],
                                                    cos, scale, o)
        row_ex, col_ex = _pair_ids.softmax_excess(groups, a, B, cos[o:o + k], cos, o, eps)
        parts.append((a, row_lse, col_part, row_ex, col_ex))
    # the collectives: column statistics combine as a log-sum-exp of the partials (the owner's
    # holds the positive's 1); the column excess partials add up
    col_lse = torch.stack([p[2] for p in parts]).logsumexp(0)
    col_ex = torch.stack([p[4] for p in parts]).sum(0)
    half = (0.5 * up).to(acc)
    rows, grad_a, grad_b, ds = [], [], torch.zeros(n, x.shape[1], dtype=acc), 0.0
    for (a, row_lse, _, row_ex, _), o, k in zip(parts, offsets, counts):
        sl = slice(o, o + k)
        loss, excess = _pair_ids.softmax_rows(row_lse, col_lse[sl], row_ex, col_ex[sl], scale)
        rows.append(loss)
        ga, gb, gs = reference_strip_backward(*a[:3], *B[:3], a.inv, B.inv, cos[sl], cos, scale,
                                              o, row_lse, col_lse, half[sl], half)
        _pair_ids.add_softmax_gradients_(ga, gb, groups, a, B, o, eps, scale, half)
        ds = ds + gs + _pair_ids.softmax_scale_correction(half[sl], excess)
        grad_a.append(ga)
        grad_b += gb
    dx, dy = _fused.finish_gradients(torch.cat(grad_a), grad_b, x, y, mask, inv_x, inv_y,
                                     normalize)
    return torch.cat(rows), dx, dy, ds


def fused_sigmoid(x, y, s, bias, ids, mask, up, normalize=True, ranks=1, compact=None):
    """The sigmoid loss with IDs as the fused path computes it (per-row upstream weights).
    Returns (rows [N], dx, dy, ds, dbias)."""
    n = x.shape[0]
    A, B, inv_x, inv_y, _ = _sides(x, y, mask, normalize)
    acc = inv_x.dtype
    scale, b = s.to(acc), bias.to(acc)
    groups = _pair_ids.groups_of(ids, n, x.device) if compact is None else \
        _pair_ids.pair_groups(ids, compact)
    offsets, counts = _split(n, ranks)
    rows, grad_a, grad_b = [], [], torch.zeros(n, x.shape[1], dtype=acc)
    ds = db = 0.0
    for o, k in zip(offsets, counts):
        a, w = _local(A, o, k), up[o:o + k].to(acc)
        row, ga, gb, gs, gbias = reference_sigmoid_strip(*a[:3], *B[:3], a.inv, B.inv, scale, b,
                                                         o, g_row=w)
        delta, cs, cb = _pair_ids.sigmoid_corrections(groups, a, B, o, scale, b, weight=w,
                                                      grad_a=ga, grad_b=gb)
        rows.append((row.to(F64) + delta).to(acc))
        grad_a.append(ga)
        grad_b += gb
        ds, db = ds + gs + cs, db + gbias + cb
    dx, dy = _fused.finish_gradients(torch.cat(grad_a), grad_b, x, y, mask, inv_x, inv_y,
                                     normalize)
    return torch.cat(rows), dx, dy, ds, db


def _oracle(fn, x, y, scalars, up):
    leaves = [t.detach().clone().requires_grad_() for t in (x, y, *scalars)]
    rows = fn(*leaves)
    grads = torch.autograd.grad((rows * up).sum(), leaves)
    return (rows.detach(), *grads)


def _close(got, want, tol, names):
    # floor 1e-4: with d = 1 some exact values vanish and leave the norms' rounding
    for name, g, w in zip(names, got, want):
        g, w = torch.as_tensor(g).double(), torch.as_tensor(w).double()
        err = float((g - w).norm() / max(float(w.norm()), 1e-4))
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


# (N, d, simulated ranks): N = 1, d = 1, unequal local batches
SHAPES = [(1, 3, 1), (2, 1, 1), (2, 1, 2), (7, 5, 1), (7, 5, 2), (7, 5, 3), (33, 17, 1),
          (33, 17, 2), (33, 17, 3)]
KINDS = ["none", "unique", "few", "many", "one"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,d,ranks", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("swap", [False, True])
def test_softmax_corrections_match_the_oracle(n, d, ranks, kind, eps, swap):
    x, y, mask, up = _inputs(n, d, seed=n * 7 + d, swap=swap)
    s = torch.tensor(13.0, dtype=F64)
    ids = _ids(kind, n, seed=n)
    got = fused_softmax(x, y, s, ids, eps, mask, up, ranks=ranks)
    want = _oracle(lambda a, b, sc: reference_contrastive_loss_ids(
        a, b, sc, ids, label_smoothing=eps, swap_mask=mask, reduction="none"), x, y, (s,), up)
    _close(got, want, 1e-9, ("rows", "dx", "dy", "ds"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,d,ranks", SHAPES)
@pytest.mark.parametrize("swap", [False, True])
def test_sigmoid_corrections_match_the_oracle(n, d, ranks, kind, swap):
    x, y, mask, up = _inputs(n, d, seed=n * 5 + d, swap=swap)
    s, bias = torch.tensor(9.0, dtype=F64), torch.tensor(-4.0, dtype=F64)
    ids = _ids(kind, n, seed=n + 1)
    got = fused_sigmoid(x, y, s, bias, ids, mask, up, ranks=ranks)
    want = _oracle(lambda a, b, sc, bb: reference_sigmoid_loss_ids(
        a, b, sc, bb, ids, swap_mask=mask, reduction="none"), x, y, (s, bias), up)
    _close(got, want, 1e-9, ("rows", "dx", "dy", "ds", "dbias"))


@pytest.mark.parametrize("kind", KINDS[1:])
def test_every_pair_visited_matches_the_oracle(kind):
    """compact=False (the default on a GPU: no host sync) visits every pair, unique ones too."""
    n, d = 33, 17
    x, y, mask, up = _inputs(n, d, seed=8, swap=True)
    s, bias = torch.tensor(13.0, dtype=F64), torch.tensor(-4.0, dtype=F64)
    ids = _ids(kind, n, seed=3)
    for eps in (0.0, 0.1):
        got = fused_softmax(x, y, s, ids, eps, mask, up, ranks=3, compact=False)
        want = _oracle(lambda a, b, sc: reference_contrastive_loss_ids(
            a, b, sc, ids, label_smoothing=eps, swap_mask=mask, reduction="none"), x, y, (s,), up)
        _close(got, want, 1e-9, ("rows", "dx", "dy", "ds"))
    got = fused_sigmoid(x, y, s, bias, ids, mask, up, ranks=2, compact=False)
    want = _oracle(lambda a, b, sc, bb: reference_sigmoid_loss_ids(
        a, b, sc, bb, ids, swap_mask=mask, reduction="none"), x, y, (s, bias), up)
    _close(got, want, 1e-9, ("rows", "dx", "dy", "ds", "dbias"))


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_without_normalization_and_across_chunk_boundaries(loss, compact, monkeypatch):
    """Also every pair visited (compact=False, the GPU default) and only the duplicates."""
    # chunks of 64 elements: 13 rows of d = 5 per chunk, so N = 40 spans several, unevenly
    monkeypatch.setattr(_fused, "_CHUNK_ELEMENTS", {"cpu": 64})
    n, d = 40, 5
    x, y, mask, up = _inputs(n, d, seed=3, swap=True)
    ids = _ids("many", n, seed=9)
    s = torch.tensor(0.7, dtype=F64)
    if loss == "softmax":
        got = fused_softmax(x, y, s, ids, 0.1, mask, up, normalize=False, ranks=3,
                            compact=compact)
        want = _oracle(lambda a, b, sc: reference_contrastive_loss_ids(
            a, b, sc, ids, label_smoothing=0.1, swap_mask=mask, normalize=False,
            reduction="none"), x, y, (s,), up)
    else:
        bias = torch.tensor(-1.5, dtype=F64)
        got = fused_sigmoid(x, y, s, bias, ids, mask, up, normalize=False, ranks=3,
                            compact=compact)
        want = _oracle(lambda a, b, sc, bb: reference_sigmoid_loss_ids(
            a, b, sc, bb, ids, swap_mask=mask, normalize=False, reduction="none"),
            x, y, (s, bias), up)
    _close(got, want, 1e-9, ("rows", "dx", "dy", "ds", "dbias"))


@pytest.mark.parametrize("compact", [True, False])
def test_group_slots(compact):
    ids = torch.tensor([7, -3, 7, 100, -3, 7])
    groups = _pair_ids.pair_groups(ids, compact)
    assert torch.equal(groups.count, torch.tensor([3.0, 2, 3, 1, 2, 3], dtype=F64))
    has = torch.tensor([0, 1, 2, 4, 5]) if compact else torch.arange(6)  # pairs with partners
    slot = groups.slot[has]
    assert torch.equal(slot[:, None] == slot[None, :], ids[has][:, None] == ids[has][None, :])
    assert int(groups.slot.min()) >= 0 and int(groups.slot.max()) < groups.size
    assert groups.size == (2 if compact else 6)
    assert (groups.dup is None) != compact
    if compact:
        assert torch.equal(groups.dup, has)
    assert _pair_ids.has_duplicates(groups)
    unique = _pair_ids.pair_groups(torch.tensor([3, 1, 2], dtype=torch.int32), compact)
    assert not _pair_ids.has_duplicates(unique)


@pytest.mark.parametrize("compact", [True, False])
def test_unique_ids_change_nothing_bitwise(compact):
    """Unique IDs and ε = 0: every correction is an exact 0, so fp32 results equal the strip's,
    also where every pair is visited (compact=False)."""
    n, d = 29, 11
    x, y, mask, up = _inputs(n, d, seed=1, swap=True)
    x, y = x.float(), y.float()
    ids = _ids("unique", n, seed=2)
    A, B, inv_x, inv_y, cos = _sides(x, y, mask, True)
    groups = _pair_ids.pair_groups(ids, compact)
    row_ex, col_ex = _pair_ids.softmax_excess(groups, A, B, cos, cos, 0, 0.0)
    assert torch.all(row_ex == 0) and torch.all(col_ex == 0)
    scale = torch.tensor(30.0)
    row_lse, col_lse = reference_strip_forward(*A[:3], *B[:3], A.inv, B.inv, cos, cos, scale, 0)
    half = (0.5 * up).float()
    ga, gb, _ = reference_strip_backward(*A[:3], *B[:3], A.inv, B.inv, cos, cos, scale, 0,
                                         row_lse, col_lse, half, half)
    ga0, gb0 = ga.clone(), gb.clone()
    _pair_ids.add_softmax_gradients_(ga, gb, groups, A, B, 0, 0.0, scale, half)
    assert torch.equal(ga, ga0) and torch.equal(gb, gb0)
    delta, cs, cb = _pair_ids.sigmoid_corrections(groups, A, B, 0, scale, torch.tensor(-3.0),
                                                  weight=half, grad_a=ga, grad_b=gb)
    assert torch.all(delta == 0) and float(cs) == 0 and float(cb) == 0
    assert torch.equal(ga, ga0) and torch.equal(gb, gb0)


def test_fp32_is_as_close_as_the_strips():
    """fp32 features, trained-model scale: the corrected loss and gradients stay within fp32
    tolerance of the float64 oracle (the corrections are float64; only the strip rounds)."""
    n, d = 64, 32
    x, y, mask, up = _inputs(n, d, seed=5, swap=True)
    x = y + 0.3 * x  # dominant positives
    ids = _ids("many", n, seed=6)
    s = torch.tensor(100.0, dtype=F64)
    got = fused_softmax(x.float(), y.float(), s, ids, 0.1, mask, up)
    want = _oracle(lambda a, b, sc: reference_contrastive_loss_ids(
        a, b, sc, ids, label_smoothing=0.1, swap_mask=mask, reduction="none"),
        x.float().double(), y.float().double(), (s,), up)
    _close(got, want, 2e-5, ("rows", "dx", "dy", "ds"))
    bias = torch.tensor(-10.0, dtype=F64)
    got = fused_sigmoid(x.float(), y.float(), torch.tensor(10.0, dtype=F64), bias, ids, mask, up)
    want = _oracle(lambda a, b, sc, bb: reference_sigmoid_loss_ids(
        a, b, sc, bb, ids, swap_mask=mask, reduction="none"),
        x.float().double(), y.float().double(), (torch.tensor(10.0, dtype=F64), bias), up)
    _close(got, want, 2e-5, ("rows", "dx", "dy", "ds", "dbias"))


def test_sigmoid_duplicate_with_a_large_logit_has_the_documented_error_bound():
    """A same-ID pair with a large z: the fp32 strip holds softplus(z) ≈ z, the float64
    correction subtracts z. Documented bound (docs/design.md 2.7): per row,
    |error| <= 8 u (R_i + |s| (n_i - 1)) with u = 2^-24 and R_i the strip's own row sum (measured
    up to 3.4 u (...) here); a loss far below that absolute error loses its digits."""
    n, d = 48, 64
    g = torch.Generator().manual_seed(11)
    base = torch.randn(n // 2, d, generator=g, dtype=F64)
    x = torch.cat([base, base + 0.01 * torch.randn(n // 2, d, generator=g, dtype=F64)])
    y = x + 0.05 * torch.randn(n, d, generator=g, dtype=F64)
    ids = torch.arange(n) % (n // 2)  # pairs i and i + n/2 are the same image
    s, bias = torch.tensor(120.0, dtype=F64), torch.tensor(-16.0, dtype=F64)
    x32, y32 = x.float(), y.float()
    rows = fused_sigmoid(x32, y32, s, bias, ids, None, torch.ones(n, dtype=F64))[0]
    want = reference_sigmoid_loss_ids(x32.double(), y32.double(), s, bias, ids,
                                      reduction="none")
    A, B, *_ = _sides(x32, y32, None, True)
    strip_rows = reference_sigmoid_strip(*A[:3], *B[:3], A.inv, B.inv, s.float(), bias.float(),
                                         0, want_grads=False)[0].double()
    assert float(strip_rows.min()) > 80  # the duplicate's softplus(z) ≈ z ≈ 100 is in the sum
    u = 2.0 ** -24
    bound = 8 * u * (strip_rows + float(s) * 1)  # n_i - 1 = 1 duplicate per row
    err = (rows.double() - want).abs()
    assert torch.all(err <= bound), float((err / bound).max())


def test_sigmoid_loss_only_equals_the_loss_with_gradients():
    """The forward without gradients (no_grad, or nothing requires one) takes another branch."""
    n, d = 21, 6
    x, y, mask, up = _inputs(n, d, seed=4, swap=True)
    A, B, *_ = _sides(x, y, mask, True)
    groups = _pair_ids.pair_groups(_ids("many", n, seed=5))
    s, bias = torch.tensor(7.0, dtype=F64), torch.tensor(-2.0, dtype=F64)
    alone = _pair_ids.sigmoid_corrections(groups, A, B, 0, s, bias)
    ga, gb = torch.zeros(n, d, dtype=F64), torch.zeros(n, d, dtype=F64)
    both = _pair_ids.sigmoid_corrections(groups, A, B, 0, s, bias, grad_a=ga, grad_b=gb)
    assert torch.equal(alone[0], both[0]) and bool(ga.abs().sum() > 0)
    assert _pair_ids.sigmoid_corrections(groups, A, B, 0, s, bias, want_loss=False)[0].numel() == 0
