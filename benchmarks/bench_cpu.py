"""Forward+backward time of the fused CPU backend against its peers, side by side in one run:
the softmax (CLIP) loss and the sigmoid (SigLIP) loss, each against its own peers and floor.

    pytest benchmarks/bench_cpu.py --benchmark-json=benchmarks/cpu.json
    pytest benchmarks/bench_cpu.py -k sigmoid ...   # the sigmoid rows alone
    python benchmarks/cpu_report.py benchmarks/cpu.json   # ratios + peak memory -> RESULTS.md
"""
import pytest

from cpu_cases import SIZES, case

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
