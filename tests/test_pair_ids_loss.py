"""pair_ids and label_smoothing through the public API: gapops.contrastive_loss, gapops.sigmoid_loss
and both modules, every backend against the float64 oracles (value and every gradient), unique IDs
as no IDs, the argument checks, torch.compile, opcheck and deterministic=True. The corrections
themselves: tests/test_pair_ids.py; across gloo ranks: tests/test_pair_ids_distributed.py."""
import numpy as np
import pytest
import torch

import gapops
from gapops.reference import reference_contrastive_loss_ids, reference_sigmoid_loss_ids
from helpers import (MAX_ROWS, assert_loss_and_grads_close, device_for, loss_and_grads,
                     make_swap_mask, rand_inputs, rel_err)

KINDS = ["few", "many", "one"]


def make_ids(kind, n, seed, device="cpu"):
    """pair IDs with many, few or no duplicates, or one ID for every pair."""
    g = torch.Generator().manual_seed(seed)
    if kind == "unique":
        ids = torch.randperm(n, generator=g) * 3 - 7
    elif kind == "one":
        ids = torch.full((n,), 5, dtype=torch.long)
    else:
        groups = {"many": max(1, n // 4), "few": max(1, n - 2)}[kind]
        ids = torch.randint(0, groups, (n,), generator=g) * 1000 - 50
    return ids.to(device)


def softmax_case(backend, n, d, kind, eps, reduction, dtype=torch.float32, seed=0):
    x, y, s = rand_inputs(n, d, seed=seed + n, device=device_for(backend))
    mask = make_swap_mask("random", n, x.device)
    ids = make_ids(kind, n, seed, x.device)
    up = torch.rand(n, dtype=torch.float64, device=x.device) if reduction == "none" else None
    xq, yq = x.to(dtype).double(), y.to(dtype).double()
    want = loss_and_grads(reference_contrastive_loss_ids, xq, yq, s, torch.float64, up,
                          pair_ids=ids, label_smoothing=eps, swap_mask=mask, reduction=reduction)
    got = loss_and_grads(gapops.contrastive_loss, x, y, s, dtype, up, pair_ids=ids,
                         label_smoothing=eps, swap_mask=mask, reduction=reduction,
                         backend=backend)
    return got, want, s


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("kind", KINDS)
def test_softmax_matches_the_oracle(backend, kind, eps, reduction):
    got, want, s = softmax_case(backend, 37, 24, kind, eps, reduction)
    assert_loss_and_grads_close(got, want, torch.float32, s, f"{backend} {kind} eps={eps}")


@pytest.mark.parametrize("n,d", [(1, 3), (2, 1), (130, 70)])
def test_softmax_awkward_shapes_and_float64(backend, n, d):
    if n > MAX_ROWS[backend]:
        pytest.skip(f"{backend} is exercised up to {MAX_ROWS[backend]} rows here")
    for dtype in (torch.float64, torch.bfloat16):
        got, want, s = softmax_case(backend, n, d, "many", 0.1, "mean", dtype, seed=3)
        assert_loss_and_grads_close(got, want, dtype, s, f"{backend} n={n} d={d}")


def test_label_smoothing_alone(backend):
    x, y, s = rand_inputs(29, 12, seed=4, device=device_for(backend))
    want = loss_and_grads(reference_contrastive_loss_ids, x, y, s, torch.float64,
                          label_smoothing=0.3)
    got = loss_and_grads(gapops.contrastive_loss, x, y, s, torch.float32, label_smoothing=0.3,
                         backend=backend)
    assert_loss_and_grads_close(got, want, torch.float32, s, backend)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("kind", KINDS)
def test_sigmoid_matches_the_oracle(sigmoid_backend, kind, reduction):
    n, d = 37, 24
    x, y, s = rand_inputs(n, d, seed=n, device=device_for(sigmoid_backend))
    b = torch.tensor(-0.4 * float(s), dtype=torch.float64)
    mask = make_swap_mask("random", n, x.device)
    ids = make_ids(kind, n, 1, x.device)
    up = torch.rand(n, dtype=torch.float64, device=x.device) if reduction == "none" else None
    xq, yq = x.float().double(), y.float().double()
    want = loss_and_grads(reference_sigmoid_loss_ids, xq, yq, s, torch.float64, up, bias=b,
                          pair_ids=ids, swap_mask=mask, reduction=reduction)
    got = loss_and_grads(gapops.sigmoid_loss, x, y, s, torch.float32, up, bias=b, pair_ids=ids,
                         swap_mask=mask, reduction=reduction, backend=sigmoid_backend)
    assert_loss_and_grads_close(got, want, torch.float32, s, f"{sigmoid_backend} {kind}")


def _same_within_fp32(got, want):
    for g, w in zip(got, want):
        assert rel_err(g, w) <= 2e-6, rel_err(g, w)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_unique_ids_are_no_ids(backend, reduction):
    n, d = 41, 16
    x, y, s = rand_inputs(n, d, seed=8, device=device_for(backend))
    mask = make_swap_mask("random", n, x.device)
    up = torch.rand(n, dtype=torch.float64, device=x.device) if reduction == "none" else None
    kw = dict(swap_mask=mask, reduction=reduction, backend=backend)
    plain = loss_and_grads(gapops.contrastive_loss, x, y, s, torch.float32, up, **kw)
    ids = loss_and_grads(gapops.contrastive_loss, x, y, s, torch.float32, up,
                         pair_ids=make_ids("unique", n, 2, x.device), **kw)
    _same_within_fp32(ids, plain)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_sigmoid_unique_ids_are_no_ids(sigmoid_backend, reduction):
    n, d = 41, 16
    x, y, s = rand_inputs(n, d, seed=9, device=device_for(sigmoid_backend))
    up = torch.rand(n, dtype=torch.float64, device=x.device) if reduction == "none" else None
    kw = dict(bias=-5.0, reduction=reduction, backend=sigmoid_backend)
    plain = loss_and_grads(gapops.sigmoid_loss, x, y, s, torch.float32, up, **kw)
    ids = loss_and_grads(gapops.sigmoid_loss, x, y, s, torch.float32, up,
                         pair_ids=make_ids("unique", n, 3, x.device), **kw)
    _same_within_fp32(ids, plain)


def test_modules_take_pair_ids_and_label_smoothing():
    x, y, s = rand_inputs(19, 8, seed=12)
    x, y = x.float(), y.float()
    ids = make_ids("many", 19, 4)
    crit = gapops.ContrastiveLoss(label_smoothing=0.2)
    got = crit(x, y, s.float(), pair_ids=ids, output_dict=True)["contrastive_loss"]
    want = reference_contrastive_loss_ids(x.double(), y.double(), s, ids, label_smoothing=0.2)
    assert rel_err(got, want) < 1e-5
    got = gapops.SigmoidLoss()(x, y, s.float(), -3.0, pair_ids=ids)
    want = reference_sigmoid_loss_ids(x.double(), y.double(), s, -3.0, ids)
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("bad,error,message", [
    (torch.zeros(5, dtype=torch.long), ValueError, "shape"),
    (torch.zeros(6), TypeError, "integer"),
    (torch.zeros(6, dtype=torch.bool), TypeError, "integer"),
    ([0, 1, 2, 3, 4, 5], TypeError, "tensor"),
    (torch.zeros(6, 1, dtype=torch.long), ValueError, "shape"),
])
def test_bad_pair_ids_are_named(bad, error, message):
    x, y, s = rand_inputs(6, 3, seed=1)
    for fn in (gapops.contrastive_loss, gapops.sigmoid_loss):
        with pytest.raises(error, match=f"pair_ids.*{message}"):
            fn(x, y, s, pair_ids=bad)


@pytest.mark.parametrize("bad,error", [(-0.1, ValueError), (1.5, ValueError),
                                       (float("nan"), ValueError), ("0.1", TypeError),
                                       (True, TypeError), (torch.tensor(0.1), TypeError)])
def test_bad_label_smoothing_is_named(bad, error):
    x, y, s = rand_inputs(6, 3, seed=1)
    with pytest.raises(error, match="label_smoothing"):
        gapops.contrastive_loss(x, y, s, label_smoothing=bad)
    with pytest.raises(error, match="label_smoothing"):
        gapops.ContrastiveLoss(label_smoothing=bad)


@pytest.mark.parametrize("bad", ["yes", 1, 0, np.bool_(True), torch.tensor(True)])
def test_deterministic_must_be_a_bool_or_none(bad):
    x, y, s = rand_inputs(6, 3, seed=1)
    for fn in (gapops.contrastive_loss, gapops.sigmoid_loss):
        with pytest.raises(TypeError, match="deterministic"):
            fn(x, y, s, deterministic=bad)
    with pytest.raises(TypeError, match="deterministic"):
        gapops.ContrastiveLoss(deterministic=bad)


@pytest.mark.parametrize("scale", [np.array([10.0]), np.array(10.0), np.float32(10.0),
                                   np.array([[10.0]])])
def test_one_element_arrays_work_as_logit_scale(scale):
    x, y, _ = rand_inputs(9, 4, seed=2)
    want = gapops.contrastive_loss(x, y, 10.0)
    assert torch.equal(gapops.contrastive_loss(x, y, scale), want)
    want = gapops.sigmoid_loss(x, y, 10.0, -2.0)
    assert torch.equal(gapops.sigmoid_loss(x, y, scale, np.array([-2.0])), want)


def test_deterministic_runs_repeat_bitwise(backend):
    x, y, s = rand_inputs(45, 20, seed=13, device=device_for(backend))
    ids = make_ids("many", 45, 5, x.device)
    runs = [loss_and_grads(gapops.contrastive_loss, x, y, s, torch.float32, pair_ids=ids,
                           label_smoothing=0.1, backend=backend, deterministic=True)
            for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_torch_compile_fullgraph_with_ids():
    x, y, s = rand_inputs(24, 10, seed=6)
    x, y, s = x.float().requires_grad_(), y.float().requires_grad_(), s.float().requires_grad_()
    ids = make_ids("many", 24, 6)

    def step(a, b, c):
        return (gapops.contrastive_loss(a * 2.0, b, c.exp(), pair_ids=ids, label_smoothing=0.1,
                                        backend="cpu")
                + gapops.sigmoid_loss(a, b, c, -1.0, pair_ids=ids, backend="cpu"))

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got, want = compiled(x, y, s), step(x, y, s)
    assert rel_err(got, want) < 1e-6
    for a, b in zip(torch.autograd.grad(got, (x, y, s)), torch.autograd.grad(want, (x, y, s))):
        assert rel_err(a, b) < 1e-5


def test_opcheck_with_ids():
    x, y, s = rand_inputs(11, 5, seed=7)
    x, y = x.float().requires_grad_(), y.float().requires_grad_()
    scale = s.float().requires_grad_()
    bias = torch.tensor(-2.0, requires_grad=True)
    mask = torch.rand(11) < 0.5
    ids = make_ids("many", 11, 7)
    rows = torch.ops.gapops.contrastive_loss_rows
    torch.library.opcheck(rows.default, (x, y, mask, scale, True, "cpu", False, ids, 0.1))
    out = rows(x, y, mask, scale, True, "cpu", False, ids, 0.1)
    g = torch.rand(11)
    torch.library.opcheck(torch.ops.gapops.contrastive_loss_rows_backward.default,
                          (g, x.detach(), y.detach(), mask, scale.detach(), *out[1:], True, "cpu",
                           False, ids, 0.1))
    torch.library.opcheck(torch.ops.gapops.sigmoid_loss_total.default,
                          (x, y, mask, scale, bias, True, "cpu", False, True, ids))
    torch.library.opcheck(torch.ops.gapops.sigmoid_loss_rows.default,
                          (x, y, mask, scale, bias, True, "cpu", False, ids))
