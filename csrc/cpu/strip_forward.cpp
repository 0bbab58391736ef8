// CPU strip forward: the relative row and column statistics of docs/design.md section 2.1.
//
// Work items are chunks of consecutive row blocks, taken dynamically (work_queue.h). A worker
// folds each tile of dots into its block's row states (the block's rows are finished inside the
// item, in a fixed column order) and into its chunk's column states; the chunks' column states
// are merged in chunk order at the end, so the result does not depend on which thread ran what.
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "../common/tile_math.h"
#include "strip_kernels.h"
#include "tile_gemm.h"
#include "tile_loops.h"
#include "work_queue.h"

namespace gapops {
namespace {

// Column states of all chunks together stay under this (they are 2 m values per chunk).
constexpr int64_t kColumnStateBytes = int64_t{16} << 20;
constexpr int64_t kMergeColumns = 16384;  // columns per work item of the final merge

// The state (M, S) of every row and column starts at (0, 0): M = max(0, terms seen) and S the
// sum of e^(x - M) over the terms other than the positive (tile_math.h, rel_lse_finalize).
// Two sweeps over the tile: cosines and maxima, then both exponential sums from one read.
template <typename T>
void forward_tile(const StripInputs<T>& in, const Positives<T>& pos, T* tile, Range rows, Range cols, T* row_m, T* row_s,
                  T* col_m, T* col_s, T* cmax, T* rmax) {
  const T s = in.s;
  const T* sigma = in.sigma + cols.start;
  const T* bp = pos.b_pos + cols.start;
  col_m += cols.start;
  col_s += cols.start;
  std::copy(col_m, col_m + cols.size, cmax);
  for (int64_t r = 0; r < rows.size; ++r) {
    const int64_t i = rows.start + r;
    T* c = tile + r * cols.size;
    const int64_t p = in.positive_in_tile(i, cols.start, cols.size);
    const int64_t left_end = p < 0 ? cols.size : p, right_start = p < 0 ? cols.size : p + 1;
    const T rho = in.rho[i], ap = pos.a_pos[i];
    T mx = cosines_and_maxima(c, sigma, bp, cmax, 0, left_end, rho, s, ap, row_m[r]);
    rmax[r] = cosines_and_maxima(c, sigma, bp, cmax, right_start, cols.size, rho, s, ap, mx);
  }
  rescale_sums(col_s, col_m, cmax, 0, cols.size);
  for (int64_t r = 0; r < rows.size; ++r) {
    const int64_t i = rows.start + r;
    const T* c = tile + r * cols.size;
    const int64_t p = in.positive_in_tile(i, cols.start, cols.size);
    const int64_t left_end = p < 0 ? cols.size : p, right_start = p < 0 ? cols.size : p + 1;
    const T ap = pos.a_pos[i], mx = rmax[r];
    const T sum = exp_sums(c, bp, col_m, col_s, 0, left_end, s, ap, mx) +
                  exp_sums(c, bp, col_m, col_s, right_start, cols.size, s, ap, mx);
    row_s[r] = row_s[r] * fast_exp(row_m[r] - mx) + sum;
    row_m[r] = mx;
  }
}

// Chunks: enough for dynamic balance (a descheduled thread holds up one chunk), few enough that
// their column states stay small. Depends only on the sizes and the thread count.
int64_t chunk_count(int64_t blocks, int64_t m, int64_t bytes_per_value) {
  const int64_t threads = at::get_num_threads();
  const int64_t by_memory = kColumnStateBytes / std::max<int64_t>(1, 2 * m * bytes_per_value);
  return std::max<int64_t>(1, std::min(blocks, std::max(threads, std::min(8 * threads, by_memory))));
}

}  // namespace

template <typename T>
void strip_forward_cpu_impl(const StripInputs<T>& in, const Positives<T>& pos, T* row_lse,
                            T* col_lse) {
  const int64_t n = in.n, m = in.m;
  const int64_t blocks = ceil_div(n, kRows), col_tiles = ceil_div(m, kCols);
  const int64_t chunks = chunk_count(blocks, m, sizeof(T));
  std::vector<T> col_m(chunks * m, T(0)), col_s(chunks * m, T(0));

  run_workers(chunks, [&](int64_t, WorkQueue& queue) {
    TileBuffers<T> buf(in, std::min(kRows, n), std::min(kCols, m));
    std::vector<T> cmax(kCols), rmax(kRows), row_m(kRows), row_s(kRows);
    for (int64_t chunk; (chunk = queue.take()) >= 0;) {
      T* cm = col_m.data() + chunk * m;
      T* cs = col_s.data() + chunk * m;
      for (int64_t blk = chunk * blocks / chunks; blk < (chunk + 1) * blocks / chunks; ++blk) {
        const Range rows = block_range(blk, kRows, n);
        int64_t lda;
        const T* A = in.A.block(rows.start, rows.size, buf.a, &lda);
        std::fill(row_m.begin(), row_m.end(), T(0));
        std::fill(row_s.begin(), row_s.end(), T(0));
        for (int64_t jt = 0; jt < col_tiles; ++jt) {
          const Range cols = block_range(jt, kCols, m);
          int64_t ldb;
          const T* B = in.B.block(cols.start, cols.size, buf.b, &ldb);
          tile_dots(A, lda, B, ldb, rows.size, cols.size, in.d, buf.tile);
          forward_tile(in, pos, buf.tile, rows, cols, row_m.data(), row_s.data(), cm, cs, cmax.data(),
                       rmax.data());
        }
        for (int64_t r = 0; r < rows.size; ++r)
          row_lse[rows.start + r] = rel_lse_finalize(row_m[r], row_s[r], true);
      }
    }
  });

  run_workers(ceil_div(m, kMergeColumns), [&](int64_t, WorkQueue& queue) {
    for (int64_t item; (item = queue.take()) >= 0;) {
      const Range cols = block_range(item, kMergeColumns, m);
      for (int64_t j = cols.start; j < cols.start + cols.size; ++j) {
        T mx = col_m[j], sum = col_s[j];
        for (int64_t c = 1; c < chunks; ++c) lse_merge(mx, sum, col_m[c * m + j], col_s[c * m + j]);
        col_lse[j] = rel_lse_finalize(mx, sum, in.column_has_positive(j));
      }
    }
  });
}

template void strip_forward_cpu_impl<float>(const StripInputs<float>&, const Positives<float>&,
                                            float*, float*);
template void strip_forward_cpu_impl<double>(const StripInputs<double>&,
                                             const Positives<double>&, double*, double*);

}  // namespace gapops
