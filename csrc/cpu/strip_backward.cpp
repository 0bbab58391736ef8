// CPU strip backward: the gradient weights G of docs/design.md section 2.1, recomputed tile by
// tile, and the products grad_a += H B, grad_b += H^T A with H_ij = s rho_i sigma_j G_ij.
//
// Default: one pass over row blocks taken dynamically (work_queue.h). A block's worker owns its
// rows of grad_a and adds its tile products into grad_b under one lock per column tile: tried
// first, and when another worker holds it the product goes to a private buffer that is added
// under the lock afterwards. Consecutive blocks start at different column tiles, so two workers
// rarely want the same one. No per-thread [m, d] partials exist; grad_b's summation order (and
// only that) varies between runs.
//
// Deterministic: two passes, both dynamic. Row blocks compute grad_a and grad_scale, then column
// tiles compute grad_b, each summing in a fixed order: the same bits for any thread count and
// any scheduling, at the cost of one more tile product per tile (five instead of four).
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "../common/tile_math.h"
#include "strip_kernels.h"
#include "tile_gemm.h"
#include "tile_loops.h"
#include "work_queue.h"

namespace gapops {
namespace {

template <typename T>
struct Stats {
  const T* row_lse;
  const T* col_lse;
  const T* g_row;
  const T* g_col;
};

// Turns a tile of dots into H in place; returns the tile's share of grad_scale.
template <typename T>
double backward_tile(const StripInputs<T>& in, const Stats<T>& st, T* tile, Range rows,
                     Range cols) {
  const T s = in.s;
  const T* sigma = in.sigma + cols.start;
  const T* bp = in.b_pos + cols.start;
  const T* cl = st.col_lse + cols.start;
  const T* gc = st.g_col + cols.start;
  double ds = 0;
  for (int64_t r = 0; r < rows.size; ++r) {
    const int64_t i = rows.start + r;
    T* c = tile + r * cols.size;
    const int64_t p = in.positive_in_tile(i, cols.start, cols.size);
    const int64_t left_end = p < 0 ? cols.size : p, right_start = p < 0 ? cols.size : p + 1;
    const T rho = in.rho[i], ap = in.a_pos[i], rl = st.row_lse[i], gr = st.g_row[i];
    const T part = grad_weights(c, sigma, bp, cl, gc, 0, left_end, rho, s, ap, rl, gr) +
                   grad_weights(c, sigma, bp, cl, gc, right_start, cols.size, rho, s, ap, rl, gr);
    if (p >= 0) c[p] = s * rho * sigma[p] * positive_grad_weight(gr, rl, gc[p], cl[p]);
    ds += static_cast<double>(part);
  }
  return ds;
}

template <typename T>
void add_into(T* dst, const T* src, int64_t count) {
  for (int64_t k = 0; k < count; ++k) dst[k] += src[k];
}

// Sums per-block grad_scale shares in block order.
double ordered_sum(const std::vector<double>& parts) {
  double total = 0;
  for (double v : parts) total += v;
  return total;
}

template <typename T>
double backward_one_pass(const StripInputs<T>& in, const Stats<T>& st, T* grad_a, T* grad_b) {
  const int64_t n = in.n, m = in.m, d = in.d;
  const int64_t blocks = ceil_div(n, kRows), col_tiles = ceil_div(m, kCols);
  const int64_t workers = worker_count(blocks);
  std::fill(grad_b, grad_b + m * d, T(0));
  std::unique_ptr<std::mutex[]> locks(new std::mutex[col_tiles]);
  std::vector<double> ds_parts(blocks, 0.0);

  run_workers(blocks, [&](int64_t, WorkQueue& queue) {
    TileBuffers<T> buf(in, std::min(kRows, n), std::min(kCols, m));
    at::Tensor private_storage;  // grad_b tile when its lock is taken; made on first need
    for (int64_t blk; (blk = queue.take()) >= 0;) {
      const Range rows = block_range(blk, kRows, n);
      int64_t lda;
      const T* A = in.A.block(rows.start, rows.size, buf.a, &lda);
      T* dA = grad_a + rows.start * d;
      // Blocks that run side by side start on different column tiles.
      const int64_t first = ((blk % workers) * col_tiles) / workers;
      double ds = 0;
      for (int64_t t = 0; t < col_tiles; ++t) {
        const int64_t jt = (first + t) % col_tiles;
        const Range cols = block_range(jt, kCols, m);
        int64_t ldb;
        const T* B = in.B.block(cols.start, cols.size, buf.b, &ldb);
        tile_dots(A, lda, B, ldb, rows.size, cols.size, d, buf.tile);
        ds += backward_tile(in, st, buf.tile, rows, cols);
        tile_grad_rows(buf.tile, B, ldb, rows.size, cols.size, d, t > 0, dA);
        T* dB = grad_b + cols.start * d;
        std::unique_lock<std::mutex> hold(locks[jt], std::try_to_lock);
        if (hold.owns_lock()) {
          tile_grad_cols(buf.tile, A, lda, rows.size, cols.size, d, true, dB);
        } else {
          if (!private_storage.defined())
            private_storage = at::empty({std::min(kCols, m) * d}, buf.tile_storage.options());
          T* own = private_storage.data_ptr<T>();
          tile_grad_cols(buf.tile, A, lda, rows.size, cols.size, d, false, own);
          hold.lock();
          add_into(dB, own, cols.size * d);
        }
      }
      ds_parts[blk] = ds;
    }
  });
  return ordered_sum(ds_parts);
}

template <typename T>
double backward_two_pass(const StripInputs<T>& in, const Stats<T>& st, T* grad_a, T* grad_b) {
  const int64_t n = in.n, m = in.m, d = in.d;
  const int64_t blocks = ceil_div(n, kRows), col_tiles = ceil_div(m, kCols);
  std::vector<double> ds_parts(blocks, 0.0);

  run_workers(blocks, [&](int64_t, WorkQueue& queue) {  // grad_a and grad_scale
    TileBuffers<T> buf(in, std::min(kRows, n), std::min(kCols, m));
    for (int64_t blk; (blk = queue.take()) >= 0;) {
      const Range rows = block_range(blk, kRows, n);
      int64_t lda;
      const T* A = in.A.block(rows.start, rows.size, buf.a, &lda);
      double ds = 0;
      for (int64_t jt = 0; jt < col_tiles; ++jt) {
        const Range cols = block_range(jt, kCols, m);
        int64_t ldb;
        const T* B = in.B.block(cols.start, cols.size, buf.b, &ldb);
        tile_dots(A, lda, B, ldb, rows.size, cols.size, d, buf.tile);
        ds += backward_tile(in, st, buf.tile, rows, cols);
        tile_grad_rows(buf.tile, B, ldb, rows.size, cols.size, d, jt > 0,
                       grad_a + rows.start * d);
      }
      ds_parts[blk] = ds;
    }
  });

  run_workers(col_tiles, [&](int64_t, WorkQueue& queue) {  // grad_b
    TileBuffers<T> buf(in, std::min(kRows, n), std::min(kCols, m));
    for (int64_t jt; (jt = queue.take()) >= 0;) {
      const Range cols = block_range(jt, kCols, m);
      int64_t ldb;
      const T* B = in.B.block(cols.start, cols.size, buf.b, &ldb);
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const Range rows = block_range(blk, kRows, n);
        int64_t lda;
        const T* A = in.A.block(rows.start, rows.size, buf.a, &lda);
        tile_dots(A, lda, B, ldb, rows.size, cols.size, d, buf.tile);
        backward_tile(in, st, buf.tile, rows, cols);
        tile_grad_cols(buf.tile, A, lda, rows.size, cols.size, d, blk > 0,
                       grad_b + cols.start * d);
      }
    }
  });
  return ordered_sum(ds_parts);
}

}  // namespace

template <typename T>
double strip_backward_cpu_impl(const StripInputs<T>& in, const T* row_lse, const T* col_lse,
                               const T* g_row, const T* g_col, bool deterministic, T* grad_a,
                               T* grad_b) {
  const Stats<T> st{row_lse, col_lse, g_row, g_col};
  return deterministic ? backward_two_pass(in, st, grad_a, grad_b)
                       : backward_one_pass(in, st, grad_a, grad_b);
}

template double strip_backward_cpu_impl<float>(const StripInputs<float>&, const float*,
                                               const float*, const float*, const float*, bool,
                                               float*, float*);
template double strip_backward_cpu_impl<double>(const StripInputs<double>&, const double*,
                                                const double*, const double*, const double*,
                                                bool, double*, double*);

}  // namespace gapops
