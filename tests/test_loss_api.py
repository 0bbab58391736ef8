"""The public API: argument checks, the module form, backends(), torch.compile and opcheck."""
import pytest
import torch
import torch.nn.functional as F
import numpy as np

import gapops
from helpers import rand_inputs, rel_err


def feats(n=8, d=4, dtype=torch.float32):
    return torch.randn(n, d, dtype=dtype), torch.randn(n, d, dtype=dtype)


BAD_INPUTS = [
    (lambda x, y: (x[0], y, 10.0, {}), "image_features must be 2-D"),
    (lambda x, y: (x, y.unsqueeze(0), 10.0, {}), "text_features must be 2-D"),
    (lambda x, y: (x, y[:5], 10.0, {}), "same batch size"),
    (lambda x, y: (x, y[:, :3], 10.0, {}), "same feature size"),
    (lambda x, y: (x[:0], y[:0], 10.0, {}), "empty batch"),
    (lambda x, y: (x, y.double(), 10.0, {}), "share a dtype"),
    (lambda x, y: (x.long(), y.long(), 10.0, {}), "image_features must be float16"),
    (lambda x, y: (x.tolist(), y, 10.0, {}), "image_features must be a torch.Tensor"),
    (lambda x, y: (x, y, torch.ones(2), {}), "logit_scale must hold one value"),
    (lambda x, y: (x, y, 10.0, {"logit_bias": torch.ones(3)}), "logit_bias must hold one value"),
    (lambda x, y: (x, y, 10.0, {"logit_bias": torch.zeros(8, dtype=torch.bool)}),
     "pass the modality-swap mask by keyword"),
    (lambda x, y: (x.to_sparse(), y, 10.0, {}), "image_features must be a dense"),
    (lambda x, y: (x, y.to(torch.complex64), 10.0, {}), "text_features must be float16"),
    (lambda x, y: (x.to("meta"), y.to("meta"), 10.0, {}), "image_features is a meta tensor"),
    (lambda x, y: (x, y, 10.0, {"backend": ["cpu"]}), "backend must be a string"),
    (lambda x, y: (x, y, "10", {}), "logit_scale must be a float"),
    (lambda x, y: (x, y, torch.tensor(3), {}), "logit_scale must be a floating-point"),
    (lambda x, y: (x, y, 10.0, {"swap_mask": torch.zeros(8)}), "swap_mask must have dtype torch.bool"),
    (lambda x, y: (x, y, 10.0, {"swap_mask": torch.zeros(7, dtype=torch.bool)}), "swap_mask must have shape"),
    (lambda x, y: (x, y, 10.0, {"swap_mask": torch.zeros(8, 1, dtype=torch.bool)}), "swap_mask must have shape"),
    (lambda x, y: (x, y, 10.0, {"reduction": "avg"}), "reduction must be one of"),
    (lambda x, y: (x, y, 10.0, {"backend": "tpu"}), "backend='tpu' is unknown"),
    (lambda x, y: (x, y, 10.0, {"backend": "cuda"}), "backend='cuda' does not run on cpu"),
]


@pytest.mark.parametrize("make,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_inputs_name_the_argument(make, message):
    x, y = feats()
    a, b, s, kw = make(x, y)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=message):
        gapops.contrastive_loss(a, b, s, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a device mismatch")
@pytest.mark.gpu
def test_device_mismatch_is_named():
    x, y = feats()
    with pytest.raises(ValueError, match="one device"):
        gapops.contrastive_loss(x, y.cuda(), 10.0)


@pytest.mark.parametrize("scale", [torch.tensor([[10.0]]), torch.tensor([10.0]), np.float32(10.0),
                                   np.array(10.0), 10])
def test_logit_scale_forms_clip_loss_accepts(scale):
    x, y = feats()
    want = gapops.contrastive_loss(x, y, 10.0)
    assert torch.equal(gapops.contrastive_loss(x, y, scale), want)


def test_scalar_logit_bias_cancels_with_zero_gradient():
    x, y, s = rand_inputs(12, 5, seed=9)
    bias = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    got = gapops.contrastive_loss(x, y, s, bias)
    assert torch.equal(got.detach(), gapops.contrastive_loss(x, y, s))
    got.backward()
    assert bias.grad is not None and float(bias.grad) == 0.0


def test_unknown_backend_fails_at_construction():
    with pytest.raises(ValueError, match="backend='gpu' is unknown"):
        gapops.ContrastiveLoss(backend="gpu")


def test_forward_mode_ad_is_refused_with_a_fused_backend():
    x, y = feats()
    fn = lambda a: gapops.contrastive_loss(a, y, 10.0, backend="cpu")  # noqa: E731
    with pytest.raises(NotImplementedError, match="forward-mode AD"):
        torch.func.jvp(fn, (x,), (torch.ones_like(x),))
    ref = lambda a: gapops.contrastive_loss(a, y, 10.0, backend="reference")  # noqa: E731
    _, tangent = torch.func.jvp(ref, (x,), (torch.ones_like(x),))
    assert torch.isfinite(tangent)


def test_unavailable_backend_says_why(monkeypatch):
    from gapops import _dispatch, _extension
    monkeypatch.setattr(_extension, "load", lambda: (None, "not built (test)"))
    assert "not built (test)" in gapops.backends()["cpu"]
    with pytest.raises(RuntimeError, match="backend='cpu' is not available: not built"):
        gapops.contrastive_loss(*feats(), 10.0, backend="cpu")
    assert _dispatch.resolve("auto", torch.device("cpu")).name == "reference"


def test_backends_lists_every_backend():
    status = gapops.backends()
    assert set(status) == {"reference", "cpu", "triton", "cuda"}
    assert status["reference"] == "available"
    assert status["cpu"] == "available", "the CPU extension must be built for the test run"


def test_auto_picks_the_fused_cpu_backend():
    from gapops import _dispatch
    assert _dispatch.resolve("auto", torch.device("cpu")).name == "cpu"


def test_matches_open_clip_clip_loss_formula():
    """open_clip ClipLoss on normalized features: (CE(s X Y^T) + CE(s Y X^T)) / 2."""
    x, y, s = rand_inputs(33, 17, seed=1)
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
    logits = s * xn @ yn.T
    labels = torch.arange(33)
    want = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    got = gapops.contrastive_loss(x, y, s)
    assert rel_err(got, want) < 1e-12
    try:
        from open_clip.loss import ClipLoss
    except ImportError:
        return
    assert rel_err(got, ClipLoss()(xn, yn, s)) < 1e-12


def test_contrastive_loss_module_is_a_clip_loss_drop_in():
    x, y, s = rand_inputs(20, 6, seed=2)
    crit = gapops.ContrastiveLoss()
    out = crit(x, y, s, output_dict=True)
    assert set(out) == {"contrastive_loss"}
    assert torch.equal(out["contrastive_loss"], gapops.contrastive_loss(x, y, s))
    assert "reduction='mean'" in repr(crit)
    rows = gapops.ContrastiveLoss(reduction="none")(x, y, s)
    assert rows.shape == (20,)


def test_reduction_none_mean_sum_agree():
    x, y, s = rand_inputs(15, 9, seed=3)
    rows = gapops.contrastive_loss(x, y, s, reduction="none")
    assert torch.allclose(rows.mean(), gapops.contrastive_loss(x, y, s))
    assert torch.allclose(rows.sum(), gapops.contrastive_loss(x, y, s, reduction="sum"))


def test_normalize_is_idempotent_on_unit_features():
    x, y, s = rand_inputs(15, 9, seed=4)
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
    a = gapops.contrastive_loss(xn, yn, s, normalize=True)
    b = gapops.contrastive_loss(xn, yn, s, normalize=False)
    assert rel_err(a, b) < 1e-12


def test_logit_scale_gradient_reaches_a_log_parameter():
    """open_clip passes model.logit_scale.exp(): the gradient flows through the exp."""
    x, y, _ = rand_inputs(10, 4, seed=5)
    log_scale = torch.nn.Parameter(torch.tensor(2.659, dtype=torch.float32))
    gapops.contrastive_loss(x.float(), y.float(), log_scale.exp()).backward()
    ref = torch.nn.Parameter(torch.tensor(2.659, dtype=torch.float32))
    from gapops.reference import reference_contrastive_loss
    reference_contrastive_loss(x.float(), y.float(), ref.exp()).backward()
    assert rel_err(log_scale.grad, ref.grad) < 1e-5


def test_torch_compile_fullgraph():
    x, y, s = rand_inputs(24, 10, seed=6)
    x, y, s = x.float().requires_grad_(), y.float().requires_grad_(), s.float().requires_grad_()

    def step(a, b, c):
        return gapops.contrastive_loss(a * 2.0, b, c.exp(), backend="cpu")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(x, y, s)
    want = step(x, y, s)
    assert rel_err(got, want) < 1e-6
    g1 = torch.autograd.grad(got, (x, y, s))
    g2 = torch.autograd.grad(want, (x, y, s))
    for a, b in zip(g1, g2):
        assert rel_err(a, b) < 1e-5


def test_opcheck_custom_ops():
    x, y, s = rand_inputs(11, 5, seed=7)
    x, y = x.float().requires_grad_(), y.float().requires_grad_()
    scale = s.float().requires_grad_()
    mask = torch.rand(11) < 0.5
    for swap in (None, mask):
        torch.library.opcheck(torch.ops.gapops.contrastive_loss_rows.default,
                              (x, y, swap, scale, True, "cpu", False))
    out = torch.ops.gapops.contrastive_loss_rows(x, y, mask, scale, True, "cpu", False)
    g = torch.rand(11)
    torch.library.opcheck(torch.ops.gapops.contrastive_loss_rows_backward.default,
                          (g, x.detach(), y.detach(), mask, scale.detach(), *out[1:], True, "cpu",
                           False))
    a, b = x.detach(), y.detach()
    inv, cos = out[3], out[5]
    strip = (a[:4], b[:4], mask[:4], b, a, mask, inv[:4], inv, cos[:4], cos, scale.detach(), 3)
    torch.library.opcheck(torch.ops.gapops.strip_forward.default, strip)
    r, c = torch.ops.gapops.strip_forward(*strip)
    torch.library.opcheck(torch.ops.gapops.strip_backward.default,
                          (*strip, r, c, g[:4], g, False))


def test_native_strip_op_checks_its_arguments():
    a, b = torch.randn(4, 3), torch.randn(5, 3)
    one = torch.tensor(1.0)

    def strip(a, b, offset):
        n, m = a.shape[0], b.shape[0]
        return (a, a, None, b, b, None, torch.ones(n), torch.ones(m), torch.zeros(n),
                torch.zeros(m), one, offset)
    with pytest.raises(RuntimeError, match="offset"):
        torch.ops.gapops.strip_forward(*strip(a, b, 2))
    with pytest.raises(RuntimeError, match="share d"):
        torch.ops.gapops.strip_forward(*strip(a, torch.randn(5, 2), 0))


def test_info_and_demo_commands_run():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "gapops", "info"], capture_output=True, text=True,
                         check=True).stdout
    assert "torch" in out and "cpu" in out and "available" in out
    bare = subprocess.run([sys.executable, "-m", "gapops"], capture_output=True, text=True)
    assert bare.returncode == 0 and "info" in bare.stdout and "demo" in bare.stdout
    out = subprocess.run([sys.executable, "-m", "gapops", "demo", "--n", "64", "--d", "16"],
                         capture_output=True, text=True, check=True).stdout
    assert "cpu" in out and "max rel err" in out


def test_distributed_module_without_process_group_is_refused():
    x, y, s = rand_inputs(4, 3, seed=8)
    with pytest.raises(RuntimeError, match="initialized process group"):
        gapops.ContrastiveLoss(distributed=True)(x, y, s)
