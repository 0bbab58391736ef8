// CUDA strip kernels: registration skeleton (the tensor-core kernels land with the CUDA issue).
#include <torch/library.h>
#include <ATen/ATen.h>

#include "../common/strip_checks.h"

namespace gapops {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> strip_forward_cuda(const at::Tensor& a,
                                                                  const at::Tensor& b,
                                                                  const at::Tensor& scale,
                                                                  int64_t offset) {
  check_strip_inputs(a, b, scale, offset);
  TORCH_CHECK(false, "gapops: the CUDA strip kernels are not implemented yet");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> strip_backward_cuda(
    const at::Tensor& a, const at::Tensor& b, const at::Tensor& scale, int64_t offset,
    const at::Tensor& row_lse, const at::Tensor& col_lse, const at::Tensor& g_row,
    const at::Tensor& g_col, bool deterministic) {
  check_strip_inputs(a, b, scale, offset);
  TORCH_CHECK(false, "gapops: the CUDA strip kernels are not implemented yet");
}

}  // namespace

TORCH_LIBRARY_IMPL(gapops, CUDA, m) {
  m.impl("strip_forward", &strip_forward_cuda);
  m.impl("strip_backward", &strip_backward_cuda);
}

}  // namespace gapops
