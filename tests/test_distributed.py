"""gapops.distributed on gloo (CPU): 2 and 3 processes against the single-process global batch.

One process group per world size runs every scenario (spawning costs seconds, the scenarios
milliseconds); the workers write their local results to files and the tests compare them here,
in the parent, with the float64 oracle on the global batch and with single-process gapops.

The gradient convention under test (gapops/distributed.py's module doc): every rank's loss is
the global loss; autograd through the collectives is exact for the sum over ranks of the ranks'
objectives, so with reduction='mean' a rank's features get W * dL/dx and the ranks' logit_scale
gradients sum to W * dL/ds; DDP's average then gives the single-process gradients. That is what
open_clip's ClipLoss(local_loss=True, gather_with_grad=True) + DDP gives, checked below against an
inline copy of its math and with a real DistributedDataParallel model.
"""
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import gapops
from distributed_helpers import run_worlds
from helpers import loss_and_grads, oracle, rel_err, scenario_id

D = 16
COUNTS = {  # local batch sizes per world size: equal, unequal
    2: {"equal": [7, 7], "unequal": [5, 9]},
    3: {"equal": [6, 6, 6], "unequal": [4, 1, 8]},
}
BACKENDS = [b for b in ("cpu", "reference") if gapops.backends()[b] == "available"]

# (backend, dtype, reduction, counts kind, swap)
SCENARIOS = []
for _be in BACKENDS:
    SCENARIOS += [
        (_be, torch.float32, "mean", "equal", False),
        (_be, torch.float64, "mean", "equal", True),
        (_be, torch.float32, "none", "equal", True),
        (_be, torch.float32, "sum", "unequal", True),
        (_be, torch.float64, "none", "unequal", False),
        (_be, torch.float32, "mean", "unequal", False),
    ]


def global_inputs(counts, d=D, seed=0):
    """The global batch (float64) every rank derives its slice from: x, y, s, swap mask, weights."""
    g = torch.Generator().manual_seed(seed + 1000 * len(counts) + sum(counts))
    n = sum(counts)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 0.5 * x + torch.randn(n, d, generator=g, dtype=torch.float64)
    s = torch.tensor(float(torch.empty(()).uniform_(5, 20, generator=g)), dtype=torch.float64)
    mask = torch.rand(n, generator=g) < 0.4
    w = torch.rand(n, generator=g, dtype=torch.float64)
    return x, y, s, mask, w


def local_slice(t, counts, rank):
    o = sum(counts[:rank])
    return t[o:o + counts[rank]]


# --------------------------------------------------------------------------------------------
# worker side


def _grads(loss_fn, x, y, s, dtype, upstream):
    xs = x.detach().to(dtype).requires_grad_()
    ys = y.detach().to(dtype).requires_grad_()
    ss = s.detach().to(torch.promote_types(dtype, torch.float32)).requires_grad_()
    out = loss_fn(xs, ys, ss)
    obj = out if upstream is None else (out * upstream.to(out)).sum()
    dx, dy, ds = torch.autograd.grad(obj, (xs, ys, ss))
    return [t.detach().double() for t in (out, dx, dy, ds)]


def _run_scenario(sc, rank, world, group):
    be, dtype, red, kind, swap = sc
    counts = COUNTS[world][kind]
    x, y, s, mask, w = global_inputs(counts)
    xl, yl, ml, wl = (local_slice(t, counts, rank) for t in (x, y, mask, w))
    fn = lambda a, b, sc_: gapops.contrastive_loss(  # noqa: E731
        a, b, sc_, swap_mask=ml if swap else None, reduction=red, backend=be, group=group)
    return _grads(fn, xl, yl, s, dtype, wl if red == "none" else None)


class _AllGatherWithGrad(torch.autograd.Function):
    """torch.distributed.nn.all_gather, which open_clip's gather_features(gather_with_grad=True)
    calls: forward all_gather, backward the SUM-reduce-scatter of the gathered gradients (its
    NCCL path; its gloo path, all_to_all + sum, computes the same but mis-ranks subgroups in
    torch 2.14, so it is written out here)."""

    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        out = t.new_empty((dist.get_world_size(group) * t.shape[0], *t.shape[1:]))
        (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(
            out, t.contiguous(), group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = grad.new_empty((grad.shape[0] // dist.get_world_size(ctx.group), *grad.shape[1:]))
        (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(
            out, grad.contiguous(), group=ctx.group)
        return out, None


def _all_gather_with_grad(t, group):
    return _AllGatherWithGrad.apply(t, group)


def openclip_local_loss(image_features, text_features, logit_scale, rank, group):
    """open_clip ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=any).forward, for
    normalized features, written out: gather both towers with grad, local rows against all
    columns in both directions, labels offset by rank, mean CE both ways / 2."""
    all_image_features = _all_gather_with_grad(image_features, group)
    all_text_features = _all_gather_with_grad(text_features, group)
    logits_per_image = logit_scale * image_features @ all_text_features.T
    logits_per_text = logit_scale * text_features @ all_image_features.T
    n = logits_per_image.shape[0]
    labels = torch.arange(n, device=image_features.device, dtype=torch.long) + n * rank
    return (F.cross_entropy(logits_per_image, labels)
            + F.cross_entropy(logits_per_text, labels)) / 2


def _run_openclip(rank, world, group):
    counts = COUNTS[world]["equal"]
    x, y, s, _, _ = global_inputs(counts, seed=7)
    xl, yl = local_slice(x, counts, rank), local_slice(y, counts, rank)
    res = {}
    for be in BACKENDS:
        res[be] = _grads(lambda a, b, sc_: gapops.contrastive_loss(
            a, b, sc_, backend=be, group=group), xl, yl, s, torch.float64, None)
        crit = gapops.ContrastiveLoss(local_loss=True, gather_with_grad=True, backend=be,
                                      group=group)
        res[be + "-module-local"] = _grads(crit, xl, yl, s, torch.float64, None)
    res["open_clip"] = _grads(lambda a, b, sc_: openclip_local_loss(
        F.normalize(a, dim=1), F.normalize(b, dim=1), sc_, rank, group), xl, yl, s, torch.float64, None)
    return res


class TwoTowers(torch.nn.Module):
    def __init__(self, d_in=12, d=D):
        super().__init__()
        self.img = torch.nn.Linear(d_in, d, dtype=torch.float64)
        self.txt = torch.nn.Linear(d_in, d, dtype=torch.float64)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.3, dtype=torch.float64))

    def forward(self, u, v):
        return self.img(u), self.txt(v), self.logit_scale.exp()


def ddp_inputs(counts, d_in=12):
    g = torch.Generator().manual_seed(99)
    n = sum(counts)
    u = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    v = 0.3 * u + torch.randn(n, d_in, generator=g, dtype=torch.float64)
    return u, v


def _run_ddp(rank, world, group):
    """A data-parallel step: parameter gradients after DDP's averaging, per backend.

    DistributedDataParallel's gradient is the mean over ranks of each rank's local parameter
    gradients (bucketed all_reduce SUM, divided by W); it is done here by hand because building a
    DDP module imports torch._dynamo, seconds per process that this CI test cannot spare.
    """
    counts = COUNTS[world]["equal"]
    u, v = ddp_inputs(counts)
    res = {}
    for be in BACKENDS:
        # gather_with_grad=True: exact; the default (ClipLoss's gather_with_grad=False): the
        # features' gradients are 1/W of that, logit_scale's the full one
        for key, gather_with_grad in ((be, True), (be + "-default", False)):
            torch.manual_seed(0)
            model = TwoTowers()
            crit = gapops.ContrastiveLoss(gather_with_grad=gather_with_grad, backend=be,
                                          distributed=True, group=group)
            img, txt, scale = model(local_slice(u, counts, rank), local_slice(v, counts, rank))
            loss = crit(img, txt, scale)
            loss.backward()
            for p in model.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=group)
                p.grad /= world
            res[key] = {"loss": loss.detach(),
                        **{k: p.grad.detach().clone() for k, p in model.named_parameters()}}
    return res


def _run_bad_inputs(rank, world, group):
    """Ranks that disagree must all raise a ValueError, promptly, and leave the group usable."""
    res = {}
    be = BACKENDS[0]
    cases = {
        "d": lambda: torch.randn(3, D + (rank == world - 1), dtype=torch.float32),
        "dtype": lambda: torch.randn(3, D, dtype=torch.float64 if rank == 0 else torch.float32),
    }
    for name, make in cases.items():
        a = make()
        try:
            gapops.contrastive_loss(a, a.clone(), 10.0, backend=be, group=group)
            res[name] = "no error"
        except ValueError as e:
            res[name] = f"ValueError: {e}"
        except Exception as e:  # noqa: BLE001
            res[name] = f"{type(e).__name__}: {e}"
    # requires_grad on some ranks only: refused too (the backward is collective).
    a = torch.randn(3, D, requires_grad=(rank == 0))
    try:
        gapops.contrastive_loss(a, torch.randn(3, D), 10.0, backend=be, group=group)
        res["grad"] = "no error"
    except ValueError as e:
        res["grad"] = f"ValueError: {e}"
    # The group still works afterwards, and inference under no_grad needs no backward.
    counts = COUNTS[world]["equal"]
    x, y, s, _, _ = global_inputs(counts)
    with torch.no_grad():
        res["after"] = gapops.contrastive_loss(local_slice(x, counts, rank),
                                               local_slice(y, counts, rank), s, backend=be,
                                               group=group)
    return res


SUBGROUP_RANKS = [1, 2]  # the 2-rank world: a subgroup of the 3 processes (group rank != rank)


def _run_all(rank, world, group):
    results = {}
    for sc in SCENARIOS:
        results[scenario_id(sc)] = _run_scenario(sc, rank, world, group)
    results["open_clip"] = _run_openclip(rank, world, group)
    results["ddp"] = _run_ddp(rank, world, group)
    results["bad"] = _run_bad_inputs(rank, world, group)
    return results


@pytest.fixture(scope="module")
def worlds():
    # one 3-process spawn serves both world sizes: WORLD (W = 3), then a 2-rank subgroup
    return run_worlds(_run_all, 3, SUBGROUP_RANKS)


@pytest.fixture(params=[2, 3], ids=["W2", "W3"])
def world(request, worlds):
    return request.param, worlds[request.param]


def _close(got, want, tol, what):
    err = rel_err(got, want)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


@pytest.mark.parametrize("sc", SCENARIOS, ids=[scenario_id(s) for s in SCENARIOS])
def test_matches_single_process_global_batch(world, sc):
    w, results = world
    be, dtype, red, kind, swap = sc
    counts = COUNTS[w][kind]
    x, y, s, mask, wts = global_inputs(counts)
    kw = {"swap_mask": mask} if swap else {}
    upstream = wts if red == "none" else None
    # float64 oracle on the inputs rounded to dtype
    want = oracle(x.to(dtype).double(), y.to(dtype).double(), s, upstream, reduction=red, **kw)
    # single-process gapops, same backend and dtype
    single = loss_and_grads(gapops.contrastive_loss, x, y, s, dtype, upstream, backend=be,
                            reduction=red, **kw)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    # mean / sum: each rank's objective is the global loss, so the features' gradient is W times
    # the single-process one (DDP divides by W); 'none': rank r's objective is sum_i w_i l_i over
    # its pairs, and the sum over ranks is the global weighted sum: gradients exactly single.
    factor = 1.0 if red == "none" else float(w)
    ds_total = sum(res[scenario_id(sc)][3] for res in results)
    for ref in (want, single):  # the float64 oracle, then single-process gapops
        loss_w, dx_w, dy_w, ds_w = ref
        for r, res in enumerate(results):
            loss_g, dx_g, dy_g, _ = res[scenario_id(sc)]
            wl = local_slice(loss_w, counts, r) if red == "none" else loss_w
            _close(loss_g, wl, tol, f"rank {r} loss")
            _close(dx_g, factor * local_slice(dx_w, counts, r), tol, f"rank {r} d image")
            _close(dy_g, factor * local_slice(dy_w, counts, r), tol, f"rank {r} d text")
        _close(ds_total, factor * ds_w, tol, "sum over ranks of d logit_scale")


def test_mean_loss_is_identical_on_every_rank(world):
    w, results = world
    for sc in SCENARIOS:
        if sc[2] == "mean":
            vals = [res[scenario_id(sc)][0] for res in results]
            assert all(torch.equal(v, vals[0]) for v in vals), scenario_id(sc)


@pytest.mark.parametrize("be", BACKENDS)
def test_matches_open_clip_local_loss_gather_with_grad(world, be):
    w, results = world
    for r, res in enumerate(results):
        oc_loss, oc_dx, oc_dy, _ = res["open_clip"]["open_clip"]
        loss, dx, dy, _ = res["open_clip"][be]
        # the feature gradients each rank hands to its towers are open_clip's, exactly
        _close(dx, oc_dx, 1e-10, f"rank {r} d image vs open_clip")
        _close(dy, oc_dy, 1e-10, f"rank {r} d text vs open_clip")
    # open_clip's per-rank value is its local mean; gapops returns their average, the global mean
    oc_mean = sum(res["open_clip"]["open_clip"][0] for res in results) / w
    _close(results[0]["open_clip"][be][0], oc_mean, 1e-12, "global mean vs open_clip")
    # logit_scale: per-rank shares differ (open_clip charges columns to their owner), the sums
    # (hence the DDP averages) agree
    oc_ds = sum(res["open_clip"]["open_clip"][3] for res in results)
    ds = sum(res["open_clip"][be][3] for res in results)
    _close(ds, oc_ds, 1e-10, "sum over ranks of d logit_scale vs open_clip")
    # ContrastiveLoss(local_loss=True, gather_with_grad=True): open_clip's per-rank value too
    for r, res in enumerate(results):
        oc_loss, oc_dx, oc_dy, _ = res["open_clip"]["open_clip"]
        loss, dx, dy, _ = res["open_clip"][be + "-module-local"]
        _close(loss, oc_loss, 1e-12, f"rank {r} local-loss value vs open_clip")
        _close(dx, oc_dx, 1e-10, f"rank {r} local-loss d image vs open_clip")
        _close(dy, oc_dy, 1e-10, f"rank {r} local-loss d text vs open_clip")


@pytest.mark.parametrize("be", BACKENDS)
def test_ddp_gradients_equal_single_process(world, be):
    w, results = world
    counts = COUNTS[w]["equal"]
    u, v = ddp_inputs(counts)
    torch.manual_seed(0)
    model = TwoTowers()
    img, txt, scale = model(u, v)
    loss = gapops.contrastive_loss(img, txt, scale, backend="reference")
    loss.backward()
    for r, res in enumerate(results):
        got = res["ddp"][be]
        _close(got["loss"], loss.detach(), 1e-12, f"rank {r} loss")
        for name, p in model.named_parameters():
            _close(got[name], p.grad, 1e-10, f"rank {r} grad of {name} after DDP averaging")
        # ClipLoss's default (gather_with_grad=False): towers get 1/W, logit_scale the full one
        got = res["ddp"][be + "-default"]
        _close(got["loss"], loss.detach(), 1e-12, f"rank {r} loss (default)")
        for name, p in model.named_parameters():
            want = p.grad if name == "logit_scale" else p.grad / w
            _close(got[name], want, 1e-10, f"rank {r} grad of {name} (ClipLoss default)")


def test_bad_inputs_raise_on_every_rank(world):
    w, results = world
    for r, res in enumerate(results):
        bad = res["bad"]
        assert bad["d"].startswith("ValueError") and "feature size d" in bad["d"], bad["d"]
        assert bad["dtype"].startswith("ValueError") and "dtype" in bad["dtype"], bad["dtype"]
        assert bad["grad"].startswith("ValueError") and "gradients" in bad["grad"], bad["grad"]
    counts = COUNTS[w]["equal"]
    x, y, s, _, _ = global_inputs(counts)
    want = gapops.contrastive_loss(x, y, s, backend="reference")
    for res in results:
        _close(res["bad"]["after"], want, 1e-12, "loss after the refused calls")


def test_needs_initialized_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is initialized in this process")
    from gapops.distributed import distributed_loss_rows
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="init_process_group"):
        distributed_loss_rows(x, x, None, torch.tensor(10.0), True, "reference", False, object())
