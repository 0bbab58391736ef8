"""Forward+backward time of the fused CPU backend against its peers, side by side in one run:
the softmax (CLIP) loss and the sigmoid (SigLIP) loss, each against its own peers and floor.

    pytest benchmarks/bench_cpu.py --benchmark-json=benchmarks/cpu.json
    pytest benchmarks/bench_cpu.py -k sigmoid ...   # the sigmoid rows alone
    python benchmarks/cpu_report.py benchmarks/cpu.json   # ratios + peak memory -> RESULTS.md
"""
import os

import pytest
import torch

import gapops

from cpu_cases import SIZES, case, make_inputs

NAMES = ["gapops_cpu", "naive", "torch_compile_naive", "open_clip", "floor_4_mm"]
SIGMOID_NAMES = ["gapops_sigmoid_cpu", "sigmoid_naive", "sigmoid_torch_compile_naive",
                 "sigmoid_open_clip", "sigmoid_open_clip_chunked", "sigmoid_floor_3_mm"]


@pytest.mark.parametrize("n,d", SIZES, ids=[f"N{n}-d{d}" for n, d in SIZES])
@pytest.mark.parametrize("name", NAMES + SIGMOID_NAMES)
def test_forward_backward(benchmark, name, n, d):
    step, make_inputs = case(name)
    if step is None:
        pytest.skip(f"{name} is not installed (or, chunked, open_clip has no chunk_size)")
    inputs = make_inputs(n, d)
    step(*inputs)  # warm-up (and torch.compile's compilation)
    loss = "sigmoid" if name in SIGMOID_NAMES else "softmax"
    benchmark.group = f"{loss} N={n} d={d}"
    benchmark.extra_info.update(n=n, d=d, method=name, loss=loss)
    benchmark.pedantic(step, args=inputs, rounds=3 if n >= 8192 else 5, iterations=1)


# ---------------------------------------------------------------------------------------------
# the cost of pair IDs and label smoothing (docs/design.md 2.7): the same fused CPU loss with and
# without them, side by side in one run; the ratio to "none" is the cost (target <= 1.05)

def _coco_ids(n):  # five captions per image: rows 5k..5k+4 share an ID
    return torch.arange(n) // 5


def _web_ids(n):  # 2% of the rows duplicate another row's ID (web-scale near-duplicates)
    g = torch.Generator().manual_seed(1)
    ids = torch.arange(n)
    k = n // 50
    ids[torch.randperm(n, generator=g)[:k]] = torch.randint(0, n, (k,), generator=g)
    return ids


PAIR_ID_CASES = {"none": (None, 0.0), "unique": (torch.arange, 0.0), "web_2pct": (_web_ids, 0.0),
                 "coco_5_captions": (_coco_ids, 0.0), "coco_5_captions_smoothing": (_coco_ids, 0.1)}


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
@pytest.mark.parametrize("ids", list(PAIR_ID_CASES))
def test_pair_ids_cost(benchmark, ids, loss):
    n, d = 8192, 512
    make, eps = PAIR_ID_CASES[ids]
    if loss == "sigmoid" and eps:
        pytest.skip("label smoothing is the softmax loss's")
    pair_ids = None if make is None else make(n)
    x, y, s = make_inputs(n, d)

    def step(x, y, s):
        xs, ys = x.detach().requires_grad_(), y.detach().requires_grad_()
        if loss == "softmax":
            out = gapops.contrastive_loss(xs, ys, s, backend="cpu", pair_ids=pair_ids,
                                          label_smoothing=eps)
        else:
            out = gapops.sigmoid_loss(xs, ys, s, -10.0, backend="cpu", pair_ids=pair_ids)
        out.backward()
        return out

    step(x, y, s)  # warm-up
    benchmark.group = f"{loss} pair_ids N={n} d={d}"
    benchmark.extra_info.update(n=n, d=d, method=f"gapops_cpu_ids_{ids}", loss=loss,
                                loadavg=os.getloadavg())
    benchmark.pedantic(step, args=(x, y, s), rounds=3, iterations=1)
