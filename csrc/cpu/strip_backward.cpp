// CPU strip backward: the gradient weights G of docs/design.md section 2.1, recomputed tile by
// tile, and the products grad_a += H B, grad_b += H^T A with H_ij = s rho_i sigma_j G_ij. The
// passes (one-pass with locked grad_b tiles by default, two passes when deterministic) are the
// shared ones of tile_passes.h; this file is the softmax epilogue.
#include <ATen/ATen.h>

#include "../common/tile_math.h"
#include "strip_kernels.h"
#include "tile_loops.h"
#include "tile_passes.h"

namespace gapops {
namespace {

// The softmax epilogue: a tile of dots -> H in place, and the tile's share of grad_scale.
template <typename T>
struct SoftmaxGradEpilogue {
  static constexpr int kSums = 1;  // grad_scale
  const StripInputs<T>& in;
  Positives<T> pos;
  const T* row_lse;
  const T* col_lse;
  const T* g_row;
  const T* g_col;

  void operator()(T* tile, Range rows, Range cols, double* sums) const {
    const T s = in.s;
    const T* sigma = in.sigma + cols.start;
    const T* bp = pos.b_pos + cols.start;
    const T* cl = col_lse + cols.start;
    const T* gc = g_col + cols.start;
    double ds = 0;
    for (int64_t r = 0; r < rows.size; ++r) {
      const int64_t i = rows.start + r;
      T* c = tile + r * cols.size;
      const int64_t p = in.positive_in_tile(i, cols.start, cols.size);
      const int64_t left_end = p < 0 ? cols.size : p, right_start = p < 0 ? cols.size : p + 1;
      const T rho = in.rho[i], ap = pos.a_pos[i], rl = row_lse[i], gr = g_row[i];
      const T part = grad_weights(c, sigma, bp, cl, gc, 0, left_end, rho, s, ap, rl, gr) +
                     grad_weights(c, sigma, bp, cl, gc, right_start, cols.size, rho, s, ap, rl, gr);
      if (p >= 0) c[p] = s * rho * sigma[p] * positive_grad_weight(gr, rl, gc[p], cl[p]);
      ds += static_cast<double>(part);
    }
    if (sums != nullptr) sums[0] += ds;
  }
};

}  // namespace

template <typename T>
double strip_backward_cpu_impl(const StripInputs<T>& in, const Positives<T>& pos,
                               const T* row_lse, const T* col_lse, const T* g_row,
                               const T* g_col, bool deterministic, T* grad_a, T* grad_b) {
  const SoftmaxGradEpilogue<T> epi{in, pos, row_lse, col_lse, g_row, g_col};
  double grad_scale = 0;
  tile_grad_passes(in, epi, deterministic, grad_a, grad_b, &grad_scale);
  return grad_scale;
}

template double strip_backward_cpu_impl<float>(const StripInputs<float>&,
                                               const Positives<float>&, const float*,
                                               const float*, const float*, const float*, bool,
                                               float*, float*);
template double strip_backward_cpu_impl<double>(const StripInputs<double>&,
                                                const Positives<double>&, const double*,
                                                const double*, const double*, const double*,
                                                bool, double*, double*);

}  // namespace gapops
