"""Loads the compiled extension (gapops._C) once, at import, and remembers why it failed.

The result is kept in plain module globals rather than behind a cache decorator so that
torch.compile can trace the backend choice without calling into importlib or pybind.
"""
from __future__ import annotations

import importlib

import torch  # noqa: F401  (the extension links against torch's libraries)


def _import():
    try:
        mod = importlib.import_module("gapops._C")
    except ImportError as e:  # not built, or built against another torch
        return None, (f"the compiled extension gapops._C is not importable ({e}); "
                      "build it with `pip install --no-build-isolation -e .`"), {}
    return mod, None, dict(mod.build_info())


_MODULE, _WHY, _BUILD_INFO = _import()


def load():
    """(module, None) when gapops._C imported, else (None, reason)."""
    return _MODULE, _WHY


def build_info() -> dict:
    """What the extension was built with: {'built', 'cpu', 'cuda', 'cuda_archs', 'cpu_simd', 'torch'}."""
    if _MODULE is None:
        return {"built": False, "why": _WHY}
    return {"built": True, **_BUILD_INFO}
