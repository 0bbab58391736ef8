// The CUDA strip backward as a G strip (docs/design.md sections 2.1 and 2.5 (b); design notes in
// docs/cuda.md): per chunk of rows, g_strip_kernel writes the scaled gradient weights
// H_ij = s rho_i sigma_j G_ij, and the launcher multiplies them with cuBLAS. No ATen here.
#pragma once

#include "strip_tiles.cuh"

namespace gapops {
namespace cuda {
namespace kernels {

// One chunk of the G strip: rows [r0, r0 + chunk) of the strip against all m columns.
// Block (x, y) takes the 64-row block x of the chunk and the column tiles y, y + C, ... (C =
// gridDim.y). Per tile: S = routed dot products, then per pair, with cos = rho_i sigma_j S_ij,
//   j != p(i):  G_ij = g_row_i e^{s(cos - a_pos_i) - row_lse_i} + g_col_j e^{s(cos - b_pos_j) - col_lse_j}
//   j == p(i):  G_ij = g_row_i expm1(-row_lse_i) + g_col_j expm1(-col_lse_j)
//   H_ij = s rho_i sigma_j G_ij, written to H[(i - r0) * m + j] times *h_pow2 (a power of two that
//          keeps 16-bit H out of the subnormals; null means 1), in the input dtype T;
//   grad_scale terms (j != p(i)): g_row_i P_ij (cos - a_pos_i) + g_col_j Q_ij (cos - b_pos_j),
//          summed per thread in double, per block in a fixed order into ds_part[y * gridDim.x + x].
// dA_part != null (column-routed strips, whose B is not one matrix for cuBLAS): the block also
// adds H_tile B_tile (routed B rows, unscaled H) into dA_part[y][i - r0][:], fp32 / fp64, a
// partial it alone writes; the launcher sums the C partials in order. It must start as zeros.
template <typename T, typename Acc, bool kMma>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<Acc>)
    g_strip_kernel(RowSource<T> A, RowSource<T> B, int64_t r0, int64_t chunk, int64_t m,
                   int64_t d, const Acc* __restrict__ a_inv, const Acc* __restrict__ b_inv,
                   const Acc* __restrict__ a_pos, const Acc* __restrict__ b_pos,
                   const Acc* __restrict__ scale, int64_t offset, const Acc* __restrict__ row_lse,
                   const Acc* __restrict__ col_lse, const Acc* __restrict__ g_row,
                   const Acc* __restrict__ g_col, const Acc* __restrict__ h_pow2,
                   T* __restrict__ H, Acc* __restrict__ dA_part, double* __restrict__ ds_part) {
  using C = Cfg<T, Acc, kMma>;
  __shared__ __align__(128) unsigned char smem_raw[C::kBytes];
  const Smem<C, Acc> sm{smem_raw};
  Acc* S = sm.S();
  Acc *v_rho = sm.vec(0), *v_apos = sm.vec(1), *v_rl = sm.vec(2), *v_gr = sm.vec(3);
  Acc *v_sigma = sm.vec(4), *v_bpos = sm.vec(5), *v_cl = sm.vec(6), *v_gc = sm.vec(7);
  const Acc s = *scale;
  const Acc pow2 = h_pow2 != nullptr ? *h_pow2 : Acc(1);
  const int64_t i_end = r0 + chunk;
  const int64_t i0 = r0 + static_cast<int64_t>(blockIdx.x) * BM;
  const int rows = static_cast<int>(i_end - i0 < BM ? i_end - i0 : BM);
  const int64_t col_tiles = (m + BN - 1) / BN;
  if (threadIdx.x < BM) {  // this block's rows, for every tile (the first tile_dots syncs)
    const int r = threadIdx.x;
    const bool in = r < rows;
    v_rho[r] = in ? a_inv[i0 + r] : Acc(0);
    v_apos[r] = in ? a_pos[i0 + r] : Acc(0);
    v_rl[r] = in ? row_lse[i0 + r] : Acc(0);
    v_gr[r] = in ? g_row[i0 + r] : Acc(0);
  }
  double ds_thread = 0;

  for (int64_t t = blockIdx.y; t < col_tiles; t += gridDim.y) {
    const int64_t j0 = t * BN;
    const int cols = static_cast<int>(m - j0 < BN ? m - j0 : BN);
    if (threadIdx.x >= BM) {
      const int c = threadIdx.x - BM;
      const bool in = c < cols;
      v_sigma[c] = in ? b_inv[j0 + c] : Acc(0);
      v_bpos[c] = in ? b_pos[j0 + c] : Acc(0);
      v_cl[c] = in ? col_lse[j0 + c] : Acc(0);
      v_gc[c] = in ? g_col[j0 + c] : Acc(0);
    }
    tile_dots<C>(A, B, i_end, m, d, i0, j0, sm);  // ends with __syncthreads (covers the vectors)
    Acc ds_tile = 0;
    for (int idx = threadIdx.x; idx < BM * BN; idx += kThreads) {
      const int r = idx / BN, c = idx % BN;
      Acc* cell = S + r * C::LDS + c;
      if (r < rows && c < cols) {
        const Acc cs = v_rho[r] * v_sigma[c];
        const Acc cosv = (v_rho[r] * *cell) * v_sigma[c];
        Acc g;
        if (i0 + r + offset == j0 + c) {
          g = positive_grad_weight(v_gr[r], v_rl[r], v_gc[c], v_cl[c]);
        } else {
          Acc term;
          g = pair_grad_weight(s, cosv - v_apos[r], cosv - v_bpos[c], v_rl[r], v_cl[c], v_gr[r],
                               v_gc[c], term);
          ds_tile += term;
        }
        const Acc hv = s * cs * g;
        *cell = hv;
        H[(i0 - r0 + r) * m + j0 + c] = stage_cast<T>(hv * pow2);
      } else {
        *cell = Acc(0);
      }
    }
    ds_thread += static_cast<double>(ds_tile);
    __syncthreads();
    if (dA_part == nullptr) continue;
    Acc* xb = sm.xb();
    for (int64_t k0 = 0; k0 < d; k0 += C::DK) {
      for (int idx = threadIdx.x; idx < BN * C::DK; idx += kThreads) {
        const int c = idx / C::DK, k = idx % C::DK;
        const int64_t kk = k0 + k;
        xb[c * C::LDD + k] = (c < cols && kk < d) ? stage_cast<Acc>(B.at(j0 + c, kk)) : Acc(0);
      }
      __syncthreads();
      typename C::GTile pa;
      pa.zero();
      pa.template mma<RowMajor, RowMajor>(S, C::LDS, xb, C::LDD, BN);  // H_tile [BM x BN] xb [BN x DK]
      __syncthreads();  // operand consumed: xb becomes the result staging
      pa.store(xb, C::LDD);
      __syncthreads();
      Acc* part = dA_part + (static_cast<int64_t>(blockIdx.y) * chunk + (i0 - r0)) * d;
      for (int idx = threadIdx.x; idx < BM * C::DK; idx += kThreads) {
        const int r = idx / C::DK, k = idx % C::DK;
        const int64_t kk = k0 + k;
        if (r < rows && kk < d) part[r * d + kk] += xb[r * C::LDD + k];  // owned: no race
      }
      __syncthreads();
    }
  }

  // block sum of the per-thread partials, in a fixed order
  double v = ds_thread;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  double* red = sm.red();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    ds_part[static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x] = ((red[0] + red[1]) + red[2]) + red[3];
  }
}

// grad_a[r0 + r][k] = sum over the C column groups, in group order, of dA_part[c][r][k].
template <typename Acc>
__global__ void row_partials_sum_kernel(const Acc* __restrict__ dA_part, int64_t groups,
                                        int64_t chunk, int64_t d, Acc* __restrict__ grad_rows) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t count = chunk * d;
  if (idx >= count) return;
  Acc acc = dA_part[idx];
  for (int64_t c = 1; c < groups; ++c) acc += dA_part[c * count + idx];
  grad_rows[idx] = acc;
}

// The power of two 2^k (and 2^-k) by which 16-bit H is stored: |H_ij| <= |s| max rho max sigma
// (max |g_row| + max |g_col|) because every softmax probability and |expm1(-lse)| (lse >= 0) is at
// most 1, so H 2^k <= target with k = floor(log2(target / bound)); fp16 at N = 32k has G ~ 1e-8,
// below its smallest subnormal without this. A zero or non-finite bound gives k = 0 (NaN then
// propagates through H as it should). One block; max is order-free, so it is deterministic.
template <typename Acc>
__global__ void h_scale_kernel(const Acc* __restrict__ a_inv, int64_t n, const Acc* __restrict__ b_inv,
                               int64_t m, const Acc* __restrict__ g_row, const Acc* __restrict__ g_col,
                               const Acc* __restrict__ scale, float target, Acc* __restrict__ out) {
  __shared__ Acc red[4][256];
  Acc mx[4] = {0, 0, 0, 0};  // max rho, max sigma, max |g_row|, max |g_col| (NaN ignored)
  auto upd = [](Acc& cur, Acc v) { cur = v > cur ? v : cur; };
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    upd(mx[0], a_inv[i] < 0 ? -a_inv[i] : a_inv[i]);
    upd(mx[2], g_row[i] < 0 ? -g_row[i] : g_row[i]);
  }
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    upd(mx[1], b_inv[j] < 0 ? -b_inv[j] : b_inv[j]);
    upd(mx[3], g_col[j] < 0 ? -g_col[j] : g_col[j]);
  }
  for (int q = 0; q < 4; ++q) red[q][threadIdx.x] = mx[q];
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int t = 1; t < static_cast<int>(blockDim.x); ++t)
    for (int q = 0; q < 4; ++q) upd(mx[q], red[q][t]);
  const Acc s = *scale < 0 ? -*scale : *scale;
  const double bound = static_cast<double>(s) * mx[0] * mx[1] * (static_cast<double>(mx[2]) + mx[3]);
  int k = 0;
  if (bound > 0 && bound < 1e300) {
    k = static_cast<int>(floor(log2(static_cast<double>(target) / bound)));
    k = k < -120 ? -120 : (k > 120 ? 120 : k);  // 2^k and 2^-k stay normal fp32 numbers
  }
  out[0] = static_cast<Acc>(ldexp(1.0, k));
  out[1] = static_cast<Acc>(ldexp(1.0, -k));
}

// *out = the sum of parts[0 .. count) in index order (one thread: deterministic).
template <typename Acc>
__global__ void ds_sum_kernel(const double* __restrict__ parts, int64_t count, Acc* __restrict__ out) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double acc = 0;
  for (int64_t k = 0; k < count; ++k) acc += parts[k];
  *out = static_cast<Acc>(acc);
}

}  // namespace kernels
}  // namespace cuda
}  // namespace gapops
