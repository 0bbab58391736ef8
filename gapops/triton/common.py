"""Host-side helpers any family of Triton kernels in gapops/triton/ can share: the constexprs
that pick the accumulation type, weight dtype and product precision of an input dtype, the SM
count that sizes persistent grids, the device context of a launch, and routing-mask arguments.
Block-size configs, the tuning key and the tuned launch live in ``configs.py``."""
from __future__ import annotations

import contextlib

import torch
import triton.language as tl

from .._dtypes import triton_interpreted


def precision(dtype: torch.dtype) -> str:
    """The tl.dot input precision of an input dtype: 'tf32' for fp32 only where torch allows
    TF32 (torch.backends.cuda.matmul.allow_tf32; never under the interpreter), else 'ieee';
    16-bit inputs multiply exactly on the tensor cores ('tf32' is what tl.dot expects there)."""
    if dtype == torch.float64:
        return "ieee"
    if dtype == torch.float32:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 and not triton_interpreted() \
            else "ieee"
    return "tf32"


def kernel_consts(dtype: torch.dtype) -> dict:
    """ACC (accumulation), OPS (weights' dtype), PREC and MM (see tile.mm) for an input dtype."""
    interp = triton_interpreted()
    prec = precision(dtype)
    if dtype == torch.float64:
        return dict(ACC=tl.float64, OPS=tl.float64, PREC=prec, MM=1)
    if dtype == torch.float32:
        return dict(ACC=tl.float32, OPS=tl.float32, PREC=prec, MM=0)
    if dtype == torch.float16:
        return dict(ACC=tl.float32, OPS=tl.float16, PREC=prec, MM=0)
    return dict(ACC=tl.float32, OPS=tl.bfloat16, PREC=prec, MM=2 if interp else 0)


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (4 off CUDA: the interpreter's persistent grids)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def device_ctx(device: torch.device):
    """The context a launch on ``device`` runs in (Triton launches on the current device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def swap_arg(swap, like):
    """(pointer argument, HAS_SWAP) of a routing mask (bool [rows] or None)."""
    if swap is None:
        return like, False
    return swap.to(device=like.device, dtype=torch.uint8).contiguous(), True
