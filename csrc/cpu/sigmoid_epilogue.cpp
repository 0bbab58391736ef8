// CPU sigmoid strip (docs/design.md section 2.6): the sigmoid epilogue on the shared tile passes
// of tile_passes.h. want_loss alone: one tile product per tile (tile_rows_pass); want_grads: the
// tile, grad_a += H B and grad_b += H^T A, three products per tile (tile_grad_passes, one pass
// with locked grad_b tiles, or two passes and four products when deterministic), the loss
// computed in the same pass when wanted.
#include <ATen/ATen.h>

#include <algorithm>

#include "../common/tile_math.h"
#include "sigmoid_loops.h"
#include "strip_kernels.h"
#include "tile_passes.h"

namespace gapops {
namespace {

// A tile of dots -> H in place (kGrad), the rows' loss terms added to row_loss (kLoss; only in
// the call that owns the rows) and the sums (grad_scale, grad_bias).
template <typename T, bool kLoss, bool kGrad>
struct SigmoidEpilogue {
  static constexpr int kSums = 2;  // grad_scale, grad_bias
  const StripInputs<T>& in;
  T bias;
  const T* w;   // g_row [n], or nullptr for ones
  T* row_loss;  // [n], zeroed; nullptr unless kLoss

  void operator()(T* tile, Range rows, Range cols, double* sums) const {
    if (sums == nullptr) {
      terms<false>(tile, rows, cols, nullptr);  // H alone (deterministic grad_b pass)
    } else {
      terms<kLoss>(tile, rows, cols, sums);
    }
  }

  template <bool kRowLoss>
  void terms(T* tile, Range rows, Range cols, double* sums) const {
    const T s = in.s;
    const T* sigma = in.sigma + cols.start;
    double grad_scale = 0, grad_bias = 0;
    for (int64_t r = 0; r < rows.size; ++r) {
      const int64_t i = rows.start + r;
      T* c = tile + r * cols.size;
      const int64_t p = in.positive_in_tile(i, cols.start, cols.size);
      const int64_t left_end = p < 0 ? cols.size : p, right_start = p < 0 ? cols.size : p + 1;
      const T rho = in.rho[i], wi = w != nullptr ? w[i] : T(1);
      SigmoidSums<T> row;
      sigmoid_terms<kRowLoss, kGrad>(c, sigma, 0, left_end, rho, s, bias, wi, row);
      sigmoid_terms<kRowLoss, kGrad>(c, sigma, right_start, cols.size, rho, s, bias, wi, row);
      if (p >= 0) {  // the positive pair, label +1
        const T cs = rho * sigma[p] * c[p];
        T gw;
        row.loss += sigmoid_pair(s * cs + bias, true, wi, gw);
        if (kGrad) {
          row.g += gw;
          row.g_cos += gw * cs;
          c[p] = s * rho * sigma[p] * gw;
        }
      }
      if (kRowLoss) row_loss[i] += row.loss;
      grad_scale += static_cast<double>(row.g_cos);
      grad_bias += static_cast<double>(row.g);
    }
    if (sums != nullptr) {
      sums[0] += grad_scale;
      sums[1] += grad_bias;
    }
  }
};

template <typename T, bool kLoss>
void grad_passes(const StripInputs<T>& in, T bias, const T* g_row, bool deterministic,
                 T* row_loss, T* grad_a, T* grad_b, double* sums) {
  const SigmoidEpilogue<T, kLoss, true> epi{in, bias, g_row, row_loss};
  tile_grad_passes(in, epi, deterministic, grad_a, grad_b, sums);
}

}  // namespace

template <typename T>
void sigmoid_strip_cpu_impl(const StripInputs<T>& in, T bias, const T* g_row, bool want_loss,
                            bool want_grads, bool deterministic, T* row_loss, T* grad_a,
                            T* grad_b, double* grad_scale_bias) {
  grad_scale_bias[0] = grad_scale_bias[1] = 0;
  if (want_loss) std::fill(row_loss, row_loss + in.n, T(0));
  if (want_grads && want_loss) {
    grad_passes<T, true>(in, bias, g_row, deterministic, row_loss, grad_a, grad_b,
                         grad_scale_bias);
  } else if (want_grads) {
    grad_passes<T, false>(in, bias, g_row, deterministic, nullptr, grad_a, grad_b,
                          grad_scale_bias);
  } else if (want_loss) {
    double unused[2];
    tile_rows_pass(in, SigmoidEpilogue<T, true, false>{in, bias, g_row, row_loss}, unused);
  }
}

template void sigmoid_strip_cpu_impl<float>(const StripInputs<float>&, float, const float*, bool,
                                            bool, bool, float*, float*, float*, double*);
template void sigmoid_strip_cpu_impl<double>(const StripInputs<double>&, double, const double*,
                                             bool, bool, bool, double*, double*, double*,
                                             double*);

}  // namespace gapops
