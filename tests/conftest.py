"""Shared fixtures: which backends run here, and at what sizes.

Without a GPU the Triton kernels run on the CPU through the Triton interpreter, which must be
switched on before triton compiles anything, hence the environment variable set at import.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import gapops  # noqa: E402
from gapops import _dispatch  # noqa: E402

# Largest batch each backend is exercised with on this machine (the interpreter is slow).
MAX_ROWS = {"reference": 3000, "cpu": 3000, "triton": 300 if _dispatch.triton_interpreted() else 3000,
            "cuda": 3000}


def device_for(backend: str) -> str:
    if backend == "cuda" or (backend == "triton" and not _dispatch.triton_interpreted()):
        return "cuda"
    return "cpu"


def _backend_params():
    status = gapops.backends()
    params = []
    for name in ("reference", "cpu", "triton", "cuda"):
        why = status[name]
        marks = [] if why == "available" else [pytest.mark.skip(reason=f"{name}: {why}")]
        if device_for(name) == "cuda":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


BACKENDS = _backend_params()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param
