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
    """(pointer argument, HAS_SWAP) of a routing mask (bool [rows] or None), as int32: 4-byte
    elements can be fetched by async copies ahead of the operand loads they route."""
    if swap is None:
        return like, False
    return swap.to(device=like.device, dtype=torch.int32).contiguous(), True


ALIGN_ELEMENTS = 16  # rows padded to this many elements: 16-byte loads for every dtype


def alt_offset(x: torch.Tensor, x_alt: torch.Tensor) -> int:
    """x_alt's start as an element offset from x's (both in one dtype and on one device): how
    the kernels address the routing alternative (tile.routed_rows). Both 16-byte aligned (the
    launcher's aligned_rows), so it is a multiple of 16 bytes; allocations are 512-byte aligned,
    so usually of 16 elements, which Triton specializes on."""
    delta = x_alt.data_ptr() - x.data_ptr()
    if delta % x.element_size():
        raise ValueError("x_alt's start is not a whole number of elements from x's")
    return delta // x.element_size()


def aligned_width(d: int) -> int:
    """The row width the kernels see for feature width ``d``: d rounded up to a multiple of
    ALIGN_ELEMENTS. Triton proves 16-byte alignment only for integers divisible by 16, and a
    K mask ``k < d`` keeps 16-byte loads only when d is too; zero columns add nothing to a dot."""
    return -(-d // ALIGN_ELEMENTS) * ALIGN_ELEMENTS


def is_aligned(x: torch.Tensor, width: int) -> bool:
    """Whether rows of ``x`` can be read as they are: unit inner stride, row stride and width
    ``width`` multiples of ALIGN_ELEMENTS, a 16-byte aligned start."""
    return (x.shape[1] == width and (x.stride(1) == 1 or x.shape[1] <= 1)
            and x.stride(0) % ALIGN_ELEMENTS == 0 and x.data_ptr() % 16 == 0)


def aligned_rows(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` [rows, d] as the kernels read it: itself when aligned, else a copy [rows, width]
    with zero columns d..width (O(rows x d) memory, only for unaligned inputs)."""
    if is_aligned(x, width):
        return x
    out = x.new_zeros((x.shape[0], width))
    out[:, : x.shape[1]] = x
    return out


GRID_LIMITS = (2**31 - 1, 65535, 65535)  # CUDA's limits on grid x, y, z


def check_grid(grid: tuple) -> tuple:
    """``grid`` itself, after checking it against CUDA's limits (a launch past them fails with
    an unhelpful driver error)."""
    for axis, (size, limit) in enumerate(zip(grid, GRID_LIMITS)):
        if not 0 < size <= limit:
            raise ValueError(f"Triton grid {grid}: axis {axis} size {size} outside [1, {limit}]")
    return grid
