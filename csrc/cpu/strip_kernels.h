// The CPU strip passes (docs/design.md section 2.1), on prepared inputs; the op entry points in
// strip.cpp check and prepare the arguments. T: float or double (the accumulation dtype).
#pragma once

#include "strip_inputs.h"

namespace gapops {

// row_lse [n], col_lse [m]: the relative statistics. Deterministic for a fixed thread count.
template <typename T>
void strip_forward_cpu_impl(const StripInputs<T>& in, T* row_lse, T* col_lse);

// grad_a [n, d], grad_b [m, d] (row-major, written whole); returns grad_scale. With
// deterministic, the same bits on every run and for every thread count (two passes: five tile
// products instead of four); without, only grad_b's summation order varies between runs.
template <typename T>
double strip_backward_cpu_impl(const StripInputs<T>& in, const T* row_lse, const T* col_lse,
                               const T* g_row, const T* g_col, bool deterministic, T* grad_a,
                               T* grad_b);

}  // namespace gapops
