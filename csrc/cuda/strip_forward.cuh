// The CUDA strip forward (docs/design.md section 2.1; design notes in docs/cuda.md): relative
// row and column log-sum-exp statistics from one pass over the cosine tiles. No ATen here.
#pragma once

#include "strip_tiles.cuh"

namespace gapops {
namespace cuda {
namespace kernels {

// Block r of a grid of R owns the 64-row blocks r, r + R, ... and sweeps every column tile for
// each. Per tile: S = routed dot products, turned into cosines rho_i sigma_j (A_i.B_j) in place;
//   rows:    thread pair (2r, 2r+1) folds the even / odd columns of row r (rel_fold, positive
//            skipped), the pair merges by one shuffle, and the row's running state stays in
//            registers across all column tiles;
//   columns: thread pair (2c, 2c+1) folds the even / odd rows of column c the same way and merges
//            the tile's state into row r of the [R, m] partial buffers (this block's own row:
//            plain read-modify-write, no other writer).
// col_max / col_sum must start as zeros (the empty relative state is (0, 0)).
template <typename T, typename Acc, bool kMma>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<Acc>)
    strip_forward_kernel(RowSource<T> A, RowSource<T> B, int64_t n, int64_t m, int64_t d,
                         const Acc* __restrict__ a_inv, const Acc* __restrict__ b_inv,
                         const Acc* __restrict__ a_pos, const Acc* __restrict__ b_pos,
                         const Acc* __restrict__ scale, int64_t offset, Acc* __restrict__ row_lse,
                         Acc* __restrict__ col_max, Acc* __restrict__ col_sum) {
  using C = Cfg<T, Acc, kMma>;
  __shared__ __align__(128) unsigned char smem_raw[C::kBytes];
  const Smem<C, Acc> sm{smem_raw};
  Acc* S = sm.S();
  Acc* v_rho = sm.vec(0);
  Acc* v_apos = sm.vec(1);
  Acc* v_sigma = sm.vec(2);
  Acc* v_bpos = sm.vec(3);
  const Acc s = *scale;
  const int h = threadIdx.x & 1;
  const int half_idx = threadIdx.x >> 1;  // row (row phase) or column (column phase) of the tile
  Acc* my_cmax = col_max + static_cast<int64_t>(blockIdx.x) * m;
  Acc* my_csum = col_sum + static_cast<int64_t>(blockIdx.x) * m;
  const int64_t row_blocks = (n + BM - 1) / BM;

  for (int64_t rb = blockIdx.x; rb < row_blocks; rb += gridDim.x) {
    const int64_t i0 = rb * BM;
    const int64_t i = i0 + half_idx;  // this thread's row
    const int rows = static_cast<int>(n - i0 < BM ? n - i0 : BM);
    // The row's running state (M, sum), M >= 0. Both threads of the pair keep one (equal up to
    // FMA rounding: lse_merge is symmetric only in exact arithmetic); thread h == 0's is written.
    Acc run_m = 0, run_s = 0;
    for (int64_t j0 = 0; j0 < m; j0 += BN) {
      const int cols = static_cast<int>(m - j0 < BN ? m - j0 : BN);
      if (threadIdx.x < BM) {  // padding rows / columns get 0: finite cosines, never folded
        const int r = threadIdx.x;
        v_rho[r] = r < rows ? a_inv[i0 + r] : Acc(0);
        v_apos[r] = r < rows ? a_pos[i0 + r] : Acc(0);
      } else {
        const int c = threadIdx.x - BM;
        v_sigma[c] = c < cols ? b_inv[j0 + c] : Acc(0);
        v_bpos[c] = c < cols ? b_pos[j0 + c] : Acc(0);
      }
      tile_dots<C>(A, B, n, m, d, i0, j0, sm);  // ends with __syncthreads (covers the vectors)
      for (int idx = threadIdx.x; idx < BM * BN; idx += kThreads) {
        const int r = idx / BN, c = idx % BN;
        S[r * C::LDS + c] = (v_rho[r] * S[r * C::LDS + c]) * v_sigma[c];
      }
      __syncthreads();
      {  // rows: skip the positive column i + offset where it lies in this tile
        const int64_t p = i + offset - j0;
        const int skip = (p >= 0 && p < cols) ? static_cast<int>(p) : -1;
        Acc tm, ts;
        rel_fold(S + half_idx * C::LDS, h, cols, 2, 1, skip, s, v_apos[half_idx], tm, ts);
        const Acc om = __shfl_xor_sync(0xffffffffu, tm, 1);
        const Acc os = __shfl_xor_sync(0xffffffffu, ts, 1);
        lse_merge(tm, ts, om, os);
        lse_merge(run_m, run_s, tm, ts);
      }
      {  // columns: skip the row whose positive is column j0 + half_idx
        const int64_t p = j0 + half_idx - offset - i0;
        const int skip = (p >= 0 && p < rows) ? static_cast<int>(p) : -1;
        Acc tm, ts;
        rel_fold(S + half_idx, h, rows, 2, C::LDS, skip, s, v_bpos[half_idx], tm, ts);
        const Acc om = __shfl_xor_sync(0xffffffffu, tm, 1);
        const Acc os = __shfl_xor_sync(0xffffffffu, ts, 1);
        lse_merge(tm, ts, om, os);
        if (h == 0 && half_idx < cols) {
          const int64_t j = j0 + half_idx;
          Acc cm = my_cmax[j], cs = my_csum[j];  // this block's own partial: no other writer
          lse_merge(cm, cs, tm, ts);
          my_cmax[j] = cm;
          my_csum[j] = cs;
        }
      }
      __syncthreads();  // S and the vectors are rewritten for the next tile
    }
    if (h == 0 && i < n) row_lse[i] = rel_lse_finalize(run_m, run_s, true);
  }
}

// col_lse[j] from the R partial states of column j, merged in block order (deterministic); the
// exact 1 of the positive is added where column j's positive row i = j - offset is in the strip.
template <typename Acc>
__global__ void col_lse_merge_kernel(const Acc* __restrict__ col_max, const Acc* __restrict__ col_sum,
                                     int64_t parts, int64_t n, int64_t m, int64_t offset,
                                     Acc* __restrict__ col_lse) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= m) return;
  Acc cm = col_max[j], cs = col_sum[j];
  for (int64_t r = 1; r < parts; ++r) lse_merge(cm, cs, col_max[r * m + j], col_sum[r * m + j]);
  col_lse[j] = rel_lse_finalize(cm, cs, j >= offset && j < offset + n);
}

}  // namespace kernels
}  // namespace cuda
}  // namespace gapops
