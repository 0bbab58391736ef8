// CPU implementations of gapops::strip_forward / strip_backward (schemas in csrc/ops.cpp,
// contract in docs/design.md section 2.1): argument checks, dtype dispatch, outputs. The passes
// themselves are in strip_forward.cpp and strip_backward.cpp; how they use the cores and memory
// is described in docs/cpu.md.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "../common/strip_checks.h"
#include "op_args.h"
#include "strip_kernels.h"

namespace gapops {
namespace {

// The tensors the kernels point into, kept alive for the duration of one op call.
struct Prepared {
  at::Tensor rho, sigma, a_pos, b_pos;

  template <typename T>
  Positives<T> positives() const {
    return {a_pos.data_ptr<T>(), b_pos.data_ptr<T>()};
  }
};

Prepared prepare(const at::Tensor& a_inv_norm, const at::Tensor& b_inv_norm,
                 const at::Tensor& a_pos, const at::Tensor& b_pos, at::ScalarType acc) {
  return {acc_vector(a_inv_norm, acc), acc_vector(b_inv_norm, acc), acc_vector(a_pos, acc),
          acc_vector(b_pos, acc)};
}

std::tuple<at::Tensor, at::Tensor> strip_forward_cpu(
    const at::Tensor& a, const at::Tensor& a_alt, const c10::optional<at::Tensor>& a_swap,
    const at::Tensor& b, const at::Tensor& b_alt, const c10::optional<at::Tensor>& b_swap,
    const at::Tensor& a_inv_norm, const at::Tensor& b_inv_norm, const at::Tensor& a_pos,
    const at::Tensor& b_pos, const at::Tensor& scale, int64_t offset) {
  check_strip_inputs(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                     scale, offset);
  check_cpu({&a, &a_alt, &b, &b_alt, &a_inv_norm, &b_inv_norm, &a_pos, &b_pos, &scale});
  const auto acc = accumulation_type(a);
  const Prepared p = prepare(a_inv_norm, b_inv_norm, a_pos, b_pos, acc);
  const auto opts = a.options().dtype(acc);
  at::Tensor row_lse = at::empty({a.size(0)}, opts), col_lse = at::empty({b.size(0)}, opts);
  if (acc == at::kDouble) {
    strip_forward_cpu_impl(strip_inputs<double>(a, a_alt, a_swap, b, b_alt, b_swap, p.rho, p.sigma, scale, offset),
        p.positives<double>(),
                           row_lse.data_ptr<double>(), col_lse.data_ptr<double>());
  } else {
    strip_forward_cpu_impl(strip_inputs<float>(a, a_alt, a_swap, b, b_alt, b_swap, p.rho, p.sigma, scale, offset),
        p.positives<float>(),
                           row_lse.data_ptr<float>(), col_lse.data_ptr<float>());
  }
  return {row_lse, col_lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> strip_backward_cpu(
    const at::Tensor& a, const at::Tensor& a_alt, const c10::optional<at::Tensor>& a_swap,
    const at::Tensor& b, const at::Tensor& b_alt, const c10::optional<at::Tensor>& b_swap,
    const at::Tensor& a_inv_norm, const at::Tensor& b_inv_norm, const at::Tensor& a_pos,
    const at::Tensor& b_pos, const at::Tensor& scale, int64_t offset, const at::Tensor& row_lse,
    const at::Tensor& col_lse, const at::Tensor& g_row, const at::Tensor& g_col,
    bool deterministic) {
  check_strip_inputs(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                     scale, offset);
  check_strip_stats(a, b, row_lse, col_lse, g_row, g_col);
  check_cpu({&a, &a_alt, &b, &b_alt, &a_inv_norm, &b_inv_norm, &a_pos, &b_pos, &scale, &row_lse,
             &col_lse, &g_row, &g_col});
  const auto acc = accumulation_type(a);
  const Prepared p = prepare(a_inv_norm, b_inv_norm, a_pos, b_pos, acc);
  const at::Tensor rl = acc_vector(row_lse, acc), cl = acc_vector(col_lse, acc);
  const at::Tensor gr = acc_vector(g_row, acc), gc = acc_vector(g_col, acc);
  const auto opts = a.options().dtype(acc);
  at::Tensor grad_a = at::empty({a.size(0), a.size(1)}, opts);
  at::Tensor grad_b = at::empty({b.size(0), b.size(1)}, opts);
  double ds;
  if (acc == at::kDouble) {
    ds = strip_backward_cpu_impl(
        strip_inputs<double>(a, a_alt, a_swap, b, b_alt, b_swap, p.rho, p.sigma, scale, offset),
        p.positives<double>(),
        rl.data_ptr<double>(), cl.data_ptr<double>(), gr.data_ptr<double>(),
        gc.data_ptr<double>(), deterministic, grad_a.data_ptr<double>(),
        grad_b.data_ptr<double>());
  } else {
    ds = strip_backward_cpu_impl(
        strip_inputs<float>(a, a_alt, a_swap, b, b_alt, b_swap, p.rho, p.sigma, scale, offset),
        p.positives<float>(),
        rl.data_ptr<float>(), cl.data_ptr<float>(), gr.data_ptr<float>(), gc.data_ptr<float>(),
        deterministic, grad_a.data_ptr<float>(), grad_b.data_ptr<float>());
  }
  return {grad_a, grad_b, at::scalar_tensor(ds, opts)};
}

}  // namespace

TORCH_LIBRARY_IMPL(gapops, CPU, m) {
  m.impl("strip_forward", &strip_forward_cpu);
  m.impl("strip_backward", &strip_backward_cpu);
}

}  // namespace gapops
