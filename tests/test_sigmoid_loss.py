"""gapops.sigmoid_loss (SigLIP): every backend with a sigmoid strip against the float64 naive form
(value and the gradients of both feature tensors, logit_scale and logit_bias), the forms of the
strip call (3 products with a scalar upstream, 1 under no_grad, a recompute for 'none'), the
custom ops (opcheck, torch.compile) and the argument checks."""
import pytest
import torch

import gapops
from gapops import _dispatch
from gapops.reference import reference_sigmoid_loss
from helpers import (LOSS_GRAD_NAMES as NAMES, MAX_ROWS, SWAP_KINDS, assert_loss_and_grads_close,
                     device_for, loss_and_grads, make_swap_mask, rand_inputs, rel_err,
                     sigmoid_oracle)

SHAPES = [(1, 1), (1, 9), (6, 1), (17, 33), (65, 70), (130, 257), (300, 48), (1000, 96)]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def sigmoid(x, y, s, b, backend, **kw):
    return gapops.sigmoid_loss(x, y, s, b, backend=backend, **kw)


def check_against_oracle(backend, x, y, s, b, dtype, upstream=None, **kw):
    """The backend on x, y rounded to dtype against the float64 naive form on the same values."""
    xq, yq = x.to(dtype).double(), y.to(dtype).double()
    want = sigmoid_oracle(xq, yq, s, b, upstream, **kw)
    got = loss_and_grads(sigmoid, x, y, s, dtype, upstream, bias=b, backend=backend, **kw)
    assert_loss_and_grads_close(got, want, dtype, s, backend)


def bias_for(s, seed):
    g = torch.Generator().manual_seed(seed)
    return -float(s) * (0.2 + 0.5 * torch.rand((), generator=g, dtype=torch.float64))


CASES = [(n, d, dt) for (n, d) in SHAPES for dt in DTYPES if n <= 300 or dt == torch.float32]


@pytest.mark.parametrize("n,d,dtype", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_values_and_gradients(sigmoid_backend, n, d, dtype):
    be = sigmoid_backend
    if n > MAX_ROWS[be]:
        pytest.skip(f"{be} is exercised up to {MAX_ROWS[be]} rows here")
    x, y, s = rand_inputs(n, d, seed=n * 1000 + d, device=device_for(be))
    check_against_oracle(be, x, y, s, bias_for(s, n + d), dtype)


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (100.0, -12.0), (1.0, 0.0), (30.0, 5.0)],
                         ids=["open_clip_init", "trained", "unit", "positive_bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_scale_and_bias_regimes(sigmoid_backend, scale, bias, dtype):
    x, y, _ = rand_inputs(50, 16, seed=29, device=device_for(sigmoid_backend))
    s = torch.tensor(scale, dtype=torch.float64, device=x.device)
    check_against_oracle(sigmoid_backend, x, y, s, torch.tensor(bias, dtype=torch.float64), dtype)


@pytest.mark.parametrize("kind", SWAP_KINDS)
def test_swap_mask(sigmoid_backend, kind):
    n, d = 37, 19
    x, y, s = rand_inputs(n, d, seed=3, device=device_for(sigmoid_backend))
    mask = make_swap_mask(kind, n, x.device)
    for reduction in ("mean", "none"):
        up = torch.rand(n, dtype=torch.float64, device=x.device) if reduction == "none" else None
        check_against_oracle(sigmoid_backend, x, y, s, bias_for(s, 1), torch.float32, up,
                             swap_mask=mask, reduction=reduction)


def test_swap_mask_changes_the_loss(sigmoid_backend):
    x, y, s = rand_inputs(23, 8, seed=11, device=device_for(sigmoid_backend))
    mask = torch.zeros(23, dtype=torch.bool, device=x.device)
    mask[::3] = True
    kw = dict(backend=sigmoid_backend, reduction="none")
    assert not torch.allclose(gapops.sigmoid_loss(x, y, s, -5.0, **kw),
                              gapops.sigmoid_loss(x, y, s, -5.0, swap_mask=mask, **kw))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reductions_with_any_upstream_gradient(sigmoid_backend, reduction):
    n, d = 41, 23
    x, y, s = rand_inputs(n, d, seed=17, device=device_for(sigmoid_backend))
    up = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    up = up.to(x.device) if reduction == "none" else torch.tensor(-2.5, dtype=torch.float64)
    check_against_oracle(sigmoid_backend, x, y, s, bias_for(s, 2), torch.float32, up,
                         reduction=reduction)


def test_reductions_agree_and_mean_is_open_clips(sigmoid_backend):
    """'mean' = sum over rows and columns / N (SigLipLoss), 'sum', 'none' = per image row."""
    x, y, s = rand_inputs(15, 9, seed=3, device=device_for(sigmoid_backend))
    kw = dict(backend=sigmoid_backend)
    rows = gapops.sigmoid_loss(x, y, s, -4.0, reduction="none", **kw)
    assert rows.shape == (15,)
    assert torch.allclose(rows.sum() / 15, gapops.sigmoid_loss(x, y, s, -4.0, **kw))
    assert torch.allclose(rows.sum(), gapops.sigmoid_loss(x, y, s, -4.0, reduction="sum", **kw))


def test_without_normalization(sigmoid_backend):
    x, y, s = rand_inputs(29, 12, seed=23, device=device_for(sigmoid_backend))
    check_against_oracle(sigmoid_backend, 0.3 * x, 0.3 * y, s * 0 + 1.5, -1.0, torch.float32,
                         normalize=False)


def test_zero_vector_rows(sigmoid_backend):
    x, y, s = rand_inputs(20, 10, seed=31, device=device_for(sigmoid_backend))
    x[3] = 0
    y[7] = 0
    check_against_oracle(sigmoid_backend, x, y, s, -3.0, torch.float32)


def test_non_contiguous_inputs(sigmoid_backend):
    dev = device_for(sigmoid_backend)
    x, y, s = rand_inputs(40, 66, seed=37, device=dev)
    xt = torch.empty(66, 40, device=dev).T.copy_(x).requires_grad_()         # column-major
    ys = torch.empty(40, 132, device=dev)[:, ::2].copy_(y).requires_grad_()  # strided columns
    ss, bs = s.float().requires_grad_(), torch.tensor(-7.0, requires_grad=True)
    assert not xt.is_contiguous() and not ys.is_contiguous()
    loss = gapops.sigmoid_loss(xt, ys, ss, bs, backend=sigmoid_backend)
    got = (loss, *torch.autograd.grad(loss, (xt, ys, ss, bs)))
    want = sigmoid_oracle(x.float().double(), y.float().double(), s.float().double(),
                          torch.tensor(-7.0, dtype=torch.float64))
    for name, g, w in zip(NAMES, got, want):
        assert rel_err(g, w) < 1e-4, name


def test_nan_input_gives_nan(sigmoid_backend):
    x, y, s = rand_inputs(16, 8, seed=41, device=device_for(sigmoid_backend))
    x[5, 2] = float("nan")
    kw = dict(backend=sigmoid_backend)
    rows = gapops.sigmoid_loss(x.float(), y.float(), s, -5.0, reduction="none", **kw)
    assert torch.isnan(rows[5]) and not torch.isnan(rows[:5]).any()  # an image is one row
    rows = gapops.sigmoid_loss(y.float(), x.float(), s, -5.0, reduction="none", **kw)
    assert torch.isnan(rows).all()  # a text is a column of every row
    assert torch.isnan(gapops.sigmoid_loss(x.float(), y.float(), s, -5.0, **kw))
    assert torch.isnan(gapops.sigmoid_loss(x.float(), y.float(), float("nan"), -5.0, **kw))
    assert torch.isnan(gapops.sigmoid_loss(x.float(), y.float(), s, float("nan"), **kw))


def test_bias_none_is_zero_and_scalar_forms(sigmoid_backend):
    x, y, s = rand_inputs(12, 5, seed=43, device=device_for(sigmoid_backend))
    kw = dict(backend=sigmoid_backend)
    zero = gapops.sigmoid_loss(x, y, s, 0.0, **kw)
    assert torch.equal(gapops.sigmoid_loss(x, y, s, None, **kw), zero)
    assert torch.equal(gapops.sigmoid_loss(x, y, s, **kw), zero)
    want = sigmoid_oracle(x, y, s, torch.tensor(-2.0, dtype=torch.float64))[0]
    for bias in (-2.0, -2, torch.tensor([-2.0], dtype=torch.float64)):
        assert rel_err(gapops.sigmoid_loss(x, y, float(s), bias, **kw), want) < 1e-12


def test_float32_result_for_half_inputs(sigmoid_backend):
    x, y, s = rand_inputs(10, 4, seed=44, device=device_for(sigmoid_backend))
    for dtype, out in ((torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                       (torch.float32, torch.float32), (torch.float64, torch.float64)):
        assert gapops.sigmoid_loss(x.to(dtype), y.to(dtype), 10.0, -10.0,
                                   backend=sigmoid_backend).dtype == out


def test_deterministic_mode_is_bitwise_repeatable(sigmoid_backend):
    x, y, s = rand_inputs(70, 33, seed=47, device=device_for(sigmoid_backend))
    b = torch.tensor(-6.0, dtype=torch.float64)
    runs = [loss_and_grads(sigmoid, x, y, s, torch.float32, bias=b, backend=sigmoid_backend,
                           deterministic=True) for _ in range(2)]
    for a, c in zip(*runs):
        assert torch.equal(a, c)


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_gradcheck_float64(sigmoid_backend, reduction):
    x, y, s = rand_inputs(9, 5, seed=53, device=device_for(sigmoid_backend))
    b = torch.tensor(-4.0, dtype=torch.float64, device=x.device)
    mask = torch.arange(9, device=x.device) % 3 == 0
    inputs = tuple(t.clone().requires_grad_() for t in (x, y, s, b))
    fn = lambda *a: gapops.sigmoid_loss(*a, swap_mask=mask, reduction=reduction,  # noqa: E731
                                        backend=sigmoid_backend)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# how the strip is called (docs/design.md section 2.6)


@pytest.fixture
def strip_calls(monkeypatch):
    """Records (g_row given, want_loss, want_grads) of every sigmoid strip call."""
    calls = []
    real = _dispatch.sigmoid_kernel

    def recording(name):
        strip = real(name)

        def wrapped(*args):
            g_row, want_loss, want_grads = args[11:14]
            calls.append((g_row is not None, want_loss, want_grads))
            return strip(*args)
        return wrapped
    monkeypatch.setattr(_dispatch, "sigmoid_kernel", recording)
    return calls


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scalar_upstream_computes_gradients_in_the_forward(sigmoid_backend, strip_calls,
                                                           reduction):
    x, y, s = rand_inputs(12, 6, seed=3, device=device_for(sigmoid_backend))
    x.requires_grad_()
    loss = gapops.sigmoid_loss(x, y, s, -3.0, reduction=reduction, backend=sigmoid_backend)
    loss.backward()
    assert strip_calls == [(False, True, True)], "one strip call: loss and gradients (3 products)"


def test_no_grad_is_one_product(sigmoid_backend, strip_calls):
    x, y, s = rand_inputs(12, 6, seed=4, device=device_for(sigmoid_backend))
    x.requires_grad_()
    with torch.no_grad():
        gapops.sigmoid_loss(x, y, s, -3.0, backend=sigmoid_backend)
    gapops.sigmoid_loss(x.detach(), y, s, -3.0, backend=sigmoid_backend)  # nothing needs a grad
    assert strip_calls == [(False, True, False)] * 2, "the tile product only, nothing kept"


def test_reduction_none_recomputes_in_backward(sigmoid_backend, strip_calls):
    x, y, s = rand_inputs(12, 6, seed=5, device=device_for(sigmoid_backend))
    x.requires_grad_()
    rows = gapops.sigmoid_loss(x, y, s, -3.0, reduction="none", backend=sigmoid_backend)
    assert strip_calls == [(False, True, False)]
    rows.sum().backward()
    assert strip_calls[1:] == [(True, False, True)], "backward: gradients with g_row"


def test_only_the_scalars_need_gradients(sigmoid_backend):
    x, y, s = rand_inputs(14, 6, seed=6, device=device_for(sigmoid_backend))
    b = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    gapops.sigmoid_loss(x, y, s, b, backend=sigmoid_backend).backward()
    want = sigmoid_oracle(x, y, s, b)[4]
    assert rel_err(b.grad, want) < 1e-12


# ---------------------------------------------------------------------------------------------
# custom ops, torch.compile, forward AD


def test_opcheck_custom_ops():
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(11, 5, generator=g), torch.randn(11, 5, generator=g)
    x, y = x.requires_grad_(), y.requires_grad_()
    scale = torch.tensor(9.0, requires_grad=True)
    bias = torch.tensor(-4.0, requires_grad=True)
    mask = torch.rand(11, generator=g) < 0.5
    for be in [b for b in ("reference", "cpu") if gapops.backends("sigmoid")[b] == "available"]:
        for swap in (None, mask):
            torch.library.opcheck(torch.ops.gapops.sigmoid_loss_total.default,
                                  (x, y, swap, scale, bias, True, be, False, True))
            # want_grads=False is the call when nothing needs a gradient
            plain = [t.detach() for t in (x, y)] + [swap] + [t.detach() for t in (scale, bias)]
            torch.library.opcheck(torch.ops.gapops.sigmoid_loss_total.default,
                                  (*plain, True, be, False, False))
            torch.library.opcheck(torch.ops.gapops.sigmoid_loss_rows.default,
                                  (x, y, swap, scale, bias, True, be, False))
        _, inv_x, inv_y = torch.ops.gapops.sigmoid_loss_rows(x, y, mask, scale, bias, True, be,
                                                             False)
        torch.library.opcheck(torch.ops.gapops.sigmoid_loss_rows_backward.default,
                              (torch.rand(11), x.detach(), y.detach(), mask, scale.detach(),
                               bias.detach(), inv_x, inv_y, True, be, False))


@pytest.mark.skipif(gapops.backends("sigmoid")["cpu"] != "available",
                    reason="cpu: no sigmoid strip kernel in this build")
def test_opcheck_native_sigmoid_strip():
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(4, 5, generator=g), torch.randn(9, 5, generator=g)
    mask = torch.rand(4, generator=g) < 0.5
    strip = (a, b[:4], mask, b, b, None, torch.rand(4) + 0.5, torch.rand(9) + 0.5,
             torch.tensor(9.0), torch.tensor(-4.0), 3)
    for g_row in (None, torch.rand(4)):
        for want_loss, want_grads in ((True, True), (True, False), (False, True)):
            torch.library.opcheck(torch.ops.gapops.sigmoid_strip.default,
                                  (*strip, g_row, want_loss, want_grads, False))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_compile_fullgraph(reduction):
    be = "cpu" if gapops.backends("sigmoid")["cpu"] == "available" else "reference"
    x, y, s = rand_inputs(24, 10, seed=6)
    x, y, s = x.float().requires_grad_(), y.float().requires_grad_(), s.float().requires_grad_()
    b = torch.tensor(-5.0, requires_grad=True)

    def step(a, c, t, u):
        return gapops.sigmoid_loss(a * 2.0, c, t.exp() / 10, u, backend=be,
                                   reduction=reduction).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got, want = compiled(x, y, s, b), step(x, y, s, b)
    assert rel_err(got, want) < 1e-6
    for p, q in zip(torch.autograd.grad(got, (x, y, s, b)), torch.autograd.grad(want, (x, y, s, b))):
        assert rel_err(p, q) < 1e-5
    with torch.no_grad():
        assert rel_err(compiled(x, y, s, b), want) < 1e-6


def test_forward_mode_ad_is_refused():
    x, y = torch.randn(6, 3), torch.randn(6, 3)
    fn = lambda a: gapops.sigmoid_loss(a, y, 10.0, -10.0, backend="reference")  # noqa: E731
    with pytest.raises(NotImplementedError, match="forward-mode AD"):
        torch.func.jvp(fn, (x,), (torch.ones_like(x),))
    ref = lambda a: reference_sigmoid_loss(a, y, 10.0, -10.0)  # noqa: E731
    _, tangent = torch.func.jvp(ref, (x,), (torch.ones_like(x),))
    assert torch.isfinite(tangent)


# ---------------------------------------------------------------------------------------------
# argument checks


def feats(n=8, d=4):
    return torch.randn(n, d), torch.randn(n, d)


BAD_INPUTS = [
    (lambda x, y: (x[0], y, 10.0, {}), "image_features must be 2-D"),
    (lambda x, y: (x, y[:5], 10.0, {}), "same batch size"),
    (lambda x, y: (x, y[:, :3], 10.0, {}), "same feature size"),
    (lambda x, y: (x[:0], y[:0], 10.0, {}), "empty batch"),
    (lambda x, y: (x, y.double(), 10.0, {}), "share a dtype"),
    (lambda x, y: (x.long(), y.long(), 10.0, {}), "image_features must be float16"),
    (lambda x, y: (x, y, torch.ones(2), {}), "logit_scale must hold one value"),
    (lambda x, y: (x, y, 10.0, {"logit_bias": torch.ones(3)}), "logit_bias must hold one value"),
    (lambda x, y: (x, y, 10.0, {"logit_bias": "-10"}), "logit_bias must be None or a scalar"),
    (lambda x, y: (x, y, 10.0, {"logit_bias": torch.tensor(-10)}),
     "logit_bias must be a floating-point"),
    (lambda x, y: (x, y, 10.0, {"logit_bias": torch.zeros(8, dtype=torch.bool)}),
     "pass the modality-swap mask by keyword"),
    (lambda x, y: (x, y, 10.0, {"swap_mask": torch.zeros(7, dtype=torch.bool)}),
     "swap_mask must have shape"),
    (lambda x, y: (x, y, 10.0, {"reduction": "avg"}), "reduction must be one of"),
    (lambda x, y: (x, y, 10.0, {"backend": "tpu"}), "backend='tpu' is unknown"),
    (lambda x, y: (x, y, 10.0, {"backend": "cuda"}), "backend='cuda' does not run on cpu"),
]


@pytest.mark.parametrize("make,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_inputs_name_the_argument(make, message):
    a, b, s, kw = make(*feats())
    with pytest.raises((ValueError, TypeError, RuntimeError), match=message):
        gapops.sigmoid_loss(a, b, s, **kw)


def test_backend_without_a_sigmoid_strip_says_why(monkeypatch):
    from gapops import _extension
    monkeypatch.setattr(_extension, "has_kernel", lambda op, key: False)
    assert "no CPU kernel of the sigmoid strip" in gapops.backends("sigmoid")["cpu"]
    with pytest.raises(RuntimeError, match="backend='cpu' is not available: .*sigmoid strip"):
        gapops.sigmoid_loss(*feats(), 10.0, backend="cpu")
    assert _dispatch.resolve("auto", torch.device("cpu"), "sigmoid").name == "reference"
    with pytest.raises(ValueError, match="loss must be one of"):
        gapops.backends("siglip")
