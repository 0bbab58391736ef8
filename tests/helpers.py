"""Test helpers: tolerances, random inputs, the float64 oracle with its three gradients, and
where each backend runs. Every test module imports from here (never from conftest)."""
import torch

from gapops._dtypes import triton_interpreted

from gapops.reference import reference_contrastive_loss

# Relative tolerances (norm of the error / norm of the float64 value) per input dtype.
TOL = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (1e-5, 1e-4),
    torch.bfloat16: (1e-2, 2e-2),
    torch.float16: (1e-2, 2e-2),
}


def rand_inputs(n, d, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 0.5 * x + torch.randn(n, d, generator=g, dtype=torch.float64)  # correlated pairs
    s = torch.tensor(float(torch.empty(()).uniform_(5, 50, generator=g)), dtype=torch.float64)
    return x.to(device), y.to(device), s.to(device)


def rel_err(got, want):
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).norm() / want.norm().clamp_min(1e-30)) if want.numel() else 0.0


def loss_and_grads(fn, x, y, s, dtype, upstream=None, **kw):
    """Runs fn on copies of (x, y, s) cast to dtype; returns (loss, dx, dy, ds) in float64."""
    xs = x.detach().to(dtype).requires_grad_()
    ys = y.detach().to(dtype).requires_grad_()
    ss = s.detach().to(torch.float32 if dtype != torch.float64 else dtype).requires_grad_()
    loss = fn(xs, ys, ss, **kw)
    out = loss if upstream is None else (loss * upstream.to(loss)).sum()
    dx, dy, ds = torch.autograd.grad(out, (xs, ys, ss))
    return loss.detach().double(), dx.double(), dy.double(), ds.double()


def oracle(x, y, s, upstream=None, **kw):
    return loss_and_grads(reference_contrastive_loss, x, y, s, torch.float64, upstream, **kw)


# Largest batch each backend is exercised with on this machine (the interpreter is slow).
MAX_ROWS = {"reference": 3000, "cpu": 3000, "triton": 300 if triton_interpreted() else 3000,
            "cuda": 3000}


def device_for(backend: str) -> str:
    """Where a backend's tensors live here: CUDA for cuda (and triton with a GPU), else CPU."""
    if backend == "cuda" or (backend == "triton" and not triton_interpreted()):
        return "cuda"
    return "cpu"


def backend_params(include_reference: bool = True):
    """pytest params, one per backend: skipped with the reason where unavailable, marked gpu
    where it runs on CUDA tensors."""
    import pytest

    import gapops
    status = gapops.backends()
    params = []
    for name in ("reference", "cpu", "triton", "cuda"):
        if name == "reference" and not include_reference:
            continue
        why = status[name]
        marks = [] if why == "available" else [pytest.mark.skip(reason=f"{name}: {why}")]
        if device_for(name) == "cuda":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(name, marks=marks, id=name))
    return params
