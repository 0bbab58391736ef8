"""Forward+backward time of the fused CPU backend against its peers, side by side in one run.

    pytest benchmarks/bench_cpu.py --benchmark-json=benchmarks/cpu.json
    python benchmarks/cpu_report.py benchmarks/cpu.json   # ratios + peak memory -> RESULTS.md
"""
import pytest

from cpu_cases import SIZES, contestants, make_inputs

NAMES = ["gapops_cpu", "naive", "torch_compile_naive", "open_clip", "floor_4_mm"]


@pytest.mark.parametrize("n,d", SIZES, ids=[f"N{n}-d{d}" for n, d in SIZES])
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(benchmark, name, n, d):
    step = contestants()[name]
    if step is None:
        pytest.skip(f"{name} is not installed")
    x, y, s = make_inputs(n, d)
    step(x, y, s)  # warm-up (and torch.compile's compilation)
    benchmark.group = f"N={n} d={d}"
    benchmark.extra_info.update(n=n, d=d, method=name)
    benchmark.pedantic(step, args=(x, y, s), rounds=3 if n >= 8192 else 5, iterations=1)
