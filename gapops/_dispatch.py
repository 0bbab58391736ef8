"""The backend table: which strip implementation serves which device, and why one is unavailable.

Every backend provides the two strip functions of docs/design.md section 2.1 with the
signatures of ``gapops.reference.reference_strip_forward`` / ``reference_strip_backward``:

    strip_forward(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                  scale, offset) -> (row_lse [n], col_lse [m])
    strip_backward(..., scale, offset, row_lse, col_lse, g_row, g_col, deterministic)
        -> (grad_a [n, d], grad_b [m, d], grad_scale 0-dim)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import _extension
from ._dtypes import triton_interpreted


@dataclass(frozen=True)
class Backend:
    name: str
    device_types: tuple
    # () -> None when usable, else a sentence saying why not
    why_unavailable: Callable[[], Optional[str]]
    # () -> (strip_forward, strip_backward); imported lazily so `import gapops` stays light
    kernels: Callable[[], tuple]


def _reference_kernels():
    from .reference import reference_strip_backward, reference_strip_forward
    return reference_strip_forward, reference_strip_backward


def _native_kernels():
    _extension.load()  # registers torch.ops.gapops.strip_* as a side effect
    return torch.ops.gapops.strip_forward, torch.ops.gapops.strip_backward


def _extension_missing() -> Optional[str]:
    return _extension.load()[1]


def _cpu_unavailable() -> Optional[str]:
    return _extension_missing()


def _cuda_unavailable() -> Optional[str]:
    why = _extension_missing()
    if why:
        return why
    if not _extension.build_info().get("cuda"):
        return "the extension was built without CUDA (no nvcc or CUDA torch at build time, " \
               "or GAPOPS_SKIP_CUDA_BUILD=1)"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    return None


def _triton_unavailable() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton is not installed ({e})"
    if not (torch.cuda.is_available() or triton_interpreted()):
        return "no CUDA device is visible (set TRITON_INTERPRET=1 to run the kernels on the CPU)"
    return None


def _triton_kernels():
    from .triton.strip import strip_backward, strip_forward
    return strip_forward, strip_backward


BACKENDS = {
    "reference": Backend("reference", ("cpu", "cuda"), lambda: None, _reference_kernels),
    "cpu": Backend("cpu", ("cpu",), _cpu_unavailable, _native_kernels),
    "triton": Backend("triton", ("cuda", "cpu"), _triton_unavailable, _triton_kernels),
    "cuda": Backend("cuda", ("cuda",), _cuda_unavailable, _native_kernels),
}

# 'auto' tries these in order for each device type.
AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("triton", "cuda", "reference")}


def backends() -> dict:
    """Each backend's status: {"reference": "available", "triton": "<why not>", ...}."""
    return {name: (be.why_unavailable() or "available") for name, be in BACKENDS.items()}


def known_backend(name: str) -> None:
    """ValueError unless ``name`` is 'auto' or a backend of the table (availability aside)."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"backend={name!r} is unknown; choose one of "
                         f"{['auto', *BACKENDS]}")


def resolve(name: str, device: torch.device) -> Backend:
    """The backend called ``name`` ('auto' picks one) for features on ``device``, or a ValueError."""
    if name == "auto":
        for candidate in AUTO_ORDER.get(device.type, ("reference",)):
            be = BACKENDS[candidate]
            if be.why_unavailable() is None:
                return be
        return BACKENDS["reference"]
    known_backend(name)
    be = BACKENDS[name]
    if device.type not in be.device_types:
        raise ValueError(f"backend={name!r} does not run on {device.type} tensors "
                         f"(it runs on {', '.join(be.device_types)})")
    if name == "triton" and device.type == "cpu" and not triton_interpreted():
        raise ValueError("backend='triton' runs on CPU tensors only under TRITON_INTERPRET=1")
    why = be.why_unavailable()
    if why:
        raise RuntimeError(f"backend={name!r} is not available: {why}")
    return be


def strip_kernels(name: str, deterministic: bool = False) -> tuple:
    """(strip_forward, strip_backward) of backend ``name`` (already resolved). deterministic:
    a forward that can pick among configs (marked ``takes_deterministic``: Triton's autotuned
    one) is bound to its fixed choice, so that every process gets the same bits."""
    forward, backward = BACKENDS[name].kernels()
    if deterministic and getattr(forward, "takes_deterministic", False):
        forward = functools.partial(forward, deterministic=True)
    return forward, backward
