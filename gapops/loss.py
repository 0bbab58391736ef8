"""The public loss function: argument checks, backend dispatch, reduction."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _checks, _dispatch, _ops
from ._dtypes import accumulation_dtype
from .reference import reference_loss_rows, swap_and_normalize


def _as_scale(logit_scale, device: torch.device, acc: torch.dtype) -> Tensor:
    """logit_scale as a 0-dim tensor in the accumulation dtype, differentiable when it is one."""
    if isinstance(logit_scale, Tensor):
        return logit_scale.reshape(()).to(acc)
    return torch.tensor(float(logit_scale), dtype=acc, device=device)


def contrastive_loss(image_features: Tensor, text_features: Tensor, logit_scale,
                     logit_bias=None, *, swap_mask: Optional[Tensor] = None,
                     normalize: bool = True, reduction: str = "mean", backend: str = "auto",
                     deterministic: Optional[bool] = None, group=None) -> Tensor:
    """Bidirectional InfoNCE (CLIP) loss, fused, never materializing the N x N logits.

    Args:
        image_features, text_features: [N, d], float16 / bfloat16 / float32 / float64, one
            device, any strides. Pair i is (image_features[i], text_features[i]).
        logit_scale: float or one-element tensor, the multiplier s = 1/temperature (open_clip
            passes ``model.logit_scale.exp()``); gradients flow to it.
        logit_bias: None or a scalar, as open_clip's ``ClipLoss`` takes it. A scalar added to every
            logit cancels in the softmax loss: the value is unchanged and its gradient is 0.
        swap_mask: optional bool [N]; where True, pair i's image and text swap places.
        normalize: L2-normalize each row first (idempotent on unit-norm features, so it equals
            ``ClipLoss`` on open_clip's normalized features; ``normalize=False`` reproduces
            ``ClipLoss`` on unnormalized ones).
        reduction: 'mean' (open_clip ClipLoss), 'sum' or 'none' (per-pair loss [N]).
        backend: 'auto', 'reference', 'cpu', 'triton' or 'cuda' (see ``gapops.backends()``).
        deterministic: bit-identical results run to run; defaults to
            ``torch.are_deterministic_algorithms_enabled()``.
        group: a torch.distributed process group: each rank passes its local pairs and gets the
            loss of the global batch (docs/distributed.md).

    Returns:
        0-dim tensor ('mean', 'sum') or [N] ('none'), float32 (float64 for float64 features).
    """
    _checks.check_features(image_features, text_features)
    device = image_features.device
    _checks.check_logit_scale(logit_scale, device)
    if isinstance(logit_bias, Tensor) and logit_bias.dtype == torch.bool:
        raise TypeError("logit_bias got a bool tensor: pass the modality-swap mask by keyword, "
                        "swap_mask=...")
    _checks.check_logit_bias(logit_bias, device)
    _checks.check_swap_mask(swap_mask, image_features.shape[0], device)
    _checks.check_reduction(reduction)
    _checks.check_backend_name(backend)
    be = _dispatch.resolve(backend, device, loss="softmax", dtype=image_features.dtype,
                           n=image_features.shape[0])
    if be.name != "reference":
        _checks.check_no_forward_ad(image_features, text_features, logit_scale)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()

    x, y = image_features, text_features
    scale = _as_scale(logit_scale, device, accumulation_dtype(x.dtype))
    if group is not None:
        from .distributed import distributed_loss_rows, sum_over_ranks
        rows, global_n = distributed_loss_rows(x, y, swap_mask, scale, normalize, be.name,
                                               bool(deterministic), group)
    elif be.name == "reference":
        a, b = swap_and_normalize(x, y, swap_mask, normalize)
        rows, global_n = reference_loss_rows(a, b, scale), x.shape[0]
    else:
        rows = _ops.contrastive_loss_rows(x, y, swap_mask, scale, normalize, be.name,
                                          bool(deterministic))[0]
        global_n = x.shape[0]

    if isinstance(logit_bias, Tensor) and logit_bias.requires_grad:
        # keeps the bias in the graph with its exact gradient, 0 (DDP expects every parameter used)
        rows = rows + 0.0 * logit_bias.reshape(()).to(rows.dtype)
    if reduction == "none":
        return rows
    # Across ranks the reduction is the global sum, the same on every rank (gapops/distributed.py).
    total = rows.sum() if group is None else sum_over_ranks(rows.sum(), group)
    return total / global_n if reduction == "mean" else total
