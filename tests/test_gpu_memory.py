"""On a GPU the extra memory of a forward+backward is the two gradients plus a bounded strip.

N = 65536, d = 1024 in fp32: the two gradients are 512 MiB, the N x N logits would be 16 GiB, one
more [N, d] copy would be 256 MiB; the allowance beyond the gradients is the G-strip scratch
budget (set to 256 MiB here) plus 320 MiB (O(N) statistics, chunked O(N·d) temporaries of
docs/design.md section 2.3).
"""
import pytest
import torch

import gapops
from helpers import backend_params

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GPU_BACKENDS = [p for p in backend_params(include_reference=False) if p.values[0] != "cpu"]
SCRATCH_MB = 256  # the G-strip scratch budget set for this test (default: 2048 MiB)
ALLOWANCE = (SCRATCH_MB + 320) * 2**20


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("swap", [False, True], ids=["plain", "swap"])
def test_extra_allocation_is_the_gradients_plus_a_strip(backend, swap, monkeypatch):
    monkeypatch.setenv("GAPOPS_TRITON_GSTRIP_MB", str(SCRATCH_MB))
    monkeypatch.setenv("GAPOPS_CUDA_SCRATCH_MB", str(SCRATCH_MB))
    n, d = 65536, 1024
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, d, device="cuda", generator=g).requires_grad_()
    y = torch.randn(n, d, device="cuda", generator=g).requires_grad_()
    s = torch.tensor(20.0, device="cuda", requires_grad=True)
    mask = (torch.rand(n, device="cuda", generator=g) < 0.3) if swap else None
    gapops.contrastive_loss(x[:256], y[:256], s, backend=backend).backward()  # compile, warm up
    x.grad = y.grad = s.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    gapops.contrastive_loss(x, y, s, swap_mask=mask, backend=backend).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    grads = 2 * n * d * 4
    assert extra <= grads + ALLOWANCE, (f"{backend}: {extra / 2**20:.0f} MiB extra, "
                                        f"{grads / 2**20:.0f} MiB of it the gradients")
