"""pair_ids and label_smoothing over torch.distributed on gloo, 2 and 3 processes, with same-ID
pairs on different ranks: each rank's value and gradients against the float64 oracle of the
global batch (docs/distributed.md's convention: the features receive the gradient of the sum over
ranks of every rank's objective, logit_scale / logit_bias each rank's share)."""
import pytest
import torch

import gapops
from distributed_helpers import run_worlds
from gapops.reference import reference_contrastive_loss_ids, reference_sigmoid_loss_ids
from helpers import loss_and_grads, rel_err

D = 12
COUNTS = {2: [6, 9], 3: [5, 1, 7]}
BACKENDS = [b for b in ("cpu", "reference") if gapops.backends()[b] == "available"]
# (loss, backend, dtype, reduction, label_smoothing)
SCENARIOS = []
for _be in BACKENDS:
    SCENARIOS += [("softmax", _be, torch.float64, "mean", 0.0),
                  ("softmax", _be, torch.float32, "none", 0.1),
                  ("softmax", _be, torch.float64, "sum", 0.2),
                  ("sigmoid", _be, torch.float64, "mean", 0.0),
                  ("sigmoid", _be, torch.float32, "none", 0.0)]


def scenario_name(sc):
    loss, be, dt, red, eps = sc
    return f"{loss}-{be}-{str(dt)[6:]}-{red}-eps{eps}"


def global_inputs(counts):
    """The global batch (float64) with IDs whose groups span ranks: x, y, s, b, mask, ids, w."""
    g = torch.Generator().manual_seed(len(counts))
    n = sum(counts)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = 0.5 * x + torch.randn(n, D, generator=g, dtype=torch.float64)
    ids = torch.randint(0, n // 3, (n,), generator=g)  # ~3 pairs per ID, on any rank
    ids[-1] = 10_000  # and one ID of its own
    return (x, y, torch.tensor(9.0, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64),
            torch.rand(n, generator=g) < 0.4, ids, torch.rand(n, generator=g, dtype=torch.float64))


def local_slice(t, counts, rank):
    o = sum(counts[:rank])
    return t[o:o + counts[rank]]


def _loss_fn(sc, ids, mask, group):
    loss, be, _, red, eps = sc
    kw = dict(pair_ids=ids, swap_mask=mask, reduction=red, backend=be)
    if loss == "softmax":
        return lambda x, y, s: gapops.contrastive_loss(x, y, s, label_smoothing=eps, group=group,
                                                       **kw)
    return lambda x, y, s, b: gapops.sigmoid_loss(x, y, s, b, group=group, **kw)


def _run_all(rank, world, group):
    counts = COUNTS[world]
    x, y, s, b, mask, ids, w = global_inputs(counts)
    out = {}
    for sc in SCENARIOS:
        local = [local_slice(t, counts, rank) for t in (x, y, mask, ids, w)]
        fn = _loss_fn(sc, local[3], local[2], group)
        bias = b if sc[0] == "sigmoid" else None
        out[scenario_name(sc)] = loss_and_grads(fn, local[0], local[1], s, sc[2],
                                                local[4] if sc[3] == "none" else None, bias=bias)
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=["W2", "W3"])
def world(request):
    w = request.param
    return w, run_worlds(_run_all, w)[w]


def _close(got, want, tol, what):
    err = rel_err(got, want)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


@pytest.mark.parametrize("sc", SCENARIOS, ids=scenario_name)
def test_ranks_match_the_global_batch_oracle(world, sc):
    w, results = world
    loss, be, dtype, red, eps = sc
    counts = COUNTS[w]
    x, y, s, b, mask, ids, wts = global_inputs(counts)
    up = wts if red == "none" else None
    xq, yq = x.to(dtype).double(), y.to(dtype).double()
    if loss == "softmax":
        want = loss_and_grads(reference_contrastive_loss_ids, xq, yq, s, torch.float64, up,
                              pair_ids=ids, label_smoothing=eps, swap_mask=mask, reduction=red)
    else:
        want = loss_and_grads(reference_sigmoid_loss_ids, xq, yq, s, torch.float64, up, bias=b,
                              pair_ids=ids, swap_mask=mask, reduction=red)
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    factor = 1.0 if red == "none" else float(w)  # see the module doc
    for r, res in enumerate(results):
        got = res[scenario_name(sc)]
        _close(got[0], local_slice(want[0], counts, r) if red == "none" else want[0], tol,
               f"rank {r} loss")
        _close(got[1], factor * local_slice(want[1], counts, r), tol, f"rank {r} dx")
        _close(got[2], factor * local_slice(want[2], counts, r), tol, f"rank {r} dy")
    for k in range(3, len(want)):
        _close(sum(res[scenario_name(sc)][k] for res in results), factor * want[k], tol,
               f"sum over ranks of gradient {k}")
