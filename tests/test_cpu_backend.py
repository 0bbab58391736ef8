"""What is particular to the `cpu` backend (csrc/cpu, docs/cpu.md), beyond the shared strip tests
of tests/test_strip.py: its two backward modes, thread counts, the zero-copy and gathered row
paths, and that no [N, d] copy of half-precision inputs is made."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import gapops
from gapops import _extension
from helpers import intra_op_threads, make_strip, strip_args

_mod, _why = _extension.load()
pytestmark = pytest.mark.skipif(_mod is None, reason=f"gapops._C is not built: {_why}")


def _ops():
    return torch.ops.gapops.strip_forward, torch.ops.gapops.strip_backward


def _case(n=600, m=1100, d=40, offset=300, dtype=torch.float32, **kw):
    # several row blocks (256 rows) and column tiles (512 columns), positives crossing tiles
    return make_strip(n, m, d, offset, dtype, seed=11, device="cpu", **kw)


def test_deterministic_backward_same_bits_for_any_thread_count():
    fwd, bwd = _ops()
    args = strip_args(_case(swap_rows=True, swap_cols=True), torch.float32)
    stats = fwd(*args)
    g_row, g_col = torch.full((600,), 0.3), torch.full((1100,), 0.2)
    results = []
    for threads in (1, 2, 3):
        with intra_op_threads(threads):
            results.append(bwd(*args, *stats, g_row, g_col, True))
    for other in results[1:]:
        for x, y in zip(results[0], other):
            assert torch.equal(x, y)


def test_forward_same_bits_every_run():
    fwd, _ = _ops()
    args = strip_args(_case(), torch.float32)
    first = fwd(*args)
    for _ in range(3):
        again = fwd(*args)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_default_backward_matches_deterministic(threads):
    """The one-pass backward (dynamic row blocks, locked column tiles) and the two-pass one agree
    to rounding, also with more threads than cores (workers contending for column tiles)."""
    fwd, bwd = _ops()
    args = strip_args(_case(n=1100, m=1100, d=24, offset=0), torch.float32)
    stats = fwd(*args)
    g = torch.rand(1100, generator=torch.Generator().manual_seed(0))
    with intra_op_threads(threads):
        fast = bwd(*args, *stats, g, g, False)
    exact = bwd(*args, *stats, g, g, True)
    for x, y in zip(fast, exact):  # summation orders differ: relative error of the whole
        assert float((x - y).norm() / y.norm()) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_copy_and_gathered_rows_agree(dtype):
    """Contiguous rows go to BLAS as views; strided ones are gathered into buffers: same values."""
    fwd, bwd = _ops()
    case = _case(dtype=dtype)
    plain = strip_args(case, dtype)
    strided = list(plain)
    for k in (0, 1, 3, 4):  # a, a_alt, b, b_alt: every other column of a wider tensor
        t = plain[k]
        strided[k] = torch.stack([t, torch.zeros_like(t)], dim=2).flatten(1)[:, ::2]
        assert not strided[k].is_contiguous() and torch.equal(strided[k], t)
    s1, s2 = fwd(*plain), fwd(*strided)
    g = torch.full((600,), 0.5, dtype=dtype), torch.full((1100,), 0.5, dtype=dtype)
    b1, b2 = bwd(*plain, *s1, *g, True), bwd(*strided, *s2, *g, True)
    tol = 1e-6 if dtype == torch.float32 else 1e-13  # BLAS may sum in another order
    for x, y in zip(list(s1) + list(b1), list(s2) + list(b2)):
        assert float((x - y).norm() / y.norm()) < tol


def test_half_inputs_are_not_copied_whole():
    """fp16 features with a swap mask: the forward's extra memory stays far below one fp32 copy
    of an input (rows are widened block by block into per-thread buffers)."""
    script = textwrap.dedent("""
        import resource, torch, gapops
        n, d = 6144, 256
        def peak_mib():  # the peak resident set, reset to the current one where Linux allows
            try:
                with open("/proc/self/status") as f:
                    return [int(l.split()[1]) for l in f if l.startswith("VmHWM:")][0] / 1024
            except OSError:
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        def reset_peak():
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
        def run(n):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(n, d, generator=g, dtype=torch.float16)
            y = torch.randn(n, d, generator=g, dtype=torch.float16)
            swap = torch.rand(n, generator=g) < 0.5
            ones = torch.ones(n)
            cos = torch.zeros(n)
            reset_peak()
            base = peak_mib()
            torch.ops.gapops.strip_forward(x, y, swap, y, x, swap, ones, ones, cos, cos,
                                           torch.tensor(10.0), 0)
            return peak_mib() - base
        run(512)  # warm-up: thread pool, allocator
        print(run(n))
    """)
    # the child imports the very gapops this process imported (a checkout or an installed copy)
    here = os.path.dirname(os.path.dirname(os.path.abspath(gapops.__file__)))
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    extra_mib = float(out[-1])
    one_fp32_copy_mib = 6144 * 256 * 4 / 2**20  # 6 MiB
    assert extra_mib < one_fp32_copy_mib, f"forward took {extra_mib:.1f} MiB extra"


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_one_openmp_runtime():
    """The extension's parallel regions (built with -fopenmp) must run on torch's own OpenMP
    runtime: a second libgomp would give the strip's workers a thread pool of their own, inside
    which MKL, seeing no parallel region of its runtime, would start threads again."""
    with open("/proc/self/maps") as f:
        runtimes = {line.split()[-1] for line in f
                    if any(k in line for k in ("libgomp", "libiomp", "libomp"))}
    assert len(runtimes) == 1, f"OpenMP runtimes loaded: {sorted(runtimes)}"
