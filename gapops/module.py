"""The nn.Module drop-ins: ``ContrastiveLoss`` for open_clip's ``ClipLoss``, ``SigmoidLoss`` for
its ``SigLipLoss``.

Each takes its open_clip class's constructor arguments with their meaning (docs/distributed.md)
and its forward signature ``(image_features, text_features, logit_scale, logit_bias,
output_dict=False)``, so open_clip's trainer call ``loss(**model_out, output_dict=True)`` works
unchanged. ``_LossModule`` holds what both share: the gapops options, the rank / world_size /
group bookkeeping and the output form.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import _checks
from .loss import contrastive_loss, sigmoid_local


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``factor``."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class _AllReduceMeanGradient(torch.autograd.Function):
    """Identity forward; backward replaces each rank's gradient by the mean over the group."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist
        g = grad.clone()
        dist.all_reduce(g, group=ctx.group)
        return g / dist.get_world_size(ctx.group), None


class _LossModule(nn.Module):
    """What both loss modules share: gapops's keyword options, the process group from
    rank / world_size / distributed / group, and the ``output_dict`` form."""

    def __init__(self, rank: int, world_size: int, *, normalize: bool, reduction: str,
                 backend: str, deterministic: Optional[bool], distributed: bool, group):
        super().__init__()
        _checks.check_reduction(reduction)
        _checks.check_backend_name(backend)
        _checks.check_deterministic(deterministic)
        from ._dispatch import known_backend
        known_backend(backend)
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive int, got {world_size!r}")
        self.rank, self.world_size = rank, world_size
        self.normalize, self.reduction, self.backend = normalize, reduction, backend
        self.deterministic, self.group = deterministic, group
        self.distributed = bool(distributed or group is not None or world_size > 1)

    def _group(self):
        if not self.distributed:
            return None
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(f"{type(self).__name__} over ranks (world_size > 1, "
                               "distributed=True or group=) needs an initialized process group "
                               "(torch.distributed.init_process_group)")
        group = self.group if self.group is not None else dist.group.WORLD
        if self.world_size > 1 and dist.get_world_size(group) != self.world_size:
            raise ValueError(f"world_size={self.world_size} but the process group has "
                             f"{dist.get_world_size(group)} ranks")
        if self.world_size > 1 and dist.get_rank(group) != self.rank:
            raise ValueError(f"rank={self.rank} but this process is rank {dist.get_rank(group)} "
                             f"of the group")
        return group

    @staticmethod
    def _output(loss: Tensor, output_dict: bool):
        return {"contrastive_loss": loss} if output_dict else loss

    def extra_repr(self) -> str:
        return (f"normalize={self.normalize}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}, distributed={self.distributed}")


class ContrastiveLoss(_LossModule):
    """nn.Module form of :func:`gapops.contrastive_loss`, a drop-in for open_clip's ``ClipLoss``.

    ``ContrastiveLoss(local_loss=False, gather_with_grad=False, cache_labels=False, rank=0,
    world_size=1, use_horovod=False)`` as ClipLoss, plus keyword-only gapops options
    (``swap_mask`` goes to forward). ``world_size > 1`` (or ``distributed=True`` / ``group=``)
    computes the loss over a torch.distributed group, each rank passing its local features:

    - ``local_loss=False, gather_with_grad=False`` (ClipLoss's default): every rank returns the
      global mean loss; the features receive dL/dx and logit_scale dL/ds, as in ClipLoss.
    - ``gather_with_grad=True``: the features receive W dL/dx (gradients through the gather, as
      ``torch.distributed.nn`` gives), so DDP's average yields the exact single-process gradient.
    - ``local_loss=True, gather_with_grad=True``: each rank returns the mean over its own pairs
      (against all columns), as ClipLoss. ``local_loss=True`` without gather_with_grad drops
      other ranks' gradient terms in ClipLoss and is refused here.
    - ``cache_labels`` has nothing to cache (no labels are built); ``use_horovod=True`` is
      refused (gapops distributes over torch.distributed only).

    forward(image_features [N,d], text_features [N,d], logit_scale, logit_bias=None,
    output_dict=False, swap_mask=None, pair_ids=None) returns the loss, or
    ``{"contrastive_loss": loss}``; ``label_smoothing`` (keyword) and ``pair_ids`` as in
    :func:`gapops.contrastive_loss`.
    """

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = False,
                 cache_labels: bool = False, rank: int = 0, world_size: int = 1,
                 use_horovod: bool = False, *, normalize: bool = True, reduction: str = "mean",
                 backend: str = "auto", deterministic: Optional[bool] = None,
                 distributed: bool = False, group=None, label_smoothing: float = 0.0):
        super().__init__(rank, world_size, normalize=normalize, reduction=reduction,
                         backend=backend, deterministic=deterministic, distributed=distributed,
                         group=group)
        _checks.check_label_smoothing(label_smoothing)
        self.label_smoothing = float(label_smoothing)
        if use_horovod:
            raise ValueError("use_horovod=True is not supported: gapops distributes the loss over "
                             "torch.distributed (pass world_size/rank, or group=)")
        if local_loss and not gather_with_grad and self.distributed:
            raise ValueError("local_loss=True needs gather_with_grad=True here: without it "
                             "ClipLoss drops the gradient terms of other ranks' rows")
        if local_loss and reduction != "mean":
            raise ValueError("local_loss=True reduces over this rank's pairs: reduction must be "
                             f"'mean', got {reduction!r}")
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad
        self.cache_labels = cache_labels

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale,
                logit_bias=None, output_dict: bool = False, swap_mask: Optional[Tensor] = None,
                pair_ids: Optional[Tensor] = None):
        group = self._group()
        kw = dict(swap_mask=swap_mask, normalize=self.normalize, backend=self.backend,
                  deterministic=self.deterministic, group=group, pair_ids=pair_ids,
                  label_smoothing=self.label_smoothing)
        if group is not None and not self.gather_with_grad:
            # ClipLoss's default: features get dL/dx (not W dL/dx), logit_scale the full dL/ds
            import torch.distributed as dist
            world = dist.get_world_size(group)
            image_features = _ScaleGradient.apply(image_features, 1.0 / world)
            text_features = _ScaleGradient.apply(text_features, 1.0 / world)
            if isinstance(logit_scale, Tensor) and logit_scale.requires_grad:
                # each rank's share of W dL/ds, averaged: dL/ds on every rank
                logit_scale = _AllReduceMeanGradient.apply(logit_scale, group)
        if group is not None and self.local_loss:
            loss = contrastive_loss(image_features, text_features, logit_scale, logit_bias,
                                    reduction="none", **kw).mean()
        else:
            loss = contrastive_loss(image_features, text_features, logit_scale, logit_bias,
                                    reduction=self.reduction, **kw)
        return self._output(loss, output_dict)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, local_loss={self.local_loss}, "
                f"gather_with_grad={self.gather_with_grad}")


DIST_IMPLS = (None, "bidir", "shift", "reduce", "gather")


class SigmoidLoss(_LossModule):
    """nn.Module form of :func:`gapops.sigmoid_loss`, a drop-in for open_clip's ``SigLipLoss``.

    ``SigmoidLoss(cache_labels=False, rank=0, world_size=1, dist_impl=None, chunk_size=0)`` as
    SigLipLoss (``chunk_size`` as in its chunked variant), plus keyword-only gapops options
    (``swap_mask`` goes to forward). Value, as SigLipLoss: this rank's rows against every rank's
    columns, summed and divided by the local batch size n ('mean'; 'sum' without the division,
    'none' per row [n]). ``world_size > 1`` (or ``distributed=True`` / ``group=``) gathers the
    columns over a torch.distributed group; gradients are SigLipLoss's (each rank's text
    features receive the gradient of every rank's loss), so DDP's update is the same
    (docs/distributed.md).

    - ``dist_impl`` ('bidir', 'shift', 'reduce', 'gather' or None): open_clip's ways of passing
      the text features around; all give the same loss and gradients, and so does gapops's one
      scheme (columns all-gathered, column gradient reduce-scattered), whichever is named.
    - ``chunk_size``: how many columns open_clip's chunked variant computes at a time to save
      memory; gapops never stores the logits, so it is accepted and has no effect.
    - ``cache_labels``: nothing to cache (no labels are built).

    forward(image_features [n,d], text_features [n,d], logit_scale, logit_bias, output_dict=False,
    swap_mask=None, pair_ids=None) returns the loss, or ``{"contrastive_loss": loss}``;
    ``logit_bias=None`` is 0; ``pair_ids`` as in :func:`gapops.sigmoid_loss`.
    """

    def __init__(self, cache_labels: bool = False, rank: int = 0, world_size: int = 1,
                 dist_impl: Optional[str] = None, chunk_size: int = 0, *,
                 normalize: bool = True, reduction: str = "mean", backend: str = "auto",
                 deterministic: Optional[bool] = None, distributed: bool = False, group=None):
        super().__init__(rank, world_size, normalize=normalize, reduction=reduction,
                         backend=backend, deterministic=deterministic, distributed=distributed,
                         group=group)
        if dist_impl not in DIST_IMPLS:
            raise ValueError(f"dist_impl must be one of {DIST_IMPLS} (SigLipLoss's), got "
                             f"{dist_impl!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
            raise ValueError(f"chunk_size must be an int >= 0, got {chunk_size!r}")
        self.cache_labels, self.dist_impl, self.chunk_size = cache_labels, dist_impl, chunk_size

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale, logit_bias,
                output_dict: bool = False, swap_mask: Optional[Tensor] = None,
                pair_ids: Optional[Tensor] = None):
        out, _ = sigmoid_local(image_features, text_features, logit_scale, logit_bias, swap_mask,
                               self.normalize, self.reduction, self.backend, self.deterministic,
                               self._group(), caller="SigmoidLoss", pair_ids=pair_ids)
        if self.reduction == "mean":  # SigLipLoss divides by the local batch size
            out = out / image_features.shape[0]
        return self._output(out, output_dict)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dist_impl={self.dist_impl!r}"
