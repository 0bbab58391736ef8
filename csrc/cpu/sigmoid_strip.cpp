// CPU implementation of gapops::sigmoid_strip (schema in csrc/ops.cpp, contract in
// docs/design.md section 2.6): argument checks, dtype dispatch, outputs. The kernel is in
// sigmoid_epilogue.cpp, on the tile passes the softmax backward uses too (docs/cpu.md).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "../common/strip_checks.h"
#include "op_args.h"
#include "strip_kernels.h"

namespace gapops {
namespace {

template <typename T>
void run_sigmoid_strip(const at::Tensor& a, const at::Tensor& a_alt,
                       const c10::optional<at::Tensor>& a_swap, const at::Tensor& b,
                       const at::Tensor& b_alt, const c10::optional<at::Tensor>& b_swap,
                       const at::Tensor& rho, const at::Tensor& sigma, const at::Tensor& scale,
                       const at::Tensor& bias, int64_t offset, const at::Tensor& w,
                       bool want_loss, bool want_grads, bool deterministic, at::Tensor& row_loss,
                       at::Tensor& grad_a, at::Tensor& grad_b, double* grad_scale_bias) {
  sigmoid_strip_cpu_impl(
      strip_inputs<T>(a, a_alt, a_swap, b, b_alt, b_swap, rho, sigma, scale, offset),
      bias.item<T>(), w.defined() ? w.data_ptr<T>() : nullptr, want_loss, want_grads,
      deterministic, want_loss ? row_loss.data_ptr<T>() : nullptr,
      want_grads ? grad_a.data_ptr<T>() : nullptr, want_grads ? grad_b.data_ptr<T>() : nullptr,
      grad_scale_bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sigmoid_strip_cpu(
    const at::Tensor& a, const at::Tensor& a_alt, const c10::optional<at::Tensor>& a_swap,
    const at::Tensor& b, const at::Tensor& b_alt, const c10::optional<at::Tensor>& b_swap,
    const at::Tensor& a_inv_norm, const at::Tensor& b_inv_norm, const at::Tensor& scale,
    const at::Tensor& bias, int64_t offset, const c10::optional<at::Tensor>& g_row,
    bool want_loss, bool want_grads, bool deterministic) {
  check_strip_rows(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale, offset);
  check_sigmoid_strip_args(a, bias, g_row);
  check_cpu({&a, &a_alt, &b, &b_alt, &a_inv_norm, &b_inv_norm, &scale, &bias});
  if (g_row.has_value()) check_cpu({&*g_row});
  const auto acc = accumulation_type(a);
  const at::Tensor rho = acc_vector(a_inv_norm, acc), sigma = acc_vector(b_inv_norm, acc);
  const at::Tensor w = g_row.has_value() ? acc_vector(*g_row, acc) : at::Tensor();
  const auto opts = a.options().dtype(acc);
  const int64_t n = a.size(0), m = b.size(0), d = a.size(1);
  at::Tensor row_loss = at::empty({want_loss ? n : 0}, opts);
  at::Tensor grad_a = at::empty({want_grads ? n : 0, d}, opts);
  at::Tensor grad_b = at::empty({want_grads ? m : 0, d}, opts);
  double sums[2];
  if (acc == at::kDouble) {
    run_sigmoid_strip<double>(a, a_alt, a_swap, b, b_alt, b_swap, rho, sigma, scale, bias, offset,
                              w, want_loss, want_grads, deterministic, row_loss, grad_a, grad_b,
                              sums);
  } else {
    run_sigmoid_strip<float>(a, a_alt, a_swap, b, b_alt, b_swap, rho, sigma, scale, bias, offset,
                             w, want_loss, want_grads, deterministic, row_loss, grad_a, grad_b,
                             sums);
  }
  return {row_loss, grad_a, grad_b, at::scalar_tensor(sums[0], opts),
          at::scalar_tensor(sums[1], opts)};
}

}  // namespace

TORCH_LIBRARY_IMPL(gapops, CPU, m) { m.impl("sigmoid_strip", &sigmoid_strip_cpu); }

}  // namespace gapops
