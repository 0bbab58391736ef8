// The softmax strip's epilogues (docs/design.md section 2.1; design notes in docs/cuda.md): one
// bandwidth-bound pass over a chunk's product S = A_rows B^T (raw routed rows, fp32 / fp64,
// leading dimension ld, 16-byte aligned rows) per direction. No ATen here.
//
// Grid of every epilogue (csrc/cuda/strip_plan.h): block (x, y) owns the chunk rows
// [128 x, 128 x + 128), warp w of it the 16 rows 128 x + 16 w + r, and sweeps the column tiles
// y, y + C, ... (C = gridDim.y) of 32 lanes x one 16-byte pack each.
#pragma once

#include "epilogue_common.cuh"

namespace gapops {
namespace cuda {
namespace kernels {

// The first chunk row of this thread's warp.
__device__ __forceinline__ int64_t warp_row0() {
  return static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5) * kRowsPerWarp;
}

// The sweep of the backward-shaped epilogues: for each column tile of this block's group,
// tile(j0) once (j0: this lane's first column, < m), then row(r, i, j0, pack) for each of the
// warp's rows i < rows with the lane's 16-byte pack of S at (i, j0). r is not a compile-time
// constant: per-row values live in shared memory, not in register arrays.
constexpr int kInFlight = 4;
template <typename Acc, class Tile, class Row>
__device__ __forceinline__ void sweep_group(const Acc* S, int64_t ld, int64_t rows, int64_t m,
                                            Tile&& tile, Row&& row) {
  constexpr int TW = kTileCols<Acc>;
  const int64_t i0 = warp_row0();
  const int64_t tiles = (m + TW - 1) / TW;
  for (int64_t t = blockIdx.y; t < tiles; t += gridDim.y) {
    const int64_t j0 = t * TW + (threadIdx.x & 31) * kPack<Acc>;
    if (j0 >= m) continue;
    tile(j0);
    // kInFlight rows at a time, their loads issued before any store: H may be S itself (may
    // alias), so the compiler could not move a later row's load above an earlier row's store.
    // (A full unroll of the 16 rows made ptxas spill in the sigmoid epilogue.)
    for (int rb = 0; rb < kRowsPerWarp; rb += kInFlight) {
      Pack<Acc, kPack<Acc>> p[kInFlight];
#pragma unroll
      for (int q = 0; q < kInFlight; ++q) {
        const int64_t i = i0 + rb + q;
        if (i < rows) p[q] = load_pack(S + i * ld + j0);
      }
#pragma unroll
      for (int q = 0; q < kInFlight; ++q) {
        const int64_t i = i0 + rb + q;
        if (i < rows) row(rb + q, i, j0, p[q]);
      }
    }
  }
}

// Forward. Per element, with cos = rho_i sigma_j S_ij and the positive pair j = r0 + i + offset
// skipped (its term is the exact 1 added at finalization): the row term s (cos - a_pos_i) goes to
// the row's state (lane registers across the tiles of this column group, then one butterfly over
// the warp's lanes -> row_part_*[y][i]); the column term s (cos - b_pos_j) to the column's state
// (lane registers across the warp's 16 rows, then the 8 warps merged in order through shared
// memory -> col_part_*[x][j]). Each partial has one writer; row_lse_kernel and col_merge_kernel
// merge them in a fixed order.
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    softmax_forward_epilogue(const Acc* __restrict__ S, int64_t ld, int64_t r0, int64_t rows,
                             int64_t m, const Acc* __restrict__ a_inv, const Acc* __restrict__ b_inv,
                             const Acc* __restrict__ a_pos, const Acc* __restrict__ b_pos,
                             const Acc* __restrict__ scale, int64_t offset, Acc* __restrict__ row_part_m,
                             Acc* __restrict__ row_part_s, int64_t cap, Acc* __restrict__ col_part_m,
                             Acc* __restrict__ col_part_s) {
  constexpr int V = kPack<Acc>, TW = kTileCols<Acc>, R = kRowsPerWarp;
  __shared__ Acc sh_m[kWarps][TW];
  __shared__ Acc sh_s[kWarps][TW];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const Acc s = *scale;
  const int64_t i0 = warp_row0();
  Acc rho[R], apos[R], rm[R], rs[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const bool in = i0 + r < rows;
    rho[r] = in ? a_inv[r0 + i0 + r] : Acc(0);
    apos[r] = in ? a_pos[r0 + i0 + r] : Acc(0);
    rm[r] = rs[r] = Acc(0);
  }
  const int64_t tiles = (m + TW - 1) / TW;
  for (int64_t t = blockIdx.y; t < tiles; t += gridDim.y) {
    const int64_t j0 = t * TW + lane * V;  // this lane's first column
    Acc sig[V], bpos[V], cm[V], cs[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const bool in = j0 + v < m;
      sig[v] = in ? b_inv[j0 + v] : Acc(0);
      bpos[v] = in ? b_pos[j0 + v] : Acc(0);
      cm[v] = cs[v] = Acc(0);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t i = i0 + r;
      if (i >= rows || j0 >= m) continue;
      const auto p = load_pack(S + i * ld + j0);
      const int64_t pos = r0 + i + offset;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        if (j0 + v >= m || j0 + v == pos) continue;
        const Acc cosv = (rho[r] * p.v[v]) * sig[v];
        rel_fold_one(rm[r], rs[r], s * (cosv - apos[r]));
        rel_fold_one(cm[v], cs[v], s * (cosv - bpos[v]));
      }
    }
#pragma unroll
    for (int v = 0; v < V; ++v) {
      sh_m[warp][lane * V + v] = cm[v];
      sh_s[warp][lane * V + v] = cs[v];
    }
    __syncthreads();
    if (threadIdx.x < TW) {
      const int c = threadIdx.x;
      const int64_t j = t * TW + c;
      Acc M = sh_m[0][c], Sum = sh_s[0][c];
      for (int w = 1; w < kWarps; ++w) lse_merge(M, Sum, sh_m[w][c], sh_s[w][c]);
      if (j < m) {
        col_part_m[static_cast<int64_t>(blockIdx.x) * m + j] = M;
        col_part_s[static_cast<int64_t>(blockIdx.x) * m + j] = Sum;
      }
    }
    __syncthreads();  // sh_m / sh_s are rewritten by the next tile
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    Acc M = rm[r], Sum = rs[r];
    for (int o = 16; o > 0; o >>= 1) {
      const Acc om = __shfl_xor_sync(0xffffffffu, M, o);
      const Acc os = __shfl_xor_sync(0xffffffffu, Sum, o);
      lse_merge(M, Sum, om, os);
    }
    const int64_t i = i0 + r;
    if (lane == 0 && i < rows) {
      row_part_m[static_cast<int64_t>(blockIdx.y) * cap + i] = M;
      row_part_s[static_cast<int64_t>(blockIdx.y) * cap + i] = Sum;
    }
  }
}

// Backward: the gradient weights of the chunk, with cos = rho_i sigma_j S_ij,
//   j != p(i):  G_ij = g_row_i e^{s(cos - a_pos_i) - row_lse_i} + g_col_j e^{s(cos - b_pos_j) - col_lse_j}
//   j == p(i):  G_ij = g_row_i expm1(-row_lse_i) + g_col_j expm1(-col_lse_j)
//   H_ij = s rho_i sigma_j G_ij times *h_pow2 (null: 1), written as T to H[i ldh + j]
// (H may be S itself when T is the accumulation dtype: each element is read, then written, by
// the same thread), and the grad_scale terms of the pairs j != p(i), summed per thread in double
// and per block in a fixed order into ds_part[y gridDim.x + x].
template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
    softmax_backward_epilogue(const Acc* S, int64_t ld, int64_t r0, int64_t rows, int64_t m,
                              const Acc* __restrict__ a_inv, const Acc* __restrict__ b_inv,
                              const Acc* __restrict__ a_pos, const Acc* __restrict__ b_pos,
                              const Acc* __restrict__ scale, int64_t offset,
                              const Acc* __restrict__ row_lse, const Acc* __restrict__ col_lse,
                              const Acc* __restrict__ g_row, const Acc* __restrict__ g_col,
                              const Acc* __restrict__ h_pow2, T* H, int64_t ldh,
                              double* __restrict__ ds_part) {
  constexpr int V = kPack<Acc>, R = kRowsPerWarp;
  const Acc s = *scale;
  const Acc pow2 = h_pow2 != nullptr ? *h_pow2 : Acc(1);
  // the block's per-row values in shared memory (registers would spill for fp64)
  __shared__ Acc sh_row[4][kRowsPerBlock];
  if (threadIdx.x < kRowsPerBlock) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x;
    const bool in = i < rows;
    sh_row[0][threadIdx.x] = in ? a_inv[r0 + i] : Acc(0);
    sh_row[1][threadIdx.x] = in ? a_pos[r0 + i] : Acc(0);
    sh_row[2][threadIdx.x] = in ? row_lse[r0 + i] : Acc(0);
    sh_row[3][threadIdx.x] = in ? g_row[r0 + i] : Acc(0);
  }
  __syncthreads();
  const Acc* rho = sh_row[0] + (threadIdx.x >> 5) * R;
  const Acc* apos = sh_row[1] + (threadIdx.x >> 5) * R;
  const Acc* rl = sh_row[2] + (threadIdx.x >> 5) * R;
  const Acc* gr = sh_row[3] + (threadIdx.x >> 5) * R;
  double ds_thread = 0;
  Acc sig[V], bpos[V], cl[V], gc[V];
  auto tile = [&](int64_t j0) {
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const bool in = j0 + v < m;
      sig[v] = in ? b_inv[j0 + v] : Acc(0);
      bpos[v] = in ? b_pos[j0 + v] : Acc(0);
      cl[v] = in ? col_lse[j0 + v] : Acc(0);
      gc[v] = in ? g_col[j0 + v] : Acc(0);
    }
  };
  auto row = [&](int r, int64_t i, int64_t j0, const Pack<Acc, V>& p) {
    const int64_t pos = r0 + i + offset;
    Acc h[V];
    Acc ds_pack = 0;
#pragma unroll
    for (int v = 0; v < V; ++v) {
      h[v] = Acc(0);  // padding columns past m (S holds garbage there): H 0, no term
      if (j0 + v >= m) continue;
      const Acc cosv = (rho[r] * p.v[v]) * sig[v];
      Acc g;
      if (j0 + v == pos) {
        g = positive_grad_weight(gr[r], rl[r], gc[v], cl[v]);
      } else {
        Acc term;
        g = pair_grad_weight(s, cosv - apos[r], cosv - bpos[v], rl[r], cl[v], gr[r], gc[v], term);
        ds_pack += term;
      }
      h[v] = s * (rho[r] * sig[v]) * g * pow2;
    }
    store_pack<T>(H + i * ldh + j0, h);
    ds_thread += static_cast<double>(ds_pack);
  };
  sweep_group(S, ld, rows, m, tile, row);
  const double total = block_sum(ds_thread);
  if (threadIdx.x == 0) ds_part[static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x] = total;
}

}  // namespace kernels
}  // namespace cuda
}  // namespace gapops
