"""Precision of the fused backends where it matters (docs/design.md section 1, precision).

fp32 at logit_scale 100 with the positives dominating (1 - p between 1e-6 and 3e-2, the regime of
a trained CLIP): the loss and all three gradients must be at least as close to the float64 naive
form as open_clip's own fp32 ClipLoss on the same inputs (compared over several draws, since both
sit at fp32's noise floor on any one draw), and d logit_scale within 1e-5 at a loss ~0.5.
Half precision: zero rows, entries near the dtype's range and tiny entries stay finite and right.
"""
import pytest
import torch
import torch.nn.functional as F

import gapops
from helpers import MAX_ROWS, backend_params, device_for, loss_and_grads, oracle, rel_err

FUSED = backend_params(include_reference=False)
NAMES = ("loss", "d image_features", "d text_features", "d logit_scale")


def open_clip_fp32(x, y, s):
    """open_clip's ClipLoss on F.normalize'd fp32 features (its own class when installed)."""
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
    try:
        from open_clip.loss import ClipLoss
        return ClipLoss()(xn, yn, s)
    except ImportError:
        logits = s * xn @ yn.T
        labels = torch.arange(x.shape[0], device=x.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def aligned_pairs(n, d, noise, seed, device):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x + noise * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.float().double().to(device), y.float().double().to(device)


def errors(fn, x, y, s, **kw):
    want = oracle(x, y, s)
    got = loss_and_grads(fn, x, y, s, torch.float32, **kw)
    return [rel_err(g, w) for g, w in zip(got, want)], float(want[0])


@pytest.mark.parametrize("backend", FUSED)
def test_fp32_at_least_as_close_as_open_clip_when_positives_dominate(backend):
    n = min(256, MAX_ROWS[backend])
    s = torch.tensor(100.0, dtype=torch.float64)
    ours, theirs = [], []
    for seed in range(6):
        x, y = aligned_pairs(n, 64, 1.15, seed, device_for(backend))
        e_ours, loss = errors(gapops.contrastive_loss, x, y, s, backend=backend)
        e_theirs, _ = errors(open_clip_fp32, x, y, s)
        assert 1e-6 <= loss <= 3e-2, f"draw {seed}: loss {loss:.1e} is outside the regime under test"
        ours.append(e_ours)
        theirs.append(e_theirs)
    for k, name in enumerate(NAMES):
        mean_ours = sum(e[k] for e in ours) / len(ours)
        mean_theirs = sum(e[k] for e in theirs) / len(theirs)
        assert mean_ours <= mean_theirs, (f"{backend} {name}: mean relative error {mean_ours:.2e} "
                                          f"> open_clip's {mean_theirs:.2e}")


@pytest.mark.parametrize("backend", FUSED)
def test_fp32_logit_scale_gradient_at_loss_half(backend):
    n = min(128, MAX_ROWS[backend])
    x, y = aligned_pairs(n, 32, 1.2, 7, device_for(backend))
    s = torch.tensor(100.0, dtype=torch.float64)
    errs, loss = errors(gapops.contrastive_loss, x, y, s, backend=backend)
    assert 0.2 < loss < 1.0, f"loss {loss:.2f} is not ~0.5"
    assert errs[3] <= 1e-5, f"d logit_scale relative error {errs[3]:.1e}"


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_zero_row_gives_the_fp32_loss(backend, dtype):
    dev = device_for(backend)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 24, generator=g), torch.randn(40, 24, generator=g)
    x[5] = 0.0
    y[9] = 0.0
    want = gapops.contrastive_loss(x.to(dtype).float().to(dev), y.to(dtype).float().to(dev), 10.0,
                                   backend=backend)
    got = gapops.contrastive_loss(x.to(dtype).to(dev), y.to(dtype).to(dev), 10.0, backend=backend)
    assert torch.isfinite(got)
    assert rel_err(got, want) < 1e-2


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("magnitude", [1e4, 1e-7], ids=["huge", "tiny"])
def test_half_precision_extreme_entries(backend, dtype, magnitude):
    """Entries ~1e4 (fp16 row norms overflow above 65504) and ~1e-7 (subnormal in fp16): finite
    loss and gradients, within half-precision tolerance of the float64 oracle on the same rounded
    inputs. N and logit_scale keep the exact gradients (~ 1 / |x|) inside fp16's range. (bf16
    entries beyond ~1e18 would overflow the fp32 accumulation of raw products: docs/design.md.)"""
    n, d = 96, 64
    g = torch.Generator().manual_seed(1)
    x = (magnitude * torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype).double()
    y = (magnitude * torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype).double()
    y = (x + 0.5 * y).to(dtype).double()
    dev = device_for(backend)
    s = torch.tensor(1.0 if magnitude < 1 else 10.0, dtype=torch.float64)
    x, y = x.to(dev), y.to(dev)
    # gradients ~ s g / |x|: 'sum' keeps them above fp16's normal range for huge entries, 'mean'
    # below its maximum for tiny ones
    reduction = "sum" if magnitude > 1 else "mean"
    want = oracle(x, y, s, reduction=reduction)
    got = loss_and_grads(gapops.contrastive_loss, x, y, s, dtype, backend=backend,
                         reduction=reduction)
    for k, (name, gv, wv) in enumerate(zip(NAMES, got, want)):
        assert torch.isfinite(gv).all(), f"{name} is not finite"
        # the error of the exact value rounded to the output dtype is unavoidable
        floor = rel_err(wv.to(dtype if k in (1, 2) else torch.float32), wv)
        assert rel_err(gv, wv) < 2e-2 + floor, f"{name}: relative error {rel_err(gv, wv):.1e}"
