"""Triton strip kernels, one job per module (docs/triton.md describes how they fit together).

    tile.py             jit helpers every kernel shares: row routing, the cosine tile, exp2/log1p
    forward.py          the forward kernel and the column-statistics combine
    backward_fused.py   backward shape (a): one kernel, relaxed fp32 atomics
    backward_gstrip.py  backward shape (b): a G-strip kernel and two matrix products
    configs.py          block-size configs, the tuning key and the tuned-launch helper
    sigmoid_kernels.py  the sigmoid (SigLIP) strip's loss-only and G-strip kernels
    sigmoid.py          the sigmoid strip's entry point ``sigmoid_strip`` (launchers)

The public entry points are ``gapops.triton_strip.strip_forward`` / ``strip_backward`` and
``gapops.triton.sigmoid.sigmoid_strip``.
"""
