"""Argument checks for the public loss: every error names the argument at fault."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")


def check_features(image_features, text_features) -> None:
    for name, t in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D [N, d], got shape {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    x, y = image_features, text_features
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"image_features and text_features must have the same batch size N, "
                         f"got {x.shape[0]} and {y.shape[0]}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"image_features and text_features must have the same feature size d, "
                         f"got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] == 0:
        raise ValueError("image_features and text_features are an empty batch (N == 0)")
    if x.shape[1] == 0:
        raise ValueError("image_features and text_features have feature size d == 0")
    if x.dtype != y.dtype:
        raise TypeError(f"image_features and text_features must share a dtype, "
                        f"got {x.dtype} and {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"image_features and text_features must be on one device, "
                         f"got {x.device} and {y.device}")


def check_logit_scale(logit_scale, device: torch.device) -> None:
    if isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        return
    if not isinstance(logit_scale, torch.Tensor):
        raise TypeError(f"logit_scale must be a float or a 0-dim tensor, "
                        f"got {type(logit_scale).__name__}")
    if logit_scale.numel() != 1 or logit_scale.dim() > 1:
        raise ValueError(f"logit_scale must be a scalar (0-dim or one element), "
                         f"got shape {tuple(logit_scale.shape)}")
    if not logit_scale.is_floating_point():
        raise TypeError(f"logit_scale must be a floating-point tensor, got {logit_scale.dtype}")
    if logit_scale.device != device:
        raise ValueError(f"logit_scale is on {logit_scale.device} but the features are on {device}")


def check_swap_mask(swap_mask, n: int, device: torch.device) -> None:
    if swap_mask is None:
        return
    if not isinstance(swap_mask, torch.Tensor):
        raise TypeError(f"swap_mask must be a bool tensor of shape [N] or None, "
                        f"got {type(swap_mask).__name__}")
    if swap_mask.dtype != torch.bool:
        raise TypeError(f"swap_mask must have dtype torch.bool, got {swap_mask.dtype}")
    if tuple(swap_mask.shape) != (n,):
        raise ValueError(f"swap_mask must have shape [N] = [{n}], got {tuple(swap_mask.shape)}")
    if swap_mask.device != device:
        raise ValueError(f"swap_mask is on {swap_mask.device} but the features are on {device}")


def check_reduction(reduction) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
