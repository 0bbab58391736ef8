"""Builds gapops._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc is found.

Environment switches:
  GAPOPS_SKIP_CUDA_BUILD=1   never compile csrc/cuda (CPU-only extension)
  GAPOPS_FORCE_CUDA_BUILD=1  fail instead of skipping when CUDA cannot be built
  GAPOPS_CUDA_ARCHS="80;90"  compute capabilities to compile for (default 80 and 90)
  GAPOPS_CPU_SIMD=auto|avx512|avx2|none  vector ISA for the CPU kernels (auto: what this machine
                             has; build on the machine that runs it, or pick one explicitly)
  GAPOPS_PTXAS_VERBOSE=1     pass -Xptxas -v to nvcc (registers / spills / smem per kernel, see
                             docs/cuda.md); runtime switches (GAPOPS_CUDA_SCRATCH_MB, GAPOPS_TRITON_BWD, ...)
                             are listed in docs/cuda.md and docs/triton.md
  MAX_JOBS=N                 parallel compile jobs (ninja), as torch's cpp_extension reads it
  CUDA_HOME=/path            the CUDA toolkit (found from nvcc when unset)
  GAPOPS_BUILD_TEMP=/path    where the object files go (default ./build/temp.<python>-torch<ver>,
                             kept, so a second `pip install -e .` recompiles only what changed)
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _find_cuda_home():
    """The real toolkit directory (with bin/nvcc and include/cuda.h), not a wrapper's prefix."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates.append(os.path.dirname(os.path.dirname(real)))
        try:  # a wrapper script such as `exec /usr/local/cuda-13.0/bin/nvcc "$@"`
            with open(real, "rb") as f:
                head = f.read(4096)
            if head.startswith(b"#!"):
                for tok in head.decode(errors="ignore").split():
                    if tok.endswith("/bin/nvcc"):
                        candidates.append(os.path.dirname(os.path.dirname(tok)))
        except OSError:
            pass
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "bin", "nvcc")) and \
                os.path.isfile(os.path.join(c, "include", "cuda.h")):
            return os.path.realpath(c)
    return None


CUDA_HOME = None if _env_flag("GAPOPS_SKIP_CUDA_BUILD") else _find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME  # before torch.utils.cpp_extension reads it

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _cpu_simd_flags():
    """Vector ISA flags for the CPU kernels: GAPOPS_CPU_SIMD=auto (what this machine has),
    avx512, avx2 or none. The fused loops use AVX-512 when built with it, else AVX2 + FMA."""
    avx2 = ["-mavx2", "-mfma", "-mf16c"]
    avx512 = avx2 + ["-mavx512f"]
    choice = os.environ.get("GAPOPS_CPU_SIMD", "auto").lower()
    if choice in ("none", "avx2", "avx512"):
        return {"none": [], "avx2": avx2, "avx512": avx512}[choice]
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return []
    if not {"avx2", "fma", "f16c"} <= flags:
        return []
    return avx512 if "avx512f" in flags else avx2


def _nvidia_wheel_includes():
    """Headers torch's CUDA headers include (cublas, cusparse, ...) that ship in nvidia-* wheels."""
    dirs = []
    for site in sys.path:
        base = os.path.join(site, "nvidia")
        if os.path.isdir(base):
            dirs += sorted(d for d in glob.glob(os.path.join(base, "*", "include")) if os.path.isdir(d))
    return dirs


def _cuda_reason_to_skip():
    if _env_flag("GAPOPS_SKIP_CUDA_BUILD"):
        return "GAPOPS_SKIP_CUDA_BUILD is set"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if CUDA_HOME is None:
        return "nvcc was not found (set CUDA_HOME or put nvcc on PATH)"
    return None


def _cuda_archs():
    archs = os.environ.get("GAPOPS_CUDA_ARCHS", "80;90").replace(",", ";")
    return [a.strip() for a in archs.split(";") if a.strip()]


def extensions():
    # -fopenmp: at::parallel_for is header-inline and runs serially in a translation unit built
    # without it (the CPU strip's work distribution needs a real parallel region; the extension
    # then shares torch's own libgomp, already loaded under the same soname).
    # -ffp-contract=off: the CPU strip recomputes terms whose maxima it took earlier and relies on
    # identical roundings (csrc/cpu/tile_loops.h); its vector loops use FMA explicitly.
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off", f'-DGAPOPS_TORCH_VERSION="{torch.__version__}"']
    cxx += _cpu_simd_flags()
    # csrc/testing: the test-only ops (torch.ops.gapops_testing), compiled into every build.
    sources = (["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
               + sorted(glob.glob("csrc/testing/*.cpp")))
    skip = _cuda_reason_to_skip()
    if skip:
        if _env_flag("GAPOPS_FORCE_CUDA_BUILD"):
            raise RuntimeError(f"GAPOPS_FORCE_CUDA_BUILD is set but CUDA cannot be built: {skip}")
        print(f"gapops: building the CPU kernels only: {skip}", file=sys.stderr)
        return [CppExtension("gapops._C", sources, extra_compile_args={"cxx": cxx},
                             extra_link_args=["-fopenmp"])]
    archs = _cuda_archs()
    print(f"gapops: building CPU + CUDA kernels (CUDA_HOME={CUDA_HOME}, archs {archs})",
          file=sys.stderr)
    gencode = []
    for a in archs:
        gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    # PTX of the newest arch too, so GPUs newer than the list JIT-compile instead of failing.
    gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    nvcc = ["-O3", "-lineinfo", "--use_fast_math", "--expt-relaxed-constexpr",
            "-DGAPOPS_WITH_CUDA", f'-DGAPOPS_CUDA_ARCHS="{";".join(archs)}"'] + gencode
    if _env_flag("GAPOPS_PTXAS_VERBOSE"):
        nvcc += ["-Xptxas", "-v"]
    cxx += ["-DGAPOPS_WITH_CUDA", f'-DGAPOPS_CUDA_ARCHS="{";".join(archs)}"']
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    return [CUDAExtension("gapops._C", sources, include_dirs=_nvidia_wheel_includes(),
                          extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                          extra_link_args=["-fopenmp"])]


class PersistentBuildExtension(BuildExtension):
    """torch's BuildExtension with its object files (ninja's build folder) kept under ./build.

    setuptools' editable install (``pip install -e .``) hands build_ext a fresh temporary
    build_temp on every run, so a second ``pip install -e`` in the same clone (the README's set-up
    command, then its test command) compiled every file again: ~12 min with nvcc on 2 cores.
    In a fixed folder ninja finds its objects and its log of the commands that made them, and
    rebuilds only what changed (a source, a header, or any compile flag: a different torch, arch
    list or GAPOPS_* switch gives a different command line, which ninja notices). An explicit
    ``--build-temp`` (benchmarks/gpu_check.sh passes one) is kept; GAPOPS_BUILD_TEMP picks
    another folder."""

    def finalize_options(self):
        super().finalize_options()
        given = any("build_temp" in self.distribution.get_option_dict(cmd)
                    for cmd in ("build_ext", "build"))
        if os.environ.get("GAPOPS_BUILD_TEMP"):
            self.build_temp = os.path.abspath(os.environ["GAPOPS_BUILD_TEMP"])
        elif not given:
            tag = f"{sys.implementation.cache_tag}-torch{torch.__version__}"
            self.build_temp = os.path.join(ROOT, "build", f"temp.{tag}")


setup(
    packages=find_packages(include=["gapops", "gapops.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": PersistentBuildExtension.with_options(use_ninja=True)},
)
