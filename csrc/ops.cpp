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
  // The strip of docs/design.md section 2.1: rows A [n, d] (a, or a_alt where a_swap) against
  // columns B [m, d] (b, or b_alt where b_swap), cos_ij = a_inv_norm_i b_inv_norm_j A_i.B_j,
  // positive of row i at column i + offset, statistics relative to the positives' cosines a_pos,
  // b_pos. Forward returns (row_lse [n], col_lse [m]) in fp32 (fp64 for fp64 inputs).
  m.def(
      "strip_forward(Tensor a, Tensor a_alt, Tensor? a_swap, Tensor b, Tensor b_alt, "
      "Tensor? b_swap, Tensor a_inv_norm, Tensor b_inv_norm, Tensor a_pos, Tensor b_pos, "
      "Tensor scale, int offset) -> (Tensor, Tensor)");
  // Returns (grad_a [n, d], grad_b [m, d], grad_scale []) in the accumulation dtype: gradients
  // w.r.t. the raw routed rows with the inverse norms held fixed (design.md section 2.1).
  m.def(
      "strip_backward(Tensor a, Tensor a_alt, Tensor? a_swap, Tensor b, Tensor b_alt, "
      "Tensor? b_swap, Tensor a_inv_norm, Tensor b_inv_norm, Tensor a_pos, Tensor b_pos, "
      "Tensor scale, int offset, Tensor row_lse, Tensor col_lse, Tensor g_row, Tensor g_col, "
      "bool deterministic) -> (Tensor, Tensor, Tensor)");
  // The sigmoid (SigLIP) strip of docs/design.md section 2.6 over the same routed rows and
  // columns: z_ij = scale cos_ij + bias, label +1 at column i + offset and -1 elsewhere.
  // Returns (row_loss [n] (empty unless want_loss), grad_a [n, d], grad_b [m, d] (empty [0, d]
  // unless want_grads), grad_scale [], grad_bias []) in the accumulation dtype; the gradients use
  // the per-row upstream weights g_row [n], or ones when g_row is None.
  m.def(
      "sigmoid_strip(Tensor a, Tensor a_alt, Tensor? a_swap, Tensor b, Tensor b_alt, "
      "Tensor? b_swap, Tensor a_inv_norm, Tensor b_inv_norm, Tensor scale, Tensor bias, "
      "int offset, Tensor? g_row, bool want_loss, bool want_grads, bool deterministic) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
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
#if defined(__AVX512F__)
  info["cpu_simd"] = std::string("avx512");
#elif defined(__AVX2__)
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
