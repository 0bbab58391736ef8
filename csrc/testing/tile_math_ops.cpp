// Test-only CPU ops over the __host__ __device__ helpers of csrc/common/tile_math.h: the same
// source the CUDA kernels compile, exercised here so that tests/test_tile_math.py can check the
// per-tile math without a GPU. They live in their own library, torch.ops.gapops_testing, so the
// production namespace torch.ops.gapops holds only the strip ops; they are compiled into every
// build of the extension (they are small, and CI's installed-package job runs their tests).
#include <torch/library.h>
#include <ATen/ATen.h>

#include <vector>

#include "../common/tile_math.h"

namespace gapops {
namespace {

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " must be float32 or float64, got ", t.scalar_type());
}

void check_like(const at::Tensor& ref, const at::Tensor& t, const char* name) {
  check_float(t, name);
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " must share the dtype of the first input");
  TORCH_CHECK(t.sizes() == ref.sizes(), name, " must have shape ", ref.sizes(), ", got ", t.sizes());
}

// Runs f(T{}) with T = float or double.
template <typename F>
void float_dispatch(const at::Tensor& t, const F& f) {
  if (t.scalar_type() == at::kDouble) {
    f(double{});
  } else {
    f(float{});
  }
}

at::Tensor tile_fast_exp(const at::Tensor& x_in) {
  check_float(x_in, "x");
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  float_dispatch(x, [&](auto t) {
    using T = decltype(t);
    const T* px = x.data_ptr<T>();
    T* po = out.data_ptr<T>();
    for (int64_t k = 0; k < x.numel(); ++k) po[k] = fast_exp(px[k]);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> tile_lse_merge(const at::Tensor& m_in, const at::Tensor& s_in,
                                                  const at::Tensor& m2_in,
                                                  const at::Tensor& s2_in) {
  check_float(m_in, "m");
  check_like(m_in, s_in, "s");
  check_like(m_in, m2_in, "m2");
  check_like(m_in, s2_in, "s2");
  at::Tensor m = m_in.contiguous().clone(), s = s_in.contiguous().clone();
  const at::Tensor m2 = m2_in.contiguous(), s2 = s2_in.contiguous();
  float_dispatch(m, [&](auto t) {
    using T = decltype(t);
    T* pm = m.data_ptr<T>();
    T* ps = s.data_ptr<T>();
    const T* pm2 = m2.data_ptr<T>();
    const T* ps2 = s2.data_ptr<T>();
    for (int64_t k = 0; k < m.numel(); ++k) lse_merge(pm[k], ps[k], pm2[k], ps2[k]);
  });
  return {m, s};
}

at::Tensor tile_rel_lse_finalize(const at::Tensor& m_in, const at::Tensor& s_in,
                                 const at::Tensor& has_positive) {
  check_float(m_in, "m");
  check_like(m_in, s_in, "s");
  TORCH_CHECK(has_positive.scalar_type() == at::kBool && has_positive.sizes() == m_in.sizes(),
              "has_positive must be a bool tensor shaped like m");
  const at::Tensor m = m_in.contiguous(), s = s_in.contiguous(), hp = has_positive.contiguous();
  at::Tensor out = at::empty_like(m);
  float_dispatch(m, [&](auto t) {
    using T = decltype(t);
    const bool* ph = hp.data_ptr<bool>();
    for (int64_t k = 0; k < m.numel(); ++k)
      out.data_ptr<T>()[k] = rel_lse_finalize(m.data_ptr<T>()[k], s.data_ptr<T>()[k], ph[k]);
  });
  return out;
}

at::Tensor tile_positive_grad_weight(const at::Tensor& g_row, const at::Tensor& row_lse,
                                     const at::Tensor& g_col, const at::Tensor& col_lse) {
  check_float(g_row, "g_row");
  check_like(g_row, row_lse, "row_lse");
  check_like(g_row, g_col, "g_col");
  check_like(g_row, col_lse, "col_lse");
  const at::Tensor gr = g_row.contiguous(), rl = row_lse.contiguous();
  const at::Tensor gc = g_col.contiguous(), cl = col_lse.contiguous();
  at::Tensor out = at::empty_like(gr);
  float_dispatch(gr, [&](auto t) {
    using T = decltype(t);
    for (int64_t k = 0; k < gr.numel(); ++k)
      out.data_ptr<T>()[k] = positive_grad_weight(gr.data_ptr<T>()[k], rl.data_ptr<T>()[k],
                                                  gc.data_ptr<T>()[k], cl.data_ptr<T>()[k]);
  });
  return out;
}

// (G, grad_scale term) of pair_grad_weight, elementwise over equally shaped tensors.
std::tuple<at::Tensor, at::Tensor> tile_pair_grad_weight(
    const at::Tensor& scale, const at::Tensor& dr_in, const at::Tensor& dc_in,
    const at::Tensor& row_lse, const at::Tensor& col_lse, const at::Tensor& g_row,
    const at::Tensor& g_col) {
  check_float(dr_in, "dr");
  check_like(dr_in, dc_in, "dc");
  check_like(dr_in, row_lse, "row_lse");
  check_like(dr_in, col_lse, "col_lse");
  check_like(dr_in, g_row, "g_row");
  check_like(dr_in, g_col, "g_col");
  TORCH_CHECK(scale.numel() == 1, "scale must hold one value");
  const at::Tensor dr = dr_in.contiguous(), dc = dc_in.contiguous();
  const at::Tensor rl = row_lse.contiguous(), cl = col_lse.contiguous();
  const at::Tensor gr = g_row.contiguous(), gc = g_col.contiguous();
  at::Tensor g = at::empty_like(dr), term = at::empty_like(dr);
  float_dispatch(dr, [&](auto t) {
    using T = decltype(t);
    const T s = scale.item<double>();
    for (int64_t k = 0; k < dr.numel(); ++k)
      g.data_ptr<T>()[k] = pair_grad_weight(s, dr.data_ptr<T>()[k], dc.data_ptr<T>()[k],
                                            rl.data_ptr<T>()[k], cl.data_ptr<T>()[k],
                                            gr.data_ptr<T>()[k], gc.data_ptr<T>()[k],
                                            term.data_ptr<T>()[k]);
  });
  return {g, term};
}

}  // namespace

TORCH_LIBRARY(gapops_testing, m) {
  m.def("fast_exp(Tensor x) -> Tensor");
  m.def("lse_merge(Tensor m, Tensor s, Tensor m2, Tensor s2) -> (Tensor, Tensor)");
  m.def("rel_lse_finalize(Tensor m, Tensor s, Tensor has_positive) -> Tensor");
  m.def("positive_grad_weight(Tensor g_row, Tensor row_lse, Tensor g_col, Tensor col_lse) -> Tensor");
  m.def("pair_grad_weight(Tensor scale, Tensor dr, Tensor dc, Tensor row_lse, Tensor col_lse, "
        "Tensor g_row, Tensor g_col) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(gapops_testing, CPU, m) {
  m.impl("fast_exp", &tile_fast_exp);
  m.impl("lse_merge", &tile_lse_merge);
  m.impl("rel_lse_finalize", &tile_rel_lse_finalize);
  m.impl("positive_grad_weight", &tile_positive_grad_weight);
  m.impl("pair_grad_weight", &tile_pair_grad_weight);
}

}  // namespace gapops
