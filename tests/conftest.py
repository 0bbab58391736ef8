"""Shared fixtures: which backends run here, and at what sizes.

Without a GPU the Triton kernels run on the CPU through the Triton interpreter, which must be
switched on before triton compiles anything, hence the environment variable set at import.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import backend_params  # noqa: E402


BACKENDS = backend_params()
SIGMOID_BACKENDS = backend_params(loss="sigmoid")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=SIGMOID_BACKENDS)
def sigmoid_backend(request):
    """Each backend with its sigmoid strip (skipped, with the reason, where it has none)."""
    return request.param
