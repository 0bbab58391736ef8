"""The CPU contestants of issue 2, shared by the timing benchmark and the peak-memory probe.

Each contestant is a forward+backward step on fp32 features [N, d]; "floor" is the four N x N x d
products alone (docs/design.md section 4), torch.mm on the same machine.
"""
from __future__ import annotations

import torch

import gapops
from gapops.reference import reference_contrastive_loss

SIZES = [(1024, 256), (1024, 512), (4096, 256), (4096, 512), (8192, 256), (8192, 512)]
SCALE = 14.3


def make_inputs(n: int, d: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = 0.5 * x + torch.randn(n, d, generator=g)
    return x, y, torch.tensor(SCALE, requires_grad=True)


def _step(loss_fn):
    def step(x, y, s):
        xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
        loss = loss_fn(xs, ys, s)
        loss.backward()
        return loss
    return step


def _open_clip_loss():
    try:
        from open_clip.loss import ClipLoss
    except ImportError:
        return None
    crit = ClipLoss()
    return lambda x, y, s: crit(torch.nn.functional.normalize(x, dim=1),
                                torch.nn.functional.normalize(y, dim=1), s)


def _floor(x, y, s):
    # The four products a fused forward+backward cannot avoid: logits, recomputed logits, dA, dB.
    for _ in range(2):
        p = x @ y.T
    x.T @ p
    p @ y


_compiled_reference = None


def contestants() -> dict:
    """name -> step(x, y, s) (None when that peer is not installed)."""
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(reference_contrastive_loss)
    return {
        "gapops_cpu": _step(lambda x, y, s: gapops.contrastive_loss(x, y, s, backend="cpu")),
        "naive": _step(reference_contrastive_loss),
        "torch_compile_naive": _step(_compiled_reference),
        "open_clip": _step(_open_clip_loss()) if _open_clip_loss() else None,
        "floor_4_mm": _floor,
    }
