"""The public loss functions (softmax and sigmoid): argument checks, backend dispatch, reduction."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _checks, _dispatch, _ops
from ._dtypes import accumulation_dtype
from .reference import reference_contrastive_loss_ids, reference_loss_rows, swap_and_normalize

# What each loss does with a scalar logit_bias (said when a bias of the wrong form is refused).
_BIAS_ROLE = {"softmax": " (a scalar bias cancels in the softmax contrastive loss)",
              "sigmoid": " (the learnable bias b of z = s cos + b; None means 0)"}


def _as_scale(logit_scale, device: torch.device, acc: torch.dtype) -> Tensor:
    """logit_scale as a 0-dim tensor in the accumulation dtype, differentiable when it is one."""
    if isinstance(logit_scale, Tensor):
        return logit_scale.reshape(()).to(acc)
    if hasattr(logit_scale, "__array__"):  # a one-element numpy array, as a one-element tensor
        import numpy as np
        logit_scale = np.asarray(logit_scale).reshape(()).item()
    return torch.tensor(float(logit_scale), dtype=acc, device=device)


def _prepare(loss: str, image_features, text_features, logit_scale, logit_bias, swap_mask,
             reduction, backend, deterministic, pair_ids) -> tuple:
    """Checks every argument of a public loss; returns (backend, deterministic, scale tensor)."""
    _checks.check_loss_arguments(image_features, text_features, logit_scale, logit_bias,
                                 swap_mask, reduction, backend, _BIAS_ROLE[loss])
    device = image_features.device
    _checks.check_pair_ids(pair_ids, image_features.shape[0], device)
    _checks.check_deterministic(deterministic)
    be = _dispatch.resolve(backend, device, loss, dtype=image_features.dtype,
                           n=image_features.shape[0])
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    scale = _as_scale(logit_scale, device, accumulation_dtype(image_features.dtype))
    return be, bool(deterministic), scale


def _reduce_total(local_total: Tensor, global_n: int, reduction: str, group) -> Tensor:
    """'sum' or 'mean' of a loss from this rank's share of its sum (group: sum over the ranks,
    the same value on every rank; gapops/distributed.py)."""
    if group is not None:
        from .distributed import sum_over_ranks
        local_total = sum_over_ranks(local_total, group)
    return local_total / global_n if reduction == "mean" else local_total


def contrastive_loss(image_features: Tensor, text_features: Tensor, logit_scale,
                     logit_bias=None, *, swap_mask: Optional[Tensor] = None,
                     normalize: bool = True, reduction: str = "mean", backend: str = "auto",
                     deterministic: Optional[bool] = None, group=None,
                     pair_ids: Optional[Tensor] = None, label_smoothing: float = 0.0) -> Tensor:
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
        pair_ids: optional integer [N] on the features' device (each rank its local pairs'):
            pairs with equal IDs are positives of each other, both directions (several captions
            per image, duplicates). Each direction is ``cross_entropy`` with probability targets,
            row i's uniform over the pairs sharing its ID; unique IDs give ``ClipLoss``.
        label_smoothing: ε in [0, 1], ``cross_entropy``'s: targets (1 - ε) target + ε / N.

    Returns:
        0-dim tensor ('mean', 'sum') or [N] ('none'), float32 (float64 for float64 features).
    """
    _checks.check_label_smoothing(label_smoothing)
    be, deterministic, scale = _prepare("softmax", image_features, text_features, logit_scale,
                                        logit_bias, swap_mask, reduction, backend, deterministic,
                                        pair_ids)
    eps = float(label_smoothing)
    if be.name != "reference":
        _checks.check_no_forward_ad("contrastive_loss", "with a fused backend (use "
                                    "backend='reference')", image_features, text_features,
                                    logit_scale)

    x, y = image_features, text_features
    if group is not None:
        from .distributed import distributed_loss_rows
        rows, global_n = distributed_loss_rows(x, y, swap_mask, scale, normalize, be.name,
                                               deterministic, group, pair_ids, eps)
    elif be.name == "reference" and (pair_ids is not None or eps):
        rows = reference_contrastive_loss_ids(x, y, scale, pair_ids, eps, swap_mask, normalize,
                                              reduction="none")
        global_n = x.shape[0]
    elif be.name == "reference":
        a, b = swap_and_normalize(x, y, swap_mask, normalize)
        rows, global_n = reference_loss_rows(a, b, scale), x.shape[0]
    else:
        rows = _ops.contrastive_loss_rows(x, y, swap_mask, scale, normalize, be.name,
                                          deterministic, pair_ids, eps)[0]
        global_n = x.shape[0]

    if isinstance(logit_bias, Tensor) and logit_bias.requires_grad:
        # keeps the bias in the graph with its exact gradient, 0 (DDP expects every parameter used)
        rows = rows + 0.0 * logit_bias.reshape(()).to(rows.dtype)
    if reduction == "none":
        return rows
    return _reduce_total(rows.sum(), global_n, reduction, group)


def sigmoid_loss(image_features: Tensor, text_features: Tensor, logit_scale, logit_bias=None, *,
                 swap_mask: Optional[Tensor] = None, normalize: bool = True,
                 reduction: str = "mean", backend: str = "auto",
                 deterministic: Optional[bool] = None, group=None,
                 pair_ids: Optional[Tensor] = None) -> Tensor:
    """Sigmoid (SigLIP) loss, fused, never materializing the N x N logits (docs/design.md 2.6).

    With z_ij = s cos(a_i, b_j) + b and label +1 for pair i's own text, -1 for every other:
    loss = sum_ij softplus(-label_ij z_ij), divided by N for 'mean' (open_clip's ``SigLipLoss``).

    Args:
        image_features, text_features: [N, d], float16 / bfloat16 / float32 / float64, one
            device, any strides. Pair i is (image_features[i], text_features[i]).
        logit_scale: float or one-element tensor, the multiplier s (open_clip passes
            ``model.logit_scale.exp()``); gradients flow to it.
        logit_bias: None (means 0), a float or a one-element tensor b; gradients flow to it.
        swap_mask: optional bool [N]; where True, pair i's image and text swap places.
        normalize: L2-normalize each row first (idempotent on open_clip's normalized features).
        reduction: 'mean' (open_clip: the sum over rows and columns / N), 'sum', or 'none' (the
            loss of each image row against every column, [N]).
        backend: 'auto', 'reference', 'cpu', 'triton' or 'cuda' (``gapops.backends('sigmoid')``).
        deterministic: bit-identical results run to run; defaults to
            ``torch.are_deterministic_algorithms_enabled()``.
        group: a torch.distributed process group: each rank passes its local pairs and gets the
            loss of the global batch ('none': its own rows against every column;
            docs/distributed.md).
        pair_ids: optional integer [N] on the features' device (each rank its local pairs'):
            label +1 wherever two pairs' IDs are equal (several captions per image, duplicates).

    Returns:
        0-dim tensor ('mean', 'sum') or [N] ('none'), float32 (float64 for float64 features).

    For 'mean' and 'sum' the gradients are computed in the forward (3 matrix products in all) and
    kept until backward; under ``torch.no_grad()`` the forward is one product.
    """
    out, global_n = sigmoid_local(image_features, text_features, logit_scale, logit_bias,
                                  swap_mask, normalize, reduction, backend, deterministic, group,
                                  caller="sigmoid_loss", pair_ids=pair_ids)
    return out if reduction == "none" else _reduce_total(out, global_n, reduction, group)


def sigmoid_local(image_features, text_features, logit_scale, logit_bias, swap_mask, normalize,
                  reduction, backend, deterministic, group, caller: str,
                  pair_ids: Optional[Tensor] = None) -> tuple[Tensor, int]:
    """Checks the arguments of ``caller`` (sigmoid_loss's), then this rank's sigmoid loss: its
    rows against every column, per row [n] for reduction 'none', else summed (0-dim),
    differentiable; and the global batch size N. (gapops.SigmoidLoss divides by n instead.)"""
    be, deterministic, scale = _prepare("sigmoid", image_features, text_features, logit_scale,
                                        logit_bias, swap_mask, reduction, backend, deterministic,
                                        pair_ids)
    _checks.check_no_forward_ad(caller, "(gapops.reference.reference_sigmoid_loss does)",
                                image_features, text_features, logit_scale, logit_bias)
    x, y = image_features, text_features
    bias = _as_scale(0.0 if logit_bias is None else logit_bias, x.device, scale.dtype)
    if group is not None:
        from .distributed import distributed_sigmoid_terms
        return distributed_sigmoid_terms(x, y, swap_mask, scale, bias, normalize, be.name,
                                         deterministic, group, per_row=reduction == "none",
                                         pair_ids=pair_ids)
    if reduction == "none":
        return _ops.sigmoid_loss_rows(x, y, swap_mask, scale, bias, normalize, be.name,
                                      deterministic, pair_ids)[0], x.shape[0]
    want_grads = torch.is_grad_enabled() and any(t.requires_grad for t in (x, y, scale, bias))
    return _ops.sigmoid_loss_total(x, y, swap_mask, scale, bias, normalize, be.name,
                                   deterministic, want_grads, pair_ids)[0], x.shape[0]
