// Op schemas of the gapops extension and the Python module entry point: nothing else.
// Kernels register their implementations with TORCH_LIBRARY_IMPL in csrc/cpu and csrc/cuda.
#include <torch/extension.h>
#include <torch/library.h>

#ifndef GAPOPS_TORCH_VERSION
#define GAPOPS_TORCH_VERSION "unknown"
#endif
#ifndef GAPOPS_CUDA_ARCHS
#define GAPOPS_CUDA_ARCHS ""
#endif

TORCH_LIBRARY(gapops, m) {
  // Rows a [n, d] against columns b [m, d], positive of row i at column i + offset.
  // Returns (row_lse [n], col_lse_partial [m], pos_logit [n]) in fp32 (fp64 for fp64 inputs).
  m.def("strip_forward(Tensor a, Tensor b, Tensor scale, int offset) -> (Tensor, Tensor, Tensor)");
  // Returns (dA [n, d], dB [m, d], dscale []) for G of DESIGN.md section 1 with weights g_row, g_col.
  m.def(
      "strip_backward(Tensor a, Tensor b, Tensor scale, int offset, Tensor row_lse, "
      "Tensor col_lse, Tensor g_row, Tensor g_col, bool deterministic) -> (Tensor, Tensor, Tensor)");

  // Test-only: the __host__ __device__ helpers of csrc/common/tile_math.h, run on the CPU
  // (csrc/cpu/tile_math_ops.cpp) so that tests/test_tile_math.py can check what the CUDA kernels
  // compute without a GPU. Elementwise over same-shaped fp32 or fp64 tensors. Not a public API.
  m.def("_tile_fast_exp(Tensor x) -> Tensor");
  m.def("_tile_lse_merge(Tensor m, Tensor s, Tensor m2, Tensor s2) -> (Tensor, Tensor)");
  m.def("_tile_lse_finalize(Tensor m, Tensor s) -> Tensor");
  // Row LSE of scale * x [r, c] as a CUDA tile computes it: `split` threads per row, thread h
  // folding columns h, h + split, ... with lse_partial, the states merged with lse_merge.
  m.def("_tile_lse_rows(Tensor x, Tensor scale, int split) -> Tensor");
  m.def(
      "_tile_grad_weight(Tensor logit, Tensor row_lse, Tensor col_lse, Tensor g_row, "
      "Tensor g_col, Tensor positive) -> Tensor");
  // Rows of a_hat, d_hat [r, d] and norm [r]: normalize_backward_row per row.
  m.def("_tile_normalize_backward(Tensor a_hat, Tensor d_hat, Tensor norm, float eps) -> Tensor");
}

namespace {
pybind11::dict build_info() {
  pybind11::dict info;
  info["cpu"] = true;
#ifdef GAPOPS_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = std::string(GAPOPS_CUDA_ARCHS);
#else
  info["cuda"] = false;
  info["cuda_archs"] = std::string();
#endif
#ifdef __AVX2__
  info["cpu_simd"] = std::string("avx2");
#else
  info["cpu_simd"] = std::string("baseline");
#endif
  info["torch"] = std::string(GAPOPS_TORCH_VERSION);
  return info;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gapops compiled kernels; the ops live in torch.ops.gapops";
  m.def("build_info", &build_info, "What this extension was compiled with");
}
