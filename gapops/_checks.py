"""Argument checks for the public loss: every error names the argument at fault."""
from __future__ import annotations

import numbers

import torch

from ._dtypes import FLOAT_DTYPES

REDUCTIONS = ("mean", "sum", "none")


def _check_feature_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}; "
                        f"call .to_dense() first")
    if t.is_complex() or t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (no data): the loss needs real values")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [N, d], got shape {tuple(t.shape)}")


def check_features(image_features, text_features) -> None:
    """Both [N, d], one dtype, one device, N > 0, d > 0."""
    for name, t in (("image_features", image_features), ("text_features", text_features)):
        _check_feature_tensor(name, t)
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


def _check_scalar(name: str, value, device: torch.device, what: str) -> None:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got bool")
    if isinstance(value, numbers.Real):  # int, float, numpy scalars
        return
    if hasattr(value, "__array__") and not isinstance(value, torch.Tensor):  # numpy arrays
        import numpy as np
        arr = np.asarray(value)
        if arr.size != 1 or arr.dtype.kind not in "fiu":
            raise ValueError(f"{name} must hold one real number, got an array of shape "
                             f"{arr.shape} and dtype {arr.dtype}")
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    if value.numel() != 1:
        raise ValueError(f"{name} must hold one value (a scalar), got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if value.device != device:
        raise ValueError(f"{name} is on {value.device} but the features are on {device}")


def check_logit_scale(logit_scale, device: torch.device) -> None:
    """A Python or numpy number, or a one-element floating tensor on the features' device."""
    _check_scalar("logit_scale", logit_scale, device, "a float or a one-element tensor")


def check_logit_bias(logit_bias, device: torch.device, why: str = "") -> None:
    """None or a scalar; anything else is refused (``why`` is appended to the message)."""
    if logit_bias is None:
        return
    if isinstance(logit_bias, torch.Tensor) and logit_bias.dtype == torch.bool:
        raise TypeError("logit_bias got a bool tensor: pass the modality-swap mask by keyword, "
                        "swap_mask=...")
    _check_scalar("logit_bias", logit_bias, device, f"None or a scalar{why}")


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


def check_pair_ids(pair_ids, n: int, device: torch.device) -> None:
    """None, or an integer tensor [N] on the features' device (pairs with equal IDs are positives
    of each other)."""
    if pair_ids is None:
        return
    if not isinstance(pair_ids, torch.Tensor):
        raise TypeError(f"pair_ids must be an integer tensor of shape [N] or None, "
                        f"got {type(pair_ids).__name__}")
    if pair_ids.layout != torch.strided:
        raise TypeError(f"pair_ids must be a dense (strided) tensor, got layout {pair_ids.layout}")
    if pair_ids.dtype == torch.bool or pair_ids.is_floating_point() or pair_ids.is_complex():
        raise TypeError(f"pair_ids must have an integer dtype (int64, int32, ...), "
                        f"got {pair_ids.dtype}")
    if tuple(pair_ids.shape) != (n,):
        raise ValueError(f"pair_ids must have shape [N] = [{n}], got {tuple(pair_ids.shape)}")
    if pair_ids.device != device:
        raise ValueError(f"pair_ids is on {pair_ids.device} but the features are on {device}")


def check_label_smoothing(label_smoothing) -> None:
    """A real number in [0, 1], as torch.nn.functional.cross_entropy takes it."""
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a float in [0, 1], "
                        f"got {type(label_smoothing).__name__}")
    if not 0.0 <= float(label_smoothing) <= 1.0:  # NaN fails too
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")


def check_deterministic(deterministic) -> None:
    """True, False, or None (follow torch.are_deterministic_algorithms_enabled())."""
    if deterministic is not None and not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be True, False or None (None follows "
                        f"torch.are_deterministic_algorithms_enabled()), got "
                        f"{type(deterministic).__name__} {deterministic!r}")


def check_reduction(reduction) -> None:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_backend_name(backend) -> None:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string such as 'auto', 'cpu', 'triton' or 'cuda', "
                        f"got {type(backend).__name__} {backend!r}")


def check_no_forward_ad(function: str, instead: str, *tensors) -> None:
    """Forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) has no rule in the fused ops;
    refuse it rather than return a silent zero tangent. ``instead`` says what works."""
    import torch.autograd.forward_ad as fwad
    if torch.compiler.is_compiling():  # dynamo traces reverse mode only
        return
    for t in tensors:
        if isinstance(t, torch.Tensor) and fwad.unpack_dual(t).tangent is not None:
            raise NotImplementedError(
                f"gapops.{function} does not support forward-mode AD (torch.func.jvp, "
                f"torch.autograd.forward_ad) {instead}; or use reverse mode (backward / "
                f"torch.func.grad / vjp)")


def check_loss_arguments(image_features, text_features, logit_scale, logit_bias, swap_mask,
                         reduction, backend, bias_why: str = "") -> None:
    """Every argument of a public loss that does not depend on the backend chosen."""
    check_features(image_features, text_features)
    device = image_features.device
    check_logit_scale(logit_scale, device)
    check_logit_bias(logit_bias, device, bias_why)
    check_swap_mask(swap_mask, image_features.shape[0], device)
    check_reduction(reduction)
    check_backend_name(backend)
