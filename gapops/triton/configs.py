"""Block-size configs of the Triton strip kernels, the tuning key, and the launch helper.

Tuning: on a GPU, strips with at least ``Tuning.min_logits`` logits autotune over the configs of
their dtype class, keyed on TUNE_KEY (d, N bucket, product precision: TF32 or IEEE, the two swap
flags) and the argument dtypes; smaller strips run the first config (tuning costs more than it
saves there). deterministic=True also runs the first config, the fixed one of (kernel, dtype
class), for every d: the bits do not depend on what a process's autotuner picked. Under the
interpreter one config runs, unless a test sets ``Tuning.interpreter_configs`` to exercise the
tuning path.

Every kernel is written so that a re-run is harmless (issue 10, defect 1: the autotuner runs
every config on the live buffers): the forward's and the G kernel's outputs are overwritten
whole and the per-program partials are read only up to the program count the last launch wrote;
the fused backward's atomically accumulated outputs are zeroed and the chosen config is launched
once more when a call tuned (``launch(zero_on_retune=...)``).

The configs were pruned with ``benchmarks/gpu_static.py --arch 90`` under both Triton 3.6.0 (the
GPU machines') and 3.8.0: every shipped config, in every variant (swap or not, d = 768 and 97,
fp16 / bf16 / fp32 IEEE and TF32), compiles on sm_90 without spills, with a pipelined main loop
(>= 2 stages of async copies) of 16-byte loads (docs/triton.md lists what was removed and why).
"""
from __future__ import annotations

import torch
import triton

from .._dtypes import triton_interpreted


def _cfg(num_warps, num_stages, **meta):
    return triton.Config(meta, num_warps=num_warps, num_stages=num_stages)


# kind -> dtype class -> configs; the first is the fixed config (small strips, deterministic).
CONFIGS = {
    "fwd": {
        "16": [_cfg(8, 3, BM=64, BN=128, BK=64), _cfg(8, 3, BM=128, BN=64, BK=64)],
        # (64 x 64 with 4 warps spilled 32 bytes with IEEE products at d = 97 under 3.6.0)
        "32": [_cfg(8, 3, BM=128, BN=64, BK=32)],
        "64": [_cfg(4, 2, BM=32, BN=32, BK=8)],
    },
    "gstrip": {
        "16": [_cfg(8, 3, BM=128, BN=64, BK=64), _cfg(8, 3, BM=64, BN=128, BK=64),
               _cfg(4, 4, BM=64, BN=64, BK=64)],
        "32": [_cfg(8, 3, BM=128, BN=64, BK=32), _cfg(4, 3, BM=64, BN=64, BK=32)],
        "64": [_cfg(4, 2, BM=32, BN=32, BK=4)],
    },
    "fused": {
        "16": [_cfg(8, 3, BM=64, BN=128, BK=64, BD=64), _cfg(8, 2, BM=128, BN=64, BK=64, BD=64)],
        # no fp32 configs: on a GPU fp32 runs the G strip (strip.effective_bwd_shape); the
        # fused fp32 kernel spilled 4.5 KB with IEEE products (BM64,BN64,BK32, BD 32 or 64)
        # and its copies fell to 4 bytes with TF32 (gpu_static.py, Triton 3.8.0, 2026-12-03)
        "64": [_cfg(4, 2, BM=16, BN=16, BK=8, BD=8)],
    },
}
# Under the interpreter: one config, big blocks (fewer interpreted steps), no tuning.
INTERPRETER = {
    "fwd": _cfg(4, 1, BM=64, BN=64, BK=64),
    "gstrip": _cfg(4, 1, BM=64, BN=64, BK=64),
    "fused": _cfg(4, 1, BM=64, BN=64, BK=64, BD=64),
}


# The launch arguments a tuned choice is keyed on (beside the argument dtypes, which Triton adds):
# a config tuned for IEEE fp32 products is not the one for TF32, nor one for routed operands.
TUNE_KEY = ["d", "tune_bucket", "PREC", "HAS_ASWAP", "HAS_BSWAP"]


class Tuning:
    """Process-wide tuning switches (tests override them)."""
    min_logits = 1 << 24
    do_bench = None              # None: Triton's timer; tests pass a stub
    interpreter_configs = None   # {kind: [Config, ...]}: tune under the interpreter too


_tuners: dict = {}


def dtype_class(dtype: torch.dtype) -> str:
    return {torch.float64: "64", torch.float32: "32"}.get(dtype, "16")


def tune_bucket(n: int, m: int) -> int:
    """The N part of the tuning key: strips within a factor 4 in logits share their configs."""
    return max(0, (n * m).bit_length() - 20) // 2


def _configs(kind: str, cls: str) -> list:
    if triton_interpreted():
        return (Tuning.interpreter_configs or {}).get(kind) or [INTERPRETER[kind]]
    return CONFIGS[kind][cls]


def launch(kind: str, kernel, grid, args: tuple, consts: dict, dtype: torch.dtype, logits: int,
           fixed: bool = False, zero_on_retune: tuple = ()):
    """Launch ``kernel`` (a heuristics-wrapped jit function) with the config the tuning policy
    picks; returns nothing. ``grid`` is a function of the config's meta-parameters. The tensors
    in ``zero_on_retune`` are zeroed and the kernel launched again when this call tuned."""
    cls = dtype_class(dtype)
    configs = _configs(kind, cls)
    tune = len(configs) > 1 and not fixed and (triton_interpreted() or logits >= Tuning.min_logits)
    if not tune:
        c = configs[0]
        kernel[grid](*args, **c.kwargs, **consts, num_warps=c.num_warps, num_stages=c.num_stages)
        return
    key = (kind, cls, id(kernel), tuple(map(str, configs)))
    if key not in _tuners:
        _tuners[key] = triton.autotune(configs, key=TUNE_KEY,
                                       do_bench=Tuning.do_bench)(kernel)
    tuner = _tuners[key]
    before = len(tuner.cache)
    tuner[grid](*args, **consts)
    if len(tuner.cache) != before and zero_on_retune:
        for t in zero_on_retune:
            t.zero_()
        tuner[grid](*args, **consts)
