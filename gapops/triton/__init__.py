"""The Triton backend, one job per module (docs/triton.md describes how they fit together).

    strip.py            entry points strip_forward / strip_backward: argument checks, buffers,
                        grids, the G strip's matrix products (the launchers)
    common.py           host helpers any kernel family here shares: dtype constexprs
                        (kernel_consts), SM count, device context, routing-mask arguments
    configs.py          block-size configs, the tuning key and the tuned-launch helper (launch)
    tile.py             jit helpers every strip kernel shares: row routing, the cosine tile,
                        exp2/log1p
    forward.py          the forward kernel and the column-statistics combine
    backward_fused.py   backward shape (a): one kernel, relaxed fp32 atomics
    backward_gstrip.py  backward shape (b): a G-strip kernel and two matrix products
    sigmoid_kernels.py  the sigmoid (SigLIP) strip's loss-only and G-strip kernels
    sigmoid.py          the sigmoid strip's entry point ``sigmoid_strip`` (launchers)

The public entry points are ``gapops.triton.strip.strip_forward`` / ``strip_backward`` and
``gapops.triton.sigmoid.sigmoid_strip``.
"""
from .strip import BWD_SHAPES, DEFAULT_BWD_SHAPE, strip_backward, strip_forward

__all__ = ["strip_forward", "strip_backward", "BWD_SHAPES", "DEFAULT_BWD_SHAPE"]
