// The tile passes both CPU losses share (docs/cpu.md, "Tile passes"): the softmax backward
// (strip_backward.cpp) and the sigmoid strip (sigmoid_strip.cpp) differ only in their epilogue,
// the per-element work that turns one tile of raw dots into what the loss needs.
//
// An epilogue E over accumulation type T provides
//   static constexpr int kSums;   // how many scalar sums it returns (grad_scale, grad_bias, ...)
//   void operator()(T* tile, Range rows, Range cols, double* sums) const;
// It receives the tile of dots D_ij = A_i.B_j (rows.size x cols.size, row stride cols.size). When
// products follow it leaves H_ij = s rho_i sigma_j G_ij there. sums (kSums values) is where it adds
// its scalar sums and marks the call that owns the rows (per-row outputs are added only then);
// it is nullptr in the deterministic grad_b pass, which recomputes a tile for its H alone.
//
// tile_rows_pass: one product per tile (dots, epilogue), row blocks taken dynamically, column
//   tiles in order: the same bits on every run and for every thread count.
// tile_grad_passes: three products per tile (dots, grad_a += H B, grad_b += H^T A).
//   Default: one pass over row blocks. A block's worker owns its rows of grad_a and adds its
//   products into grad_b under one lock per column tile: tried first, and when another worker
//   holds it the product goes to a private buffer that is added under the lock afterwards.
//   Consecutive blocks start at different column tiles, so two workers rarely want the same one.
//   No per-thread [m, d] partials exist; grad_b's summation order varies between runs, and the
//   per-row outputs' (the rotated column order) with the thread count.
//   Deterministic: two passes, both dynamic. Row blocks compute grad_a, the per-row outputs and
//   the sums, then column tiles compute grad_b, each summing in a fixed order: the same bits for
//   any thread count and any scheduling, at the cost of one more tile product per tile.
// The per-block sums are added in block order at the end in both.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <memory>
#include <mutex>
#include <vector>

#include "strip_inputs.h"
#include "tile_gemm.h"
#include "work_queue.h"

namespace gapops {
namespace detail {

template <int K>
using BlockSums = std::vector<std::array<double, K>>;

// sums[k] = the blocks' k-th sums added in block order (independent of the scheduling).
template <int K>
void sum_in_block_order(const BlockSums<K>& parts, double* sums) {
  for (int k = 0; k < K; ++k) {
    double total = 0;
    for (const auto& p : parts) total += p[k];
    sums[k] = total;
  }
}

template <typename T>
void add_into(T* dst, const T* src, int64_t count) {
  for (int64_t k = 0; k < count; ++k) dst[k] += src[k];
}

template <typename T, typename E>
void grad_one_pass(const StripInputs<T>& in, const E& epi, T* grad_a, T* grad_b,
                   BlockSums<E::kSums>& parts) {
  const int64_t n = in.n, m = in.m, d = in.d;
  const int64_t blocks = ceil_div(n, kRows), col_tiles = ceil_div(m, kCols);
  const int64_t workers = worker_count(blocks);
  std::fill(grad_b, grad_b + m * d, T(0));
  std::unique_ptr<std::mutex[]> locks(new std::mutex[col_tiles]);

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
      for (int64_t t = 0; t < col_tiles; ++t) {
        const int64_t jt = (first + t) % col_tiles;
        const Range cols = block_range(jt, kCols, m);
        int64_t ldb;
        const T* B = in.B.block(cols.start, cols.size, buf.b, &ldb);
        tile_dots(A, lda, B, ldb, rows.size, cols.size, d, buf.tile);
        epi(buf.tile, rows, cols, parts[blk].data());
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
    }
  });
}

// Row blocks taken dynamically, column tiles in order: dots, the epilogue, and grad_a += H B
// when grad_a is given.
template <typename T, typename E>
void row_blocks_pass(const StripInputs<T>& in, const E& epi, T* grad_a,
                     BlockSums<E::kSums>& parts) {
  const int64_t n = in.n, m = in.m, d = in.d;
  const int64_t blocks = ceil_div(n, kRows), col_tiles = ceil_div(m, kCols);
  run_workers(blocks, [&](int64_t, WorkQueue& queue) {
    TileBuffers<T> buf(in, std::min(kRows, n), std::min(kCols, m));
    for (int64_t blk; (blk = queue.take()) >= 0;) {
      const Range rows = block_range(blk, kRows, n);
      int64_t lda;
      const T* A = in.A.block(rows.start, rows.size, buf.a, &lda);
      for (int64_t jt = 0; jt < col_tiles; ++jt) {
        const Range cols = block_range(jt, kCols, m);
        int64_t ldb;
        const T* B = in.B.block(cols.start, cols.size, buf.b, &ldb);
        tile_dots(A, lda, B, ldb, rows.size, cols.size, d, buf.tile);
        epi(buf.tile, rows, cols, parts[blk].data());
        if (grad_a != nullptr)
          tile_grad_rows(buf.tile, B, ldb, rows.size, cols.size, d, jt > 0,
                         grad_a + rows.start * d);
      }
    }
  });
}

template <typename T, typename E>
void grad_two_pass(const StripInputs<T>& in, const E& epi, T* grad_a, T* grad_b,
                   BlockSums<E::kSums>& parts) {
  const int64_t n = in.n, m = in.m, d = in.d;
  const int64_t blocks = ceil_div(n, kRows), col_tiles = ceil_div(m, kCols);
  row_blocks_pass(in, epi, grad_a, parts);  // grad_a, per-row outputs, sums

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
        epi(buf.tile, rows, cols, nullptr);
        tile_grad_cols(buf.tile, A, lda, rows.size, cols.size, d, blk > 0,
                       grad_b + cols.start * d);
      }
    }
  });
}

}  // namespace detail

// Dots and the epilogue only (no products after it): one tile product per tile.
template <typename T, typename E>
void tile_rows_pass(const StripInputs<T>& in, const E& epi, double* sums) {
  detail::BlockSums<E::kSums> parts(ceil_div(in.n, kRows), std::array<double, E::kSums>{});
  detail::row_blocks_pass(in, epi, static_cast<T*>(nullptr), parts);
  detail::sum_in_block_order<E::kSums>(parts, sums);
}

// grad_a [n, d] and grad_b [m, d] (row-major, written whole) from the epilogue's H, and its sums.
template <typename T, typename E>
void tile_grad_passes(const StripInputs<T>& in, const E& epi, bool deterministic, T* grad_a,
                      T* grad_b, double* sums) {
  detail::BlockSums<E::kSums> parts(ceil_div(in.n, kRows), std::array<double, E::kSums>{});
  if (deterministic) {
    detail::grad_two_pass(in, epi, grad_a, grad_b, parts);
  } else {
    detail::grad_one_pass(in, epi, grad_a, grad_b, parts);
  }
  detail::sum_in_block_order<E::kSums>(parts, sums);
}

}  // namespace gapops
