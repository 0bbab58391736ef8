"""The oracle itself: the naive strip agrees with the two-cross-entropy form and with itself."""
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import gapops
from gapops.reference import (reference_contrastive_loss, reference_strip_backward,
                              reference_strip_forward)
from helpers import rand_inputs, rel_err


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
