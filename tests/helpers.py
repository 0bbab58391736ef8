"""Test helpers: random inputs and the float64 oracle with its three gradients."""
import torch

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
