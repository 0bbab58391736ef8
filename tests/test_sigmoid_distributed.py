"""The sigmoid loss over torch.distributed on gloo, 2 and 3 processes (docs/distributed.md).

- gapops.sigmoid_loss(group=...) against the float64 naive form and single-process gapops on the
  global batch: every rank returns the global loss ('none': its own rows against every column);
  autograd through the collectives is exact for the sum over ranks of the ranks' objectives.
- gapops.SigmoidLoss(rank, world_size, dist_impl) against open_clip's SigLipLoss with the same
  arguments, run in the same processes, for every dist_impl: each rank's value and the gradients
  of its features, logit_scale and logit_bias; and data-parallel training steps (gradients
  averaged over ranks, as DDP does) that keep the same weights after every step, which are also
  the single-process SigLipLoss's on the global batch.

Each world size is its own spawn: open_clip's SigLipLoss exchanges features with global ranks
on the default group, so it cannot run on a subgroup.
"""
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import gapops
from distributed_helpers import run_worlds
from helpers import loss_and_grads, rel_err, scenario_id, sigmoid_oracle, train_steps

open_clip = pytest.importorskip("open_clip")
from open_clip.loss import SigLipLoss  # noqa: E402

D = 16
COUNTS = {2: {"equal": [7, 7], "unequal": [5, 9]}, 3: {"equal": [6, 6, 6], "unequal": [4, 1, 8]}}
BACKENDS = [b for b in ("cpu", "reference") if gapops.backends("sigmoid")[b] == "available"]
DIST_IMPLS = ("bidir", "shift", "reduce", "gather")
STEPS = 3

# (backend, dtype, reduction, counts kind, swap)
SCENARIOS = []
for _be in BACKENDS:
    SCENARIOS += [
        (_be, torch.float32, "mean", "equal", False),
        (_be, torch.float64, "mean", "unequal", True),
        (_be, torch.float32, "none", "equal", True),
        (_be, torch.float64, "none", "unequal", False),
        (_be, torch.float32, "sum", "unequal", True),
    ]


def global_inputs(counts, seed=0):
    """The global batch (float64): x, y, logit_scale, logit_bias, swap mask, row weights."""
    g = torch.Generator().manual_seed(seed + 1000 * len(counts) + sum(counts))
    n = sum(counts)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = 0.5 * x + torch.randn(n, D, generator=g, dtype=torch.float64)
    s = torch.tensor(float(torch.empty(()).uniform_(5, 20, generator=g)), dtype=torch.float64)
    b = -0.6 * s
    return x, y, s, b, torch.rand(n, generator=g) < 0.4, torch.rand(n, generator=g,
                                                                   dtype=torch.float64)


def local_slice(t, counts, rank):
    o = sum(counts[:rank])
    return t[o:o + counts[rank]]


# --------------------------------------------------------------------------------------------
# worker side


def _run_scenario(sc, rank, world, group):
    be, dtype, red, kind, swap = sc
    counts = COUNTS[world][kind]
    x, y, s, b, mask, w = global_inputs(counts)
    xl, yl, ml, wl = (local_slice(t, counts, rank) for t in (x, y, mask, w))
    fn = lambda *a: gapops.sigmoid_loss(  # noqa: E731
        *a, swap_mask=ml if swap else None, reduction=red, backend=be, group=group)
    return loss_and_grads(fn, xl, yl, s, dtype, wl if red == "none" else None, bias=b)


def _open_clip_siglip(crit):
    return lambda x, y, s, b: crit(F.normalize(x, dim=1), F.normalize(y, dim=1), s, b)


def _run_modules(rank, world):
    """SigLipLoss and SigmoidLoss with the same arguments, every dist_impl, float64; and
    SigmoidLoss on unequal local batches (open_clip needs equal ones)."""
    res = {}
    counts = COUNTS[world]["equal"]
    x, y, s, b, _, _ = global_inputs(counts, seed=7)
    xl, yl = local_slice(x, counts, rank), local_slice(y, counts, rank)
    for impl in DIST_IMPLS:
        ref = SigLipLoss(rank=rank, world_size=world, dist_impl=impl)
        res["open_clip", impl] = loss_and_grads(_open_clip_siglip(ref), xl, yl, s, torch.float64,
                                                bias=b)
        for be in BACKENDS:
            crit = gapops.SigmoidLoss(rank=rank, world_size=world, dist_impl=impl, backend=be)
            res[be, impl] = loss_and_grads(crit, xl, yl, s, torch.float64, bias=b)
    counts = COUNTS[world]["unequal"]
    x, y, s, b, _, _ = global_inputs(counts, seed=8)
    xl, yl = local_slice(x, counts, rank), local_slice(y, counts, rank)
    for be in BACKENDS:
        crit = gapops.SigmoidLoss(rank=rank, world_size=world, backend=be)
        res[be, "unequal"] = loss_and_grads(crit, xl, yl, s, torch.float64, bias=b)
    return res


class TwoTowers(torch.nn.Module):
    def __init__(self, d_in=12):
        super().__init__()
        torch.manual_seed(0)
        self.img = torch.nn.Linear(d_in, D, dtype=torch.float64)
        self.txt = torch.nn.Linear(d_in, D, dtype=torch.float64)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.3, dtype=torch.float64))
        self.logit_bias = torch.nn.Parameter(torch.tensor(-10.0, dtype=torch.float64))

    def forward(self, u, v):
        return (F.normalize(self.img(u), dim=1), F.normalize(self.txt(v), dim=1),
                self.logit_scale.exp(), self.logit_bias)


def ddp_batch(world, step, d_in=12):
    g = torch.Generator().manual_seed(99 + step)
    n = sum(COUNTS[world]["equal"])
    u = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    return u, 0.3 * u + torch.randn(n, d_in, generator=g, dtype=torch.float64)


def train(model, crit, batches, sync=None):
    """Parameters after each of the SGD steps (tests/helpers.py's train_steps)."""
    return train_steps(model, crit, batches, lr=0.5, sync=sync)[1]


def _run_ddp(rank, world, group):
    """Data-parallel steps: every parameter's gradient averaged over ranks after each backward,
    as DistributedDataParallel does (by hand: building a DDP module imports torch._dynamo, seconds
    per process that this test cannot spare)."""
    counts = COUNTS[world]["equal"]
    batches = [tuple(local_slice(t, counts, rank) for t in ddp_batch(world, k))
               for k in range(STEPS)]

    def sync(grad):
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=group)
        grad /= world
    res = {}
    for impl in DIST_IMPLS:
        ref = SigLipLoss(rank=rank, world_size=world, dist_impl=impl)
        res["open_clip", impl] = train(TwoTowers(), ref, batches, sync)
        for be in BACKENDS:
            crit = gapops.SigmoidLoss(rank=rank, world_size=world, dist_impl=impl, backend=be)
            res[be, impl] = train(TwoTowers(), crit, batches, sync)
    return res


def _run_all(rank, world, group):
    results = {scenario_id(sc): _run_scenario(sc, rank, world, group) for sc in SCENARIOS}
    results["modules"] = _run_modules(rank, world)
    results["ddp"] = _run_ddp(rank, world, group)
    return results


# --------------------------------------------------------------------------------------------
# parent side


@pytest.fixture(scope="module", params=[2, 3], ids=["W2", "W3"])
def world(request):
    w = request.param
    return w, run_worlds(_run_all, w)[w]


def _close(got, want, tol, what):
    err = rel_err(got, want)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def test_function_matches_single_process_global_batch(world):
    w, results = world
    for sc in SCENARIOS:
        be, dtype, red, kind, swap = sc
        counts = COUNTS[w][kind]
        x, y, s, b, mask, wts = global_inputs(counts)
        kw = {"swap_mask": mask} if swap else {}
        upstream = wts if red == "none" else None
        want = sigmoid_oracle(x.to(dtype).double(), y.to(dtype).double(), s, b, upstream,
                              reduction=red, **kw)
        single = loss_and_grads(gapops.sigmoid_loss, x, y, s, dtype, upstream, bias=b,
                                backend=be, reduction=red, **kw)
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        # mean / sum: every rank's objective is the global loss, so the features' gradient is W
        # times the single-process one (DDP divides by W); 'none': exactly the single one
        factor = 1.0 if red == "none" else float(w)
        for ref_name, (loss_w, dx_w, dy_w, ds_w, db_w) in (("oracle", want), ("single", single)):
            what = f"{scenario_id(sc)} vs {ref_name}"
            for r, res in enumerate(results):
                loss_g, dx_g, dy_g, _, _ = res[scenario_id(sc)]
                wl = local_slice(loss_w, counts, r) if red == "none" else loss_w
                _close(loss_g, wl, tol, f"{what}: rank {r} loss")
                _close(dx_g, factor * local_slice(dx_w, counts, r), tol, f"{what}: rank {r} dx")
                _close(dy_g, factor * local_slice(dy_w, counts, r), tol, f"{what}: rank {r} dy")
            for k, name, want_k in ((3, "d logit_scale", ds_w), (4, "d logit_bias", db_w)):
                total = sum(res[scenario_id(sc)][k] for res in results)
                _close(total, factor * want_k, tol, f"{what}: sum over ranks of {name}")


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("impl", DIST_IMPLS)
def test_module_matches_open_clip_siglip_loss(world, be, impl):
    """Each rank: the same value (its rows against every column / its n) and the same gradients
    of its features, logit_scale and logit_bias as SigLipLoss with the same arguments."""
    w, results = world
    names = ("loss", "d image", "d text", "d logit_scale", "d logit_bias")
    for r, res in enumerate(results):
        for name, g, want in zip(names, res["modules"][be, impl], res["modules"]["open_clip", impl]):
            _close(g, want, 1e-10, f"rank {r} {name}")


def test_open_clip_dist_impls_agree_with_the_global_batch(world):
    """The reference point itself: open_clip's dist_impls give, summed over ranks, the single-
    process SigLipLoss gradient of the global batch (times W, as each rank divides by n = N/W)."""
    w, results = world
    counts = COUNTS[w]["equal"]
    x, y, s, b, _, _ = global_inputs(counts, seed=7)
    want = loss_and_grads(lambda *a: SigLipLoss()(*(F.normalize(t, dim=1) for t in a[:2]), *a[2:]),
                          x, y, s, torch.float64, bias=b)
    for impl in DIST_IMPLS:
        got = [res["modules"]["open_clip", impl] for res in results]
        _close(sum(g[0] for g in got) / w, want[0], 1e-12, f"{impl}: mean of the ranks' values")
        _close(torch.cat([g[1] for g in got]), w * want[1], 1e-10, f"{impl}: d image")
        _close(torch.cat([g[2] for g in got]), w * want[2], 1e-10, f"{impl}: d text")
        _close(sum(g[3] for g in got), w * want[3], 1e-10, f"{impl}: d logit_scale")
        _close(sum(g[4] for g in got), w * want[4], 1e-10, f"{impl}: d logit_bias")


@pytest.mark.parametrize("be", BACKENDS)
def test_module_on_unequal_local_batches(world, be):
    """Rank r returns sum_{i local, all j} / n_r; autograd through the collectives differentiates
    the sum over ranks, sum_i rows_i / n_{rank(i)}: the oracle with those row weights."""
    w, results = world
    counts = COUNTS[w]["unequal"]
    x, y, s, b, _, _ = global_inputs(counts, seed=8)
    weights = torch.cat([torch.full((c,), 1.0 / c, dtype=torch.float64) for c in counts])
    rows, dx, dy, ds, db = sigmoid_oracle(x, y, s, b, weights, reduction="none")
    for r, res in enumerate(results):
        loss, dx_g, dy_g, _, _ = res["modules"][be, "unequal"]
        _close(loss, local_slice(rows, counts, r).sum() / counts[r], 1e-12, f"rank {r} value")
        _close(dx_g, local_slice(dx, counts, r), 1e-10, f"rank {r} d image")
        _close(dy_g, local_slice(dy, counts, r), 1e-10, f"rank {r} d text")
    _close(sum(res["modules"][be, "unequal"][3] for res in results), ds, 1e-10, "d logit_scale")
    _close(sum(res["modules"][be, "unequal"][4] for res in results), db, 1e-10, "d logit_bias")


@pytest.mark.parametrize("impl", DIST_IMPLS)
def test_data_parallel_steps_keep_open_clips_weights(world, impl):
    """After every step: gapops's weights == open_clip's (same dist_impl) == the single-process
    SigLipLoss's on the global batch, on every rank."""
    w, results = world
    single = train(TwoTowers(), SigLipLoss(), [ddp_batch(w, k) for k in range(STEPS)])
    for r, res in enumerate(results):
        for k in range(STEPS):
            want = res["ddp"]["open_clip", impl][k]
            _close(want, single[k], 1e-10, f"rank {r} step {k}: open_clip vs single process")
            for be in BACKENDS:
                _close(res["ddp"][be, impl][k], want, 1e-10, f"rank {r} step {k}: {be}")
