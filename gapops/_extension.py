"""Loads the compiled extension (gapops._C) once, at import, and remembers why it failed.

The result is kept in plain module globals rather than behind a cache decorator so that
torch.compile can trace the backend choice without calling into importlib or pybind.
"""
from __future__ import annotations

import importlib

import torch  # (also: the extension links against torch's libraries)


def _import():
    try:
        mod = importlib.import_module("gapops._C")
    except ImportError as e:  # not built, or built against another torch
        return None, (f"the compiled extension gapops._C is not importable ({e}); "
                      "build it with `pip install --no-build-isolation -e .`"), {}
    return mod, None, dict(mod.build_info())


_MODULE, _WHY, _BUILD_INFO = _import()


def _kernel_keys(op: str) -> frozenset:
    """The dispatch keys ('CPU', 'CUDA') that have a kernel of the extension's op ``op``."""
    if _MODULE is None:
        return frozenset()
    try:
        return frozenset(key for key in ("CPU", "CUDA")
                         if torch._C._dispatch_has_kernel_for_dispatch_key(f"gapops::{op}", key))
    except RuntimeError:  # an extension built before the op's schema existed
        return frozenset()


# Looked up once here: torch.compile traces the backend choice, and cannot trace into torch._C.
_KERNELS = {op: _kernel_keys(op) for op in ("strip_forward", "sigmoid_strip")}


def load():
    """(module, None) when gapops._C imported, else (None, reason)."""
    return _MODULE, _WHY


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the compiled op gapops::<op> ('strip_forward', 'sigmoid_strip') has a kernel for
    ``dispatch_key`` ('CPU' or 'CUDA') in this build."""
    return dispatch_key in _KERNELS.get(op, ())


def build_info() -> dict:
    """What the extension was built with: {'built', 'cpu', 'cuda', 'cuda_archs', 'cpu_simd', 'torch'}."""
    if _MODULE is None:
        return {"built": False, "why": _WHY}
    return {"built": True, **_BUILD_INFO}
