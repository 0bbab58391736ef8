// The CPU strip kernels on prepared inputs: the softmax strip's forward and backward
// (docs/design.md section 2.1) and the sigmoid strip (section 2.6); the op entry points in
// strip.cpp and sigmoid_strip.cpp check and prepare the arguments. T: float or double (the
// accumulation dtype).
#pragma once

#include "strip_inputs.h"

namespace gapops {

// The positives' cosines the softmax statistics are relative to (docs/design.md section 2.1).
template <typename T>
struct Positives {
  const T* a_pos;  // [n]
  const T* b_pos;  // [m]
};

// row_lse [n], col_lse [m]: the relative statistics. Deterministic for a fixed thread count.
template <typename T>
void strip_forward_cpu_impl(const StripInputs<T>& in, const Positives<T>& pos, T* row_lse,
                            T* col_lse);

// grad_a [n, d], grad_b [m, d] (row-major, written whole); returns grad_scale. With
// deterministic, the same bits on every run and for every thread count (two passes: five tile
// products instead of four); without, only grad_b's summation order varies between runs.
template <typename T>
double strip_backward_cpu_impl(const StripInputs<T>& in, const Positives<T>& pos,
                               const T* row_lse, const T* col_lse, const T* g_row,
                               const T* g_col, bool deterministic, T* grad_a, T* grad_b);

// The sigmoid strip: row_loss [n] (zeroed and filled when want_loss), grad_a [n, d] and grad_b
// [m, d] (written whole when want_grads), grad_scale_bias[0..1] = (grad_scale, grad_bias) (0
// unless want_grads). g_row [n] the upstream weights, or nullptr for ones. want_loss alone is one
// tile product per tile; want_grads three (four when deterministic: then the same bits on every
// run and for every thread count; without, grad_b's summation order varies between runs and
// row_loss's with the thread count).
template <typename T>
void sigmoid_strip_cpu_impl(const StripInputs<T>& in, T bias, const T* g_row, bool want_loss,
                            bool want_grads, bool deterministic, T* row_loss, T* grad_a,
                            T* grad_b, double* grad_scale_bias);

}  // namespace gapops
