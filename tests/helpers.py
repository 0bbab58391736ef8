"""Test helpers: tolerances, random inputs, the float64 oracles with their gradients, and
where each backend runs. Every test module imports from here (never from conftest)."""
import torch

from gapops._dtypes import triton_interpreted
from gapops.reference import reference_contrastive_loss, reference_sigmoid_loss

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


SWAP_KINDS = ["none_false", "all_true", "random"]


def make_swap_mask(kind, n, device, seed=5):
    """A swap mask [n] of one kind: all False, all True, or ~40% True at random."""
    g = torch.Generator().manual_seed(seed)
    mask = {"none_false": lambda: torch.zeros(n, dtype=torch.bool),
            "all_true": lambda: torch.ones(n, dtype=torch.bool),
            "random": lambda: torch.rand(n, generator=g) < 0.4}[kind]()
    return mask.to(device)


def scenario_id(sc):
    """Test id of a distributed scenario (backend, dtype, reduction, counts kind, swap)."""
    be, dt, red, kind, swap = sc
    return f"{be}-{str(dt)[6:]}-{red}-{kind}{'-swap' if swap else ''}"


def train_steps(model, crit, batches, lr, sync=None):
    """SGD steps of ``crit(*model(*batch))`` (a dict with "contrastive_loss" from open_clip's
    trainer form is unwrapped); sync(grad) averages a gradient over ranks (DDP's all_reduce / W).
    Returns (the losses, the flattened parameters after every step)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses, after = [], []
    for batch in batches:
        opt.zero_grad()
        out = model(*batch)
        loss = crit(**out, output_dict=True)["contrastive_loss"] if isinstance(out, dict) \
            else crit(*out)
        loss.backward()
        if sync is not None:
            for p in model.parameters():
                sync(p.grad)
        opt.step()
        losses.append(float(loss.detach()))
        after.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    return losses, after


def rel_err(got, want):
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).norm() / want.norm().clamp_min(1e-30)) if want.numel() else 0.0


def loss_and_grads(fn, x, y, s, dtype, upstream=None, bias=None, **kw):
    """Runs fn on copies of (x, y, s), and bias when given, cast to dtype (the scalars to fp32 at
    least); returns (loss, dx, dy, ds), and d bias when given, in float64."""
    xs = x.detach().to(dtype).requires_grad_()
    ys = y.detach().to(dtype).requires_grad_()
    scalar_dtype = torch.float32 if dtype != torch.float64 else dtype
    args = [xs, ys] + [torch.as_tensor(t).detach().to(scalar_dtype).requires_grad_()
                       for t in (s, bias) if t is not None]
    loss = fn(*args, **kw)
    out = loss if upstream is None else (loss * upstream.to(loss)).sum()
    grads = torch.autograd.grad(out, args)
    return (loss.detach().double(), *(g.double() for g in grads))


LOSS_GRAD_NAMES = ("loss", "d image_features", "d text_features", "d logit_scale",
                   "d logit_bias")


def assert_loss_and_grads_close(got, want, dtype, s, what):
    """got vs want, (loss, dx, dy, ds[, d bias]) as loss_and_grads returns them: finite, and
    within TOL[dtype] relative error (loss, then gradients)."""
    tol_loss, tol_grad = TOL[dtype]
    for k, (name, g, w) in enumerate(zip(LOSS_GRAD_NAMES, got, want)):
        tol = tol_loss if k == 0 else tol_grad
        assert torch.isfinite(g).all(), f"{what} {dtype}: non-finite {name}"
        if w.norm() < 1e-8:  # d == 1: the exact gradient through normalize is 0
            err = float((g - w).norm()) / (float(s) * g.numel() ** 0.5)
        else:
            err = rel_err(g, w)
        assert err <= tol, f"{what} {dtype}: {name} relative error {err:.2e} > {tol:.0e}"


def oracle(x, y, s, upstream=None, **kw):
    return loss_and_grads(reference_contrastive_loss, x, y, s, torch.float64, upstream, **kw)


def sigmoid_oracle(x, y, s, b, upstream=None, **kw):
    """The float64 naive sigmoid loss and its four gradients (x, y, logit_scale, logit_bias)."""
    return loss_and_grads(reference_sigmoid_loss, x, y, s, torch.float64, upstream, bias=b, **kw)


# Largest batch each backend is exercised with on this machine (the interpreter is slow).
MAX_ROWS = {"reference": 3000, "cpu": 3000, "triton": 300 if triton_interpreted() else 3000,
            "cuda": 3000}


def device_for(backend: str) -> str:
    """Where a backend's tensors live here: CUDA for cuda (and triton with a GPU), else CPU."""
    if backend == "cuda" or (backend == "triton" and not triton_interpreted()):
        return "cuda"
    return "cpu"


def backend_params(include_reference: bool = True, loss: str = "softmax"):
    """pytest params, one per backend: skipped with the reason where unavailable for ``loss``
    ('softmax' or 'sigmoid'), marked gpu where it runs on CUDA tensors."""
    import pytest

    import gapops
    status = gapops.backends(loss)
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


# (swap_rows, swap_cols, normalize, strided) of make_strip: the routing / norm / stride variants
ROUTINGS = [(True, False, True, False), (False, True, True, False), (True, True, False, False),
            (True, True, True, True)]

STRIPS = [  # (n, m, d, offset)
    (1, 1, 1, 0), (1, 5, 3, 4), (6, 6, 1, 0), (17, 40, 33, 9), (65, 65, 70, 0), (130, 257, 19, 127),
]




class intra_op_threads:
    """torch's intra-op thread count set to n inside the block (the CPU backends' determinism
    tests run the same call under several)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


# ---------------------------------------------------------------------------------------------
# a real (tiny) open_clip model for the drop-in tests

def tiny_open_clip(seed, logit_bias):
    """open_clip.CLIP with one layer per tower, returning dicts (the trainer's form);
    ``logit_bias``: its init_logit_bias (None: the model has no bias)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg
    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=16),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1),
        init_logit_bias=logit_bias, output_dict=True)


def open_clip_batch(seed, n=12):
    """Images [n, 3, 16, 16] and token ids [n, 8] for tiny_open_clip."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(1, 64, (n, 8), generator=g)


def model_loss_and_grads(model, crit, images, texts):
    """open_clip's trainer step without the update: (loss, {parameter name: gradient})."""
    model.zero_grad()
    out = crit(**model(images, texts), output_dict=True)
    loss = out["contrastive_loss"]
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


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
