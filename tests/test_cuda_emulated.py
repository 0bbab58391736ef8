"""The CUDA strip kernels, compiled for the host and run under a thread-per-CUDA-thread emulation.

tests/cuda_emu/emu_strip.cpp includes csrc/cuda/strip_kernels.cuh (the very kernel source nvcc
compiles) with fake CUDA headers (tests/cuda_emu/fake_include): one std::thread per CUDA thread,
__syncthreads as a barrier, __shared__ as statics, warp shuffles through a block exchange,
atomics under a mutex, and nvcuda::wmma as whole-tile load / mma / store with the documented
row / column-major semantics. Every variant (fp64 and fp32 SIMT, TF32 / fp16 / bf16 WMMA) is
run forward and backward (atomic and deterministic) on awkward shapes and small grids (the
grid-stride loop) against a float64 strip.

What this proves without a GPU: tile indexing, tail masking, the positive-logit offset, the
operand layouts handed to WMMA, the barrier structure (a missing barrier shows up as a wrong
answer or a hang), the two-pass deterministic dB and the host-side launch arithmetic it mirrors.
What it does not: real fragment layouts, 16-bit rounding (the fake 16-bit types carry floats),
TF32 rounding, timing, or races the barrier-per-step emulation hides. Those need a GPU:
tests/test_cuda_backend.py and benchmarks/gpu_sanitize.sh.
"""
import os
import shutil
import subprocess

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emu")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA emulation")
    exe = str(tmp_path_factory.mktemp("cuda_emu") / "emu_strip")
    cmd = [cxx, "-std=c++20", "-O1", "-pthread", "-I", os.path.join(HERE, "fake_include"),
           os.path.join(HERE, "emu_strip.cpp"), "-o", exe]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 and "barrier" in proc.stderr and "No such file" in proc.stderr:
        pytest.skip("the C++ compiler lacks <barrier> (C++20)")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


def test_cuda_kernels_emulated(emulator):
    proc = subprocess.run([emulator], capture_output=True, text=True, timeout=600)
    print(proc.stdout)
    assert proc.returncode == 0 and "ALL OK" in proc.stdout, proc.stdout[-6000:] + proc.stderr[-2000:]
