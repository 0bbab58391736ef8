"""The CPU contestants, shared by the timing benchmark and the peak-memory probe.

Each contestant is a forward+backward step on fp32 features [N, d]. Softmax (CLIP) loss:
step(x, y, s), "floor" the four N x N x d products alone (docs/design.md section 4). Sigmoid
(SigLIP) loss: step(x, y, s, b), "floor" the three products of its forward-with-gradients
(section 2.6). torch.mm on the same machine.
"""
from __future__ import annotations

import torch

import gapops
import inspect

from gapops.reference import reference_contrastive_loss, reference_sigmoid_loss

SIZES = [(1024, 256), (1024, 512), (4096, 256), (4096, 512), (8192, 256), (8192, 512)]
SCALE = 14.3
SIGMOID_SCALE, SIGMOID_BIAS = 10.0, -10.0  # open_clip's SigLIP initialization


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


def make_sigmoid_inputs(n: int, d: int):
    x, y, _ = make_inputs(n, d)
    return (x, y, torch.tensor(SIGMOID_SCALE, requires_grad=True),
            torch.tensor(SIGMOID_BIAS, requires_grad=True))


def _sigmoid_step(loss_fn):
    def step(x, y, s, b):
        xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
        loss = loss_fn(xs, ys, s, b)
        loss.backward()
        return loss
    return step


def _open_clip_siglip(chunked: bool):
    """open_clip's SigLipLoss on normalized features (its model normalizes before the loss);
    chunked: with its chunk_size argument, None when the installed open_clip has none."""
    try:
        from open_clip.loss import SigLipLoss
    except ImportError:
        return None
    if chunked:
        if "chunk_size" not in inspect.signature(SigLipLoss).parameters:
            return None
        crit = SigLipLoss(chunk_size=1024)
    else:
        crit = SigLipLoss()
    norm = torch.nn.functional.normalize
    return lambda x, y, s, b: crit(norm(x, dim=1), norm(y, dim=1), s, b)


def _sigmoid_floor(x, y, s, b):
    # The three products of the fused forward-with-gradients: logits, G B, G^T A.
    p = x @ y.T
    p @ y
    p.T @ x


_compiled_sigmoid = None


def sigmoid_contestants() -> dict:
    """name -> step(x, y, s, b) (None when that peer is not installed)."""
    global _compiled_sigmoid
    if _compiled_sigmoid is None:
        _compiled_sigmoid = torch.compile(reference_sigmoid_loss)
    peers = {f"sigmoid_open_clip{'_chunked' if c else ''}": _open_clip_siglip(c) for c in (False, True)}
    return {
        "gapops_sigmoid_cpu": _sigmoid_step(
            lambda x, y, s, b: gapops.sigmoid_loss(x, y, s, b, backend="cpu")),
        "sigmoid_naive": _sigmoid_step(reference_sigmoid_loss),
        "sigmoid_torch_compile_naive": _sigmoid_step(_compiled_sigmoid),
        **{k: _sigmoid_step(v) if v else None for k, v in peers.items()},
        "sigmoid_floor_3_mm": _sigmoid_floor,
    }


def case(name: str):
    """(step, make_inputs) of the contestant called name, softmax or sigmoid."""
    if name in ("gapops_cpu", "naive", "torch_compile_naive", "open_clip", "floor_4_mm"):
        return contestants()[name], make_inputs
    return sigmoid_contestants()[name], make_sigmoid_inputs
