"""Loads the compiled extension (gapops._C) once and remembers why it failed, if it did."""
from __future__ import annotations

import functools
import importlib


@functools.lru_cache(maxsize=None)
def load():
    """Return (module, None) when gapops._C imports, else (None, reason)."""
    try:
        import torch  # noqa: F401  (the extension links against torch's libraries)
        return importlib.import_module("gapops._C"), None
    except ImportError as e:  # not built, or built against another torch
        return None, f"the compiled extension gapops._C is not importable ({e}); " \
                     "build it with `pip install --no-build-isolation -e .`"


def build_info() -> dict:
    """What the extension was built with: {'cpu': bool, 'cuda': bool, 'cuda_archs': str, ...}."""
    mod, why = load()
    if mod is None:
        return {"built": False, "why": why}
    info = dict(mod.build_info())
    info["built"] = True
    return info
