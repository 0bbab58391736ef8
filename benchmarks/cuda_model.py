"""The speed model of the CUDA backend (cuBLAS strips + fused epilogues; docs/cuda.md, "Model").

    python benchmarks/cuda_model.py [--n 32768 --d 768 --dtype bf16]

Pure Python, no torch: the GPU check imports it to print the model beside what it measured
(`model_line`). A forward+backward of the softmax loss is 4 products of N x N x d on cuBLAS plus
the bytes every strip element moves through HBM in the chunks' buffers:

    time = 4 * 2 N^2 d / (measured torch.mm rate) + N^2 * bytes_per_logit / (HBM bandwidth)

The two terms add: the epilogues run between the products on one stream. The sigmoid loss is the
same with 3 products when the gradients are wanted (1 under no_grad).
"""
from __future__ import annotations

import argparse

# Rows per epilogue block (csrc/cuda/strip_plan.h kRowsPerBlock): the forward writes and merges
# two column partial states per 128 rows.
ROWS_PER_BLOCK = 128

# Published dense peaks and bandwidths (SXM parts). MM_FRACTION: the share of the dense bf16 peak
# a large torch.mm reaches on an H100 (~650-700 TFLOP/s are typical public measurements of
# cuBLAS at these shapes); the GPU check measures the real rate and the model takes it from there.
DEVICES = {
    "H100": dict(bf16_peak=989e12, hbm=3.35e12),
    "H200": dict(bf16_peak=989e12, hbm=4.8e12),
}
MM_FRACTION = 0.70


def bytes_per_logit(loss: str = "softmax", dtype: str = "bf16", grads: bool = True) -> dict:
    """Bytes through HBM per strip element (logit), by pass: {pass: bytes} plus 'total'.

    S is the fp32 product (fp64 for fp64 inputs) that cuBLAS writes and the epilogue reads once;
    H is the gradient-weight strip in the input dtype for 16-bit inputs (a separate buffer) and
    in fp32 / fp64 otherwise (written over S), read once by each of the two weight products
    (cuBLAS keeps a tile of H in L2 across the few output column blocks of d <= 1024)."""
    acc = 8 if dtype == "fp64" else 4
    h = 2 if dtype in ("bf16", "fp16") else acc
    partials = 2 * 2 * acc / ROWS_PER_BLOCK  # column states written, then read by the merge
    out = {}
    if loss == "softmax":
        out["forward: S written + read"] = 2 * acc
        out["forward: column partial states"] = partials
        if grads:
            out["backward: S written + read"] = 2 * acc
            out["backward: H written"] = h
            out["backward: H read by H B and H^T A"] = 2 * h
    elif loss == "sigmoid":
        out["S written + read"] = 2 * acc
        if grads:
            out["H written"] = h
            out["H read by H B and H^T A"] = 2 * h
    else:
        raise ValueError(f"loss must be 'softmax' or 'sigmoid', got {loss!r}")
    out["total"] = sum(out.values())
    return out


def products(loss: str = "softmax", grads: bool = True) -> int:
    """N x N x d products of one call: softmax 4 (1 forward, 3 backward); sigmoid 3 with the
    gradients (the tile, H B, H^T A), 1 without."""
    if loss == "softmax":
        return 4 if grads else 1
    return 3 if grads else 1


def model(n: int, d: int, mm_flops: float, hbm: float, loss: str = "softmax",
          dtype: str = "bf16", grads: bool = True) -> dict:
    """The model's time for a square strip (N rows against N columns) given the measured torch.mm
    rate (FLOP/s, in the input dtype) and the HBM bandwidth (B/s)."""
    k = products(loss, grads)
    t_mm = k * 2.0 * n * n * d / mm_flops
    b = bytes_per_logit(loss, dtype, grads)["total"]
    t_bytes = n * n * b / hbm
    total = t_mm + t_bytes
    return dict(products=k, bytes_per_logit=b, t_products=t_mm, t_bytes=t_bytes, t_total=total,
                fraction_of_mm=t_mm / total, tflops=k * 2.0 * n * n * d / total / 1e12)


def model_line(measured_s: float, n: int, d: int, mm_flops: float, hbm: float,
               loss: str = "softmax", dtype: str = "bf16", grads: bool = True) -> str:
    """One line for the GPU check: model and measurement side by side."""
    m = model(n, d, mm_flops, hbm, loss, dtype, grads)
    frac = m["t_products"] / measured_s
    return (f"cuda {loss} N={n} d={d} {dtype}: model {m['t_total'] * 1e3:.2f} ms "
            f"({m['fraction_of_mm']:.0%} of torch.mm at {mm_flops / 1e12:.0f} TFLOP/s, "
            f"{m['bytes_per_logit']:.2f} B/logit at {hbm / 1e12:.2f} TB/s), measured "
            f"{measured_s * 1e3:.2f} ms ({frac:.0%} of torch.mm)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32", "fp64"])
    ap.add_argument("--mm-fraction", type=float, default=MM_FRACTION)
    args = ap.parse_args(argv)
    for loss, grads in (("softmax", True), ("sigmoid", True), ("sigmoid", False)):
        parts = bytes_per_logit(loss, args.dtype, grads)
        print(f"{loss} ({'forward+backward' if grads else 'no_grad forward'}), {args.dtype}: "
              + ", ".join(f"{k} {v:g}" for k, v in parts.items()))
        for name, dev in DEVICES.items():
            rate = args.mm_fraction * dev["bf16_peak"]
            m = model(args.n, args.d, rate, dev["hbm"], loss, args.dtype, grads)
            print(f"  {name}: {m['t_total'] * 1e3:.2f} ms = {m['t_products'] * 1e3:.2f} ms of "
                  f"{m['products']} products at {rate / 1e12:.0f} TFLOP/s + "
                  f"{m['t_bytes'] * 1e3:.2f} ms of bytes at {dev['hbm'] / 1e12:.2f} TB/s: "
                  f"{m['fraction_of_mm']:.0%} of the torch.mm rate, {m['tflops']:.0f} TFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
