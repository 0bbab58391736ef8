"""The public loss: argument checks, swap + normalize, backend dispatch, reduction."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import _checks, _dispatch, _ops
from .reference import reference_loss_rows, swap_and_normalize


def contrastive_loss(image_features: Tensor, text_features: Tensor, logit_scale,
                     swap_mask: Optional[Tensor] = None, normalize: bool = True,
                     reduction: str = "mean", backend: str = "auto",
                     deterministic: Optional[bool] = None, group=None) -> Tensor:
    """Bidirectional InfoNCE (CLIP) loss, fused, never materializing the N x N logits.

    Args:
        image_features, text_features: [N, d], float16 / bfloat16 / float32 / float64, one
            device, any strides. Pair i is (image_features[i], text_features[i]).
        logit_scale: float or 0-dim tensor, the multiplier s = 1/temperature (open_clip passes
            ``model.logit_scale.exp()``); gradients flow to it.
        swap_mask: optional bool [N]; where True, pair i's image and text swap places.
        normalize: L2-normalize each row first (idempotent on unit-norm features).
        reduction: 'mean' (open_clip ClipLoss), 'sum' or 'none' (per-pair loss [N]).
        backend: 'auto', 'reference', 'cpu', 'triton' or 'cuda' (see ``gapops.backends()``).
        deterministic: bit-identical results run to run; defaults to
            ``torch.are_deterministic_algorithms_enabled()``.
        group: a torch.distributed process group: each rank passes its local pairs and gets the
            loss of the global batch.

    Returns:
        0-dim tensor ('mean', 'sum') or [N] ('none'), float32 (float64 for float64 features).
    """
    _checks.check_features(image_features, text_features)
    device = image_features.device
    _checks.check_logit_scale(logit_scale, device)
    _checks.check_swap_mask(swap_mask, image_features.shape[0], device)
    _checks.check_reduction(reduction)
    be = _dispatch.resolve(backend, device)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()

    acc = torch.promote_types(image_features.dtype, torch.float32)
    scale = torch.as_tensor(logit_scale, device=device).reshape(()).to(acc)
    a, b = swap_and_normalize(image_features, text_features, swap_mask, normalize)

    if group is not None:
        from .distributed import distributed_loss_rows, sum_over_ranks
        rows, global_n = distributed_loss_rows(a, b, scale, be.name, deterministic, group)
    elif be.name == "reference":
        rows, global_n = reference_loss_rows(a, b, scale), a.shape[0]
    else:
        rows, global_n = _ops.clip_loss_rows(a, b, scale, be.name, deterministic)[0], a.shape[0]

    if reduction == "none":
        return rows
    # Across ranks the reduction is the global sum, the same on every rank (gapops/distributed.py).
    total = rows.sum() if group is None else sum_over_ranks(rows.sum(), group)
    return total / global_n if reduction == "mean" else total


class ContrastiveLoss(nn.Module):
    """nn.Module form of :func:`contrastive_loss`, a drop-in for open_clip's ``ClipLoss``.

    ``forward(image_features [N,d], text_features [N,d], logit_scale, swap_mask=None,
    output_dict=False)`` returns the loss, or ``{"contrastive_loss": loss}`` with
    ``output_dict=True`` as ClipLoss does.
    """

    def __init__(self, normalize: bool = True, reduction: str = "mean", backend: str = "auto",
                 deterministic: Optional[bool] = None, distributed: bool = False, group=None):
        super().__init__()
        _checks.check_reduction(reduction)
        self.normalize, self.reduction, self.backend = normalize, reduction, backend
        self.deterministic, self.distributed, self.group = deterministic, distributed, group

    def _group(self):
        if not self.distributed:
            return None
        import torch.distributed as dist
        if self.group is not None:
            return self.group
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("ContrastiveLoss(distributed=True) needs an initialized process group "
                               "(torch.distributed.init_process_group) or group=...")
        return dist.group.WORLD

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale,
                swap_mask: Optional[Tensor] = None, output_dict: bool = False):
        loss = contrastive_loss(image_features, text_features, logit_scale, swap_mask=swap_mask,
                                normalize=self.normalize, reduction=self.reduction,
                                backend=self.backend, deterministic=self.deterministic,
                                group=self._group())
        return {"contrastive_loss": loss} if output_dict else loss

    def extra_repr(self) -> str:
        return (f"normalize={self.normalize}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}, distributed={self.distributed}")
