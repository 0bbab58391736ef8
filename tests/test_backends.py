"""The backend-agnostic suite: every available backend against the float64 naive oracle."""
import pytest
import torch

import gapops
from helpers import (MAX_ROWS, SWAP_KINDS, assert_loss_and_grads_close, device_for, loss_and_grads,
                     make_swap_mask, oracle, rand_inputs, rel_err)

SHAPES = [(1, 1), (1, 9), (6, 1), (17, 33), (65, 70), (130, 257), (300, 48), (2000, 96)]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def gapops_loss(x, y, s, backend, **kw):
    return gapops.contrastive_loss(x, y, s, backend=backend, **kw)


def check_against_oracle(backend, x, y, s, dtype, upstream=None, **kw):
    # The oracle sees exactly the rounded inputs the backend sees: what is measured is the
    # kernel's error, not the input quantization.
    xq, yq = x.to(dtype).double(), y.to(dtype).double()
    want = oracle(xq, yq, s, upstream, **kw)
    got = loss_and_grads(gapops_loss, x, y, s, dtype, upstream, backend=backend, **kw)
    assert_loss_and_grads_close(got, want, dtype, s, backend)


# Every dtype on the small shapes, fp32 alone on the large one.
CASES = [(n, d, dt) for (n, d) in SHAPES for dt in DTYPES if n <= 300 or dt == torch.float32]


@pytest.mark.parametrize("n,d,dtype", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_values_and_gradients(backend, n, d, dtype):
    if n > MAX_ROWS[backend]:
        pytest.skip(f"{backend} is exercised up to {MAX_ROWS[backend]} rows here")
    x, y, s = rand_inputs(n, d, seed=n * 1000 + d, device=device_for(backend))
    check_against_oracle(backend, x, y, s, dtype)


@pytest.mark.parametrize("kind", SWAP_KINDS)
def test_swap_mask(backend, kind):
    n, d = 37, 19
    x, y, s = rand_inputs(n, d, seed=3, device=device_for(backend))
    mask = make_swap_mask(kind, n, x.device)
    check_against_oracle(backend, x, y, s, torch.float32, swap_mask=mask)


def test_swap_mask_changes_the_loss(backend):
    x, y, s = rand_inputs(23, 8, seed=11, device=device_for(backend))
    mask = torch.zeros(23, dtype=torch.bool, device=x.device)
    mask[::3] = True
    base = gapops.contrastive_loss(x.float(), y.float(), s, backend=backend, reduction="none")
    swapped = gapops.contrastive_loss(x.float(), y.float(), s, swap_mask=mask, backend=backend,
                                      reduction="none")
    assert not torch.allclose(base, swapped)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reductions_with_any_upstream_gradient(backend, reduction):
    n, d = 41, 23
    x, y, s = rand_inputs(n, d, seed=17, device=device_for(backend))
    up = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    up = up.to(x.device) if reduction == "none" else None
    check_against_oracle(backend, x, y, s, torch.float32, upstream=up, reduction=reduction)


def test_without_normalization(backend):
    x, y, s = rand_inputs(29, 12, seed=23, device=device_for(backend))
    check_against_oracle(backend, 0.3 * x, 0.3 * y, s * 0 + 1.5, torch.float32, normalize=False)


def test_huge_logit_scale_does_not_overflow(backend):
    x, y, s = rand_inputs(50, 16, seed=29, device=device_for(backend))
    check_against_oracle(backend, x, y, s * 0 + 100.0, torch.float32)
    check_against_oracle(backend, x, y, s * 0 + 100.0, torch.bfloat16)


def test_zero_vector_rows(backend):
    x, y, s = rand_inputs(20, 10, seed=31, device=device_for(backend))
    x[3] = 0
    y[7] = 0
    check_against_oracle(backend, x, y, s, torch.float32)


def test_non_contiguous_inputs(backend):
    dev = device_for(backend)
    x, y, s = rand_inputs(40, 66, seed=37, device=dev)
    xt = torch.empty(66, 40, device=dev).T.copy_(x).requires_grad_()         # column-major
    ys = torch.empty(40, 132, device=dev)[:, ::2].copy_(y).requires_grad_()  # strided columns
    ss = s.float().requires_grad_()
    assert not xt.is_contiguous() and not ys.is_contiguous()
    loss = gapops.contrastive_loss(xt, ys, ss, backend=backend)
    got = (loss, *torch.autograd.grad(loss, (xt, ys, ss)))
    want = oracle(x.float().double(), y.float().double(), s.float().double())
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-4


def test_nan_input_gives_nan(backend):
    x, y, s = rand_inputs(16, 8, seed=41, device=device_for(backend))
    x[5, 2] = float("nan")
    rows = gapops.contrastive_loss(x.float(), y.float(), s, backend=backend, reduction="none")
    assert torch.isnan(rows).any()
    assert torch.isnan(gapops.contrastive_loss(x.float(), y.float(), s, backend=backend))


def test_logit_scale_as_python_float(backend):
    x, y, s = rand_inputs(12, 5, seed=43, device=device_for(backend))
    got = gapops.contrastive_loss(x.float(), y.float(), float(s), backend=backend)
    want = oracle(x, y, s)[0]
    assert rel_err(got, want) < 1e-5


def test_deterministic_mode_is_bitwise_repeatable(backend):
    x, y, s = rand_inputs(70, 33, seed=47, device=device_for(backend))
    runs = [loss_and_grads(gapops_loss, x, y, s, torch.float32, backend=backend, deterministic=True)
            for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_gradcheck_float64(backend):
    x, y, s = rand_inputs(9, 5, seed=53, device=device_for(backend))
    inputs = (x.clone().requires_grad_(), y.clone().requires_grad_(), s.clone().requires_grad_())
    fn = lambda a, b, c: gapops.contrastive_loss(a, b, c, backend=backend, reduction="none")  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
