// Argument checks shared by the CPU and CUDA strip ops; the Python API checks users' inputs
// first, these guard the ops when they are called directly (torch.ops.gapops.*).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

namespace gapops {

// The dtype the strip accumulates and returns in: fp64 for fp64 features, fp32 for every other
// (the one place the host code of both backends decides it).
inline at::ScalarType accumulation_type(const at::Tensor& features) {
  return features.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The feature rows' shapes and dtypes, the scale and the offset (a, b: the strip's row and column
// sources; their *_alt twins are checked by check_strip_inputs below).
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

namespace detail {
inline void check_twin(const at::Tensor& main, const at::Tensor& alt, const char* name) {
  TORCH_CHECK(alt.sizes() == main.sizes() && alt.scalar_type() == main.scalar_type() &&
                  alt.device() == main.device(),
              "strip: ", name, "_alt must match ", name, " in shape, dtype and device, got ",
              alt.sizes(), " ", alt.scalar_type(), " vs ", main.sizes(), " ", main.scalar_type());
}

inline void check_swap(const c10::optional<at::Tensor>& swap, const at::Tensor& main,
                       const char* name) {
  if (!swap.has_value()) return;
  TORCH_CHECK(swap->scalar_type() == at::kBool && swap->dim() == 1 &&
                  swap->size(0) == main.size(0) && swap->device() == main.device(),
              "strip: ", name, "_swap must be a bool tensor [", main.size(0), "] on ",
              main.device(), ", got ", swap->scalar_type(), " ", swap->sizes());
}

inline void check_row_vector(const at::Tensor& v, int64_t rows, const at::Tensor& like,
                             const char* name) {
  TORCH_CHECK(v.dim() == 1 && v.size(0) == rows && v.is_floating_point() &&
                  v.device() == like.device(),
              "strip: ", name, " must be a floating point tensor [", rows, "] on ", like.device(),
              ", got ", v.scalar_type(), " ", v.sizes(), " on ", v.device());
}
}  // namespace detail

// The routed rows and columns, their inverse norms, the scale and the offset: the arguments the
// softmax and sigmoid strips share.
inline void check_strip_rows(const at::Tensor& a, const at::Tensor& a_alt,
                             const c10::optional<at::Tensor>& a_swap, const at::Tensor& b,
                             const at::Tensor& b_alt, const c10::optional<at::Tensor>& b_swap,
                             const at::Tensor& a_inv_norm, const at::Tensor& b_inv_norm,
                             const at::Tensor& scale, int64_t offset) {
  check_strip_inputs(a, b, scale, offset);
  detail::check_twin(a, a_alt, "a");
  detail::check_twin(b, b_alt, "b");
  detail::check_swap(a_swap, a, "a");
  detail::check_swap(b_swap, b, "b");
  detail::check_row_vector(a_inv_norm, a.size(0), a, "a_inv_norm");
  detail::check_row_vector(b_inv_norm, b.size(0), a, "b_inv_norm");
  TORCH_CHECK(scale.is_floating_point() && scale.device() == a.device(),
              "strip: scale must be a floating point tensor on ", a.device());
}

// Every argument of strip_forward (and the leading ones of strip_backward), v2 schema.
inline void check_strip_inputs(const at::Tensor& a, const at::Tensor& a_alt,
                               const c10::optional<at::Tensor>& a_swap, const at::Tensor& b,
                               const at::Tensor& b_alt, const c10::optional<at::Tensor>& b_swap,
                               const at::Tensor& a_inv_norm, const at::Tensor& b_inv_norm,
                               const at::Tensor& a_pos, const at::Tensor& b_pos,
                               const at::Tensor& scale, int64_t offset) {
  check_strip_rows(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale, offset);
  detail::check_row_vector(a_pos, a.size(0), a, "a_pos");
  detail::check_row_vector(b_pos, b.size(0), a, "b_pos");
}

// The sigmoid strip's own arguments (docs/design.md section 2.6), after check_strip_rows.
inline void check_sigmoid_strip_args(const at::Tensor& a, const at::Tensor& bias,
                                      const c10::optional<at::Tensor>& g_row) {
  TORCH_CHECK(bias.numel() == 1 && bias.is_floating_point() && bias.device() == a.device(),
              "sigmoid_strip: bias must be a floating point tensor holding one value on ",
              a.device(), ", got ", bias.scalar_type(), " ", bias.sizes(), " on ", bias.device());
  if (g_row.has_value()) detail::check_row_vector(*g_row, a.size(0), a, "g_row");
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
