"""The backend table: which strip implementation serves which device, and why one is unavailable.

Every backend serves both losses. For the softmax (CLIP) loss it provides the two strip
functions of docs/design.md section 2.1 with the signatures of
``gapops.reference.reference_strip_forward`` / ``reference_strip_backward``:

    strip_forward(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                  scale, offset) -> (row_lse [n], col_lse [m])
    strip_backward(..., scale, offset, row_lse, col_lse, g_row, g_col, deterministic)
        -> (grad_a [n, d], grad_b [m, d], grad_scale 0-dim)

and for the sigmoid (SigLIP) loss the one function of section 2.6, with the signature of
``gapops.reference.reference_sigmoid_strip``:

    sigmoid_strip(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale, bias,
                  offset, g_row, want_loss, want_grads, deterministic)
        -> (row_loss [n], grad_a [n, d], grad_b [m, d], grad_scale 0-dim, grad_bias 0-dim)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import _auto_table, _extension
from ._dtypes import triton_interpreted


@dataclass(frozen=True)
class Backend:
    name: str
    device_types: tuple
    # () -> None when usable, else a sentence saying why not
    why_unavailable: Callable[[], Optional[str]]
    # () -> (strip_forward, strip_backward); imported lazily so `import gapops` stays light
    kernels: Callable[[], tuple]
    # () -> sigmoid_strip, imported lazily too
    sigmoid_kernel: Callable[[], Callable]
    # () -> None when this build has the sigmoid strip, else why not (asked after why_unavailable)
    sigmoid_missing: Callable[[], Optional[str]]


LOSSES = ("softmax", "sigmoid")


def _reference_kernels():
    from .reference import reference_strip_backward, reference_strip_forward
    return reference_strip_forward, reference_strip_backward


def _reference_sigmoid():
    from .reference import reference_sigmoid_strip
    return reference_sigmoid_strip


def _native_kernels():
    _extension.load()  # registers torch.ops.gapops.strip_* as a side effect
    return torch.ops.gapops.strip_forward, torch.ops.gapops.strip_backward


def _native_sigmoid():
    _extension.load()
    return torch.ops.gapops.sigmoid_strip


def _native_sigmoid_missing(dispatch_key: str) -> Callable[[], Optional[str]]:
    def why() -> Optional[str]:
        if _extension.has_kernel("sigmoid_strip", dispatch_key):
            return None
        return f"this build of gapops._C has no {dispatch_key} kernel of the sigmoid strip"
    return why


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
    from .triton_strip import strip_backward, strip_forward
    return strip_forward, strip_backward


def _triton_sigmoid():
    from .triton.sigmoid import sigmoid_strip
    return sigmoid_strip


def _triton_sigmoid_missing() -> Optional[str]:
    try:
        _triton_sigmoid()
    except ImportError as e:
        return f"the Triton sigmoid strip is not importable ({e})"
    return None


BACKENDS = {
    "reference": Backend("reference", ("cpu", "cuda"), lambda: None, _reference_kernels,
                         _reference_sigmoid, lambda: None),
    "cpu": Backend("cpu", ("cpu",), _cpu_unavailable, _native_kernels, _native_sigmoid,
                   _native_sigmoid_missing("CPU")),
    "triton": Backend("triton", ("cuda", "cpu"), _triton_unavailable, _triton_kernels,
                      _triton_sigmoid, _triton_sigmoid_missing),
    "cuda": Backend("cuda", ("cuda",), _cuda_unavailable, _native_kernels, _native_sigmoid,
                    _native_sigmoid_missing("CUDA")),
}

# 'auto' tries these in order for each device type; on a GPU the measured table of
# gapops/_auto_table.py comes first (auto_gpu_backend), and this order is its fallback.
AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": _auto_table.DEFAULT_ORDER}


def _why_not(be: Backend, loss: str) -> Optional[str]:
    """None when ``be`` can compute ``loss`` here, else a sentence saying why not."""
    return be.why_unavailable() or (be.sigmoid_missing() if loss == "sigmoid" else None)


def backends(loss: str = "softmax") -> dict:
    """Each backend's status for ``loss`` ('softmax': contrastive_loss, 'sigmoid': sigmoid_loss):
    {"reference": "available", "triton": "<why not>", ...}."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return {name: (_why_not(be, loss) or "available") for name, be in BACKENDS.items()}


def known_backend(name: str) -> None:
    """ValueError unless ``name`` is 'auto' or a backend of the table (availability aside)."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"backend={name!r} is unknown; choose one of "
                         f"{['auto', *BACKENDS]}")


def auto_gpu_backend(loss: str, dtype: Optional[torch.dtype], n: Optional[int]) -> Backend:
    """'auto' on a GPU: the measured table's choice for (loss, dtype, N) among the backends that
    can compute ``loss`` here."""
    usable = [b for b in AUTO_ORDER["cuda"] if _why_not(BACKENDS[b], loss) is None]
    key = _auto_table.dtype_key(str(dtype), torch.backends.cuda.matmul.allow_tf32) if dtype else ""
    return BACKENDS[_auto_table.choose(_auto_table.MEASURED, loss, key, n, usable)]


def resolve(name: str, device: torch.device, loss: str = "softmax", *,
            dtype: Optional[torch.dtype] = None, n: Optional[int] = None) -> Backend:
    """The backend called ``name`` ('auto' picks one) computing ``loss`` for features on
    ``device``, or a ValueError / RuntimeError saying why not. For 'auto' on a GPU, the features'
    ``dtype`` and the batch ``n`` select the row of the measured table (gapops/_auto_table.py)."""
    if name == "auto":
        if device.type == "cuda":
            return auto_gpu_backend(loss, dtype, n)
        for candidate in AUTO_ORDER.get(device.type, ("reference",)):
            be = BACKENDS[candidate]
            if _why_not(be, loss) is None:
                return be
        return BACKENDS["reference"]
    known_backend(name)
    be = BACKENDS[name]
    if device.type not in be.device_types:
        raise ValueError(f"backend={name!r} does not run on {device.type} tensors "
                         f"(it runs on {', '.join(be.device_types)})")
    if name == "triton" and device.type == "cpu" and not triton_interpreted():
        raise ValueError("backend='triton' runs on CPU tensors only under TRITON_INTERPRET=1")
    why = _why_not(be, loss)
    if why:
        raise RuntimeError(f"backend={name!r} is not available: {why}")
    return be


def strip_kernels(name: str) -> tuple:
    """(strip_forward, strip_backward) of backend ``name`` (already resolved)."""
    return BACKENDS[name].kernels()


def sigmoid_kernel(name: str) -> Callable:
    """sigmoid_strip of backend ``name`` (already resolved for the sigmoid loss)."""
    return BACKENDS[name].sigmoid_kernel()
