// What the CPU op entry points (strip.cpp: the softmax strip, sigmoid_strip.cpp: the sigmoid
// strip) share: the device check, per-row vectors in the accumulation dtype, and the kernels'
// view of the routed rows (StripInputs).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <initializer_list>

#include "strip_inputs.h"

namespace gapops {

inline void check_cpu(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors)
    TORCH_CHECK(t->device().is_cpu(), "strip (cpu backend): every tensor must be on the CPU, got ",
                t->device());
}

// A per-row vector as a contiguous array of the accumulation dtype (a copy only when needed).
inline at::Tensor acc_vector(const at::Tensor& v, at::ScalarType acc) {
  return v.to(acc).contiguous();
}

// rho, sigma: a_inv_norm and b_inv_norm as acc_vector()s, kept alive by the caller for the call.
template <typename T>
StripInputs<T> strip_inputs(const at::Tensor& a, const at::Tensor& a_alt,
                            const c10::optional<at::Tensor>& a_swap, const at::Tensor& b,
                            const at::Tensor& b_alt, const c10::optional<at::Tensor>& b_swap,
                            const at::Tensor& rho, const at::Tensor& sigma,
                            const at::Tensor& scale, int64_t offset) {
  return StripInputs<T>{RowSource<T>(a, a_alt, a_swap),
                        RowSource<T>(b, b_alt, b_swap),
                        rho.data_ptr<T>(),
                        sigma.data_ptr<T>(),
                        scale.item<T>(),
                        a.size(0),
                        b.size(0),
                        a.size(1),
                        offset};
}

}  // namespace gapops
