// Argument checks shared by the CPU and CUDA strip ops; the Python API checks users' inputs
// first, these guard the ops when they are called directly (torch.ops.gapops.*).
#pragma once
#include <ATen/ATen.h>

namespace gapops {

inline void check_strip_inputs(const at::Tensor& a, const at::Tensor& b, const at::Tensor& scale,
                               int64_t offset) {
  TORCH_CHECK(a.dim() == 2, "strip: a must be 2-D [n, d], got ", a.sizes());
  TORCH_CHECK(b.dim() == 2, "strip: b must be 2-D [m, d], got ", b.sizes());
  TORCH_CHECK(a.size(1) == b.size(1), "strip: a and b must share d, got ", a.size(1), " and ",
              b.size(1));
  TORCH_CHECK(a.size(0) > 0 && b.size(0) > 0 && a.size(1) > 0, "strip: empty input");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "strip: a and b must share a dtype");
  TORCH_CHECK(a.is_floating_point(), "strip: a must be floating point, got ", a.scalar_type());
  TORCH_CHECK(a.device() == b.device(), "strip: a and b must be on one device");
  TORCH_CHECK(scale.numel() == 1, "strip: scale must hold one value");
  TORCH_CHECK(offset >= 0 && offset + a.size(0) <= b.size(0),
              "strip: offset must satisfy 0 <= offset and offset + n <= m, got offset ", offset,
              " with n ", a.size(0), " and m ", b.size(0));
}

inline void check_strip_stats(const at::Tensor& a, const at::Tensor& b, const at::Tensor& row_lse,
                              const at::Tensor& col_lse, const at::Tensor& g_row,
                              const at::Tensor& g_col) {
  const int64_t n = a.size(0), m = b.size(0);
  TORCH_CHECK(row_lse.dim() == 1 && row_lse.size(0) == n, "strip: row_lse must be [n]");
  TORCH_CHECK(g_row.dim() == 1 && g_row.size(0) == n, "strip: g_row must be [n]");
  TORCH_CHECK(col_lse.dim() == 1 && col_lse.size(0) == m, "strip: col_lse must be [m]");
  TORCH_CHECK(g_col.dim() == 1 && g_col.size(0) == m, "strip: g_col must be [m]");
}

}  // namespace gapops
