"""The oracle itself: the naive strip agrees with the two-cross-entropy form and with itself.

Also the ID oracles (positives from pair IDs, label smoothing) against open_clip's ClipLoss and
SigLipLoss and against the closed forms of docs/design.md."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import gapops
from gapops.reference import (reference_contrastive_loss, reference_contrastive_loss_ids,
                              reference_sigmoid_loss_ids, reference_strip_backward,
                              reference_strip_forward)
from helpers import rand_inputs, rel_err


def _open_clip_loss(name):
    """open_clip's ClipLoss or SigLipLoss (a test dependency; the CI stack job has no open_clip,
    so the tests that compare with it are skipped there)."""
    return getattr(pytest.importorskip("open_clip.loss"), name)


def strip_args(a, b, s, offset, inv_a, inv_b, cos):
    """Strip arguments for rows a against columns b, no swap (docs/design.md section 2.1)."""
    n = a.shape[0]
    return (a, a, None, b, b, None, inv_a, inv_b, cos[offset:offset + n], cos, s, offset)


def test_strip_with_offset_is_a_slice_of_the_full_strip():
    x, y, s = rand_inputs(12, 5, seed=1)
    inv_x, inv_y = 1 / x.norm(dim=1), 1 / y.norm(dim=1)
    cos = (x * y).sum(1) * inv_x * inv_y
    r_full, c_full = reference_strip_forward(*strip_args(x, y, s, 0, inv_x, inv_y, cos))
    r, _ = reference_strip_forward(*strip_args(x[4:9], y, s, 4, inv_x[4:9], inv_y, cos))
    assert torch.allclose(r, r_full[4:9])
    # Column statistics over disjoint row blocks combine into the full ones: log1p of the sum of
    # expm1(part) where the block holds the column's positive and exp(part) where it does not.
    total = torch.zeros(12, dtype=torch.float64)
    for i in (0, 4, 8):
        part = reference_strip_forward(*strip_args(x[i:i + 4], y, s, i, inv_x[i:i + 4], inv_y,
                                                   cos))[1]
        own = torch.zeros(12, dtype=torch.bool)
        own[i:i + 4] = True
        total += torch.where(own, torch.expm1(part), torch.exp(part))
    assert torch.allclose(torch.log1p(total), c_full)


def test_strip_backward_is_the_autograd_gradient():
    """Unit inverse norms (normalize=False): the strip's gradients are the whole gradients."""
    x, y, s = rand_inputs(10, 6, seed=2)
    a, b, sc = x.clone().requires_grad_(), y.clone().requires_grad_(), s.clone().requires_grad_()
    loss = reference_contrastive_loss(a, b, sc, normalize=False, reduction="sum")
    da, db, ds = torch.autograd.grad(loss, (a, b, sc))
    ones = torch.ones(10, dtype=torch.float64)
    args = strip_args(x, y, s, 0, ones, ones, (x * y).sum(1))
    r, c = reference_strip_forward(*args)
    half = torch.full((10,), 0.5, dtype=torch.float64)
    ga, gb, gs = reference_strip_backward(*args, r, c, half, half)
    assert rel_err(ga, da) < 1e-12 and rel_err(gb, db) < 1e-12 and rel_err(gs, ds) < 1e-12


def test_swap_mask_swaps_pairs():
    x, y, s = rand_inputs(6, 3, seed=3)
    mask = torch.tensor([True, False, True, False, False, True])
    xs = torch.where(mask[:, None], y, x)
    ys = torch.where(mask[:, None], x, y)
    assert torch.equal(reference_contrastive_loss(x, y, s, swap_mask=mask),
                       reference_contrastive_loss(xs, ys, s))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 70), d=st.integers(1, 40), scale=st.floats(0.0, 100.0),
       seed=st.integers(0, 2**16), swap=st.booleans())
def test_fused_cpu_matches_oracle_on_random_shapes(n, d, scale, seed, swap):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    mask = (torch.rand(n, generator=g) < 0.5) if swap else None
    s = torch.tensor(scale, dtype=torch.float64)
    want = reference_contrastive_loss(x, y, s, swap_mask=mask, reduction="none")
    got = gapops.contrastive_loss(x, y, s, swap_mask=mask, reduction="none", backend="cpu")
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- the ID oracles

def _grads(fn, *tensors):
    """(value, gradient w.r.t. each tensor) of fn(*tensors), on detached float64 copies."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    return (out.detach(), *torch.autograd.grad(out, leaves))


def _ids(kind, n, seed):
    """pair IDs with many, few or no duplicates, or one ID for all (a row of positives only)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "unique":
        return torch.randperm(n, generator=g) * 3 - 7  # distinct, arbitrary integers
    if kind == "one":
        return torch.full((n,), 5, dtype=torch.long)
    groups = {"many": max(1, n // 4), "few": max(1, n - 2)}[kind]
    return torch.randint(0, groups, (n,), generator=g)


def _design_rows(x, y, s, ids, eps):
    """row_i and col_i by docs/design.md 7.2's closed form, with logsumexp (no cross_entropy)."""
    a, b = F.normalize(x, dim=1), F.normalize(y, dim=1)
    L = s * a @ b.T
    same = (ids[:, None] == ids[None, :]).double()
    n = L.shape[0]

    def one_side(M):
        pos = (same * M).sum(1) / same.sum(1)
        return M.logsumexp(1) - (1 - eps) * pos - eps / n * M.sum(1)
    return one_side(L), one_side(L.T)


@pytest.mark.parametrize("n", [1, 2, 13])
def test_ids_oracle_with_unique_ids_is_clip_loss(n):
    x, y, s = rand_inputs(n, 7, seed=40 + n)
    clip = _grads(lambda a, b, sc: _open_clip_loss("ClipLoss")()(F.normalize(a, dim=1), F.normalize(b, dim=1), sc),
                  x, y, s)
    plain = _grads(reference_contrastive_loss, x, y, s)
    for ids in (None, _ids("unique", n, 1)):
        got = _grads(lambda a, b, sc: reference_contrastive_loss_ids(a, b, sc, pair_ids=ids),
                     x, y, s)
        for g, c, p in zip(got, clip, plain):
            assert rel_err(g, c) < 1e-13 and rel_err(g, p) < 1e-13
    rows = reference_contrastive_loss_ids(x, y, s, _ids("unique", n, 2), reduction="none")
    assert torch.allclose(rows, reference_contrastive_loss(x, y, s, reduction="none"),
                          rtol=1e-13, atol=0)


@pytest.mark.parametrize("kind", ["unique", "many", "few", "one"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_ids_oracle_is_the_design_closed_form(kind, eps):
    x, y, s = rand_inputs(17, 5, seed=3)
    ids = _ids(kind, 17, seed=4)
    row, col = _design_rows(x, y, s, ids, eps)
    got = reference_contrastive_loss_ids(x, y, s, ids, label_smoothing=eps, reduction="none")
    assert torch.allclose(got, 0.5 * (row + col), rtol=1e-12, atol=1e-12)
    total = reference_contrastive_loss_ids(x, y, s, ids, label_smoothing=eps, reduction="sum")
    assert torch.allclose(total, got.sum(), rtol=1e-14)
    if kind == "unique":  # cross_entropy's class-index form, its own label_smoothing path
        L = s * F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
        idx = torch.arange(17)
        want = 0.5 * (F.cross_entropy(L, idx, label_smoothing=eps)
                      + F.cross_entropy(L.T, idx, label_smoothing=eps))
        assert torch.allclose(reference_contrastive_loss_ids(x, y, s, ids, label_smoothing=eps),
                              want, rtol=1e-13)


def test_a_row_of_positives_only_is_untouched_by_smoothing():
    # one ID for all: the target is uniform already, (1 - eps) uniform + eps / N is uniform
    x, y, s = rand_inputs(9, 4, seed=5)
    ids = _ids("one", 9, 0)
    want = reference_contrastive_loss_ids(x, y, s, ids, reduction="none")
    L = s * F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    assert torch.allclose(want, 0.5 * (L.logsumexp(1) - L.mean(1) + L.logsumexp(0) - L.mean(0)),
                          rtol=1e-13)
    for eps in (0.3, 1.0):
        got = reference_contrastive_loss_ids(x, y, s, ids, label_smoothing=eps, reduction="none")
        assert torch.allclose(got, want, rtol=1e-13)


def test_ids_stay_with_their_pair_under_a_swap_and_a_permutation():
    x, y, s = rand_inputs(12, 6, seed=6)
    ids = _ids("many", 12, 7)
    mask = torch.arange(12) % 3 == 0
    xs, ys = torch.where(mask[:, None], y, x), torch.where(mask[:, None], x, y)
    for fn, extra in ((reference_contrastive_loss_ids, {"label_smoothing": 0.2}),
                      (lambda *a, **k: reference_sigmoid_loss_ids(*a[:3], -3.0, *a[3:], **k), {})):
        got = fn(x, y, s, ids, swap_mask=mask, reduction="none", **extra)
        assert torch.equal(got, fn(xs, ys, s, ids, reduction="none", **extra))
        # reordering the pairs, IDs and all, reorders the per-pair losses
        perm = torch.randperm(12, generator=torch.Generator().manual_seed(8))
        moved = fn(x[perm], y[perm], s, ids[perm], swap_mask=mask[perm], reduction="none",
                   **extra)
        assert torch.allclose(moved, got[perm], rtol=1e-13)


def test_ids_oracle_gradcheck():
    x, y, s = rand_inputs(6, 3, seed=9)
    ids = torch.tensor([0, 1, 0, 2, 1, 0])
    leaves = [t.clone().requires_grad_() for t in (x, y, s)]
    assert torch.autograd.gradcheck(lambda a, b, sc: reference_contrastive_loss_ids(
        a, b, sc, ids, label_smoothing=0.1, reduction="none"), leaves)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, sc, bb: reference_sigmoid_loss_ids(
        a, b, sc, bb, ids, reduction="none"), leaves + [bias])


@pytest.mark.parametrize("n", [1, 2, 11])
def test_sigmoid_ids_oracle_with_unique_ids_is_siglip_loss(n):
    x, y, s = rand_inputs(n, 5, seed=50 + n)
    bias = torch.tensor(-4.0, dtype=torch.float64)
    want = _grads(lambda a, b, sc, bb: _open_clip_loss("SigLipLoss")()(F.normalize(a, dim=1), F.normalize(b, dim=1),
                                                    sc, bb), x, y, s, bias)
    for ids in (None, _ids("unique", n, 3)):
        got = _grads(lambda a, b, sc, bb: reference_sigmoid_loss_ids(a, b, sc, bb, ids),
                     x, y, s, bias)
        for g, w in zip(got, want):
            assert rel_err(g, w) < 1e-13


@pytest.mark.parametrize("kind", ["many", "few", "one"])
def test_sigmoid_ids_oracle_is_siglip_with_the_id_label_matrix(kind):
    x, y, s = rand_inputs(14, 5, seed=10)
    bias = torch.tensor(-6.0, dtype=torch.float64)
    ids = _ids(kind, 14, 11)
    siglip = _open_clip_loss("SigLipLoss")()
    # open_clip's own loss with its ground truth replaced by the +-1 matrix of the IDs
    siglip.get_ground_truth = lambda device, dtype, n, negative_only=False: torch.where(
        ids[:, None] == ids[None, :], 1.0, -1.0).to(device, dtype)
    want = _grads(lambda a, b, sc, bb: siglip(F.normalize(a, dim=1), F.normalize(b, dim=1), sc,
                                              bb), x, y, s, bias)
    got = _grads(lambda a, b, sc, bb: reference_sigmoid_loss_ids(a, b, sc, bb, ids),
                 x, y, s, bias)
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-13
    rows = reference_sigmoid_loss_ids(x, y, s, bias, ids, reduction="none")
    assert rows.shape == (14,)
    assert torch.allclose(rows.sum(), reference_sigmoid_loss_ids(x, y, s, bias, ids,
                                                                 reduction="sum"), rtol=1e-14)
    assert torch.allclose(rows.mean(), got[0], rtol=1e-14)
    # the IDs matter: the same inputs without them give another loss
    assert not torch.allclose(got[0], reference_sigmoid_loss_ids(x, y, s, bias))
