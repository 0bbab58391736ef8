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


# ---------------------------------------------------------------------------------------------
# strips (docs/design.md section 2.1): the makers every backend's strip tests share

def make_strip(n, m, d, offset, dtype, seed, device, swap_rows=False, swap_cols=False,
               normalize=True, strided=False, scale=20.0, aligned=0.5):
    """Random strip arguments (in dtype) whose positives are correlated with their rows."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(m, d, generator=g, dtype=torch.float64)
    b_alt = torch.randn(m, d, generator=g, dtype=torch.float64)
    a = aligned * b[offset:offset + n] + torch.randn(n, d, generator=g, dtype=torch.float64)
    a_alt = aligned * b_alt[offset:offset + n] + torch.randn(n, d, generator=g, dtype=torch.float64)
    a_swap = (torch.rand(n, generator=g) < 0.4) if swap_rows else None
    b_swap = (torch.rand(m, generator=g) < 0.4) if swap_cols else None
    feats = [t.to(dtype) for t in (a, a_alt, b, b_alt)]
    if strided:  # every other column of a wider tensor, and a transposed copy
        feats[0] = torch.cat([feats[0], feats[0]], 1)[:, ::2]
        feats[2] = feats[2].T.contiguous().T
    return dict(feats=feats, a_swap=a_swap, b_swap=b_swap, normalize=normalize,
                scale=torch.tensor(scale, dtype=torch.float64), offset=offset, device=device)


def _with_strides(t, dtype, device):
    """t in dtype on device, keeping its strides."""
    return torch.empty_strided(t.size(), t.stride(), dtype=dtype, device=device).copy_(t)


def strip_args(case, acc):
    """Positional arguments of strip_forward for the backend (acc) or the oracle (float64)."""
    dev = case["device"]
    a, a_alt, b, b_alt = case["feats"]
    a_swap, b_swap, off = case["a_swap"], case["b_swap"], case["offset"]
    A = a.double() if a_swap is None else torch.where(a_swap[:, None], a_alt.double(), a.double())
    B = b.double() if b_swap is None else torch.where(b_swap[:, None], b_alt.double(), b.double())
    if case["normalize"]:
        ra, rb = 1 / A.norm(dim=1).clamp_min(1e-12), 1 / B.norm(dim=1).clamp_min(1e-12)
    else:
        ra, rb = torch.ones(A.shape[0], dtype=torch.float64), torch.ones(B.shape[0], dtype=torch.float64)
    cos = ra[:, None] * (A @ B.T) * rb[None, :]
    n = A.shape[0]
    a_pos = cos[torch.arange(n), torch.arange(n) + off]
    b_pos = torch.zeros(B.shape[0], dtype=torch.float64)  # columns whose positive is elsewhere:
    b_pos[off:off + n] = a_pos                              # any shift, here 0
    # the backend gets the rounded inputs; the oracle the same values in float64; both with the
    # features' strides (.to() / .double() of a non-dense view would make it contiguous)
    feats = [_with_strides(t, torch.float64 if acc == torch.float64 else t.dtype, dev)
             for t in (a, a_alt, b, b_alt)]
    to = dict(device=dev, dtype=acc)
    mask = lambda m: None if m is None else m.to(dev)  # noqa: E731
    return (feats[0], feats[1], mask(a_swap), feats[2], feats[3], mask(b_swap), ra.to(**to),
            rb.to(**to), a_pos.to(**to), b_pos.to(**to), case["scale"].to(**to), off)


def assert_close(got, want, tol, what, scale_floor=0.0):
    """Relative errors; grad_scale's is measured against max(|value|, scale_floor), since with
    d = 1 every cosine is +-1 and the exact value vanishes, leaving the norms' rounding."""
    for name, gv, wv in zip(what, got, want):
        assert gv.dtype in (torch.float32, torch.float64), f"{name}: dtype {gv.dtype}"
        finite = torch.isfinite(wv)
        assert torch.equal(torch.isfinite(gv.cpu()), finite), f"{name}: finiteness differs"
        g_, w_ = gv.cpu().double()[finite], wv[finite]
        floor = scale_floor if name == "grad_scale" else 1e-7 * w_.numel() ** 0.5
        err = float((g_ - w_).norm() / max(float(w_.norm()), floor))
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


STRIPS = [  # (n, m, d, offset)
    (1, 1, 1, 0), (1, 5, 3, 4), (6, 6, 1, 0), (17, 40, 33, 9), (65, 65, 70, 0), (130, 257, 19, 127),
]




def tune_under_interpreter(monkeypatch, interpreter_configs):
    """Makes the Triton interpreter take the autotuning path (gapops/triton/configs.py) with
    ``interpreter_configs`` ({kind: [Config, ...]}) and a stub timer under which the config
    benchmarked last wins, so earlier configs' leftovers sit in the live buffers (issue 10,
    defect 1). Skips on a GPU, where the real tuning path runs. Returns the list of timed calls."""
    import pytest

    from gapops.triton import configs
    if not triton_interpreted():
        pytest.skip("interpreter-only: on a GPU the real tuning path runs")
    calls = []

    def stub_bench(kernel_call, quantiles=None):
        kernel_call()
        calls.append(1)
        t = 1.0 / len(calls)  # later configs are "faster"
        return [t, t, t] if quantiles else t

    monkeypatch.setattr(configs.Tuning, "do_bench", stub_bench)
    monkeypatch.setattr(configs.Tuning, "interpreter_configs", interpreter_configs)
    monkeypatch.setattr(configs, "_tuners", {})
    return calls
