// The CUDA strip kernels themselves (design: csrc/cuda/strip.cu and NOTES.md). Kept in a header
// with no ATen dependency so that tests/cuda_emu can also compile them for the host under a
// thread-per-CUDA-thread emulation and check their indexing without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../common/tile_math.h"
#include "tile_mma.cuh"

namespace gapops {
namespace cuda {
namespace kernels {

constexpr int BM = kTileM, BN = kTileN;

constexpr int pad_for(size_t bytes) { return bytes == 2 ? 8 : (bytes == 4 ? 4 : 1); }
constexpr size_t round128(size_t x) { return (x + 127) / 128 * 128; }

// Compile-time configuration of one kernel variant.
//   T:    input element type (__half, __nv_bfloat16, float, double)
//   Acc:  accumulation / statistics type (float, double for double inputs)
//   kMma: tensor cores (WMMA) when true, exact SIMT FMAs when false
template <typename T, typename Acc, bool kMma>
struct Cfg {
  static_assert(!kMma || std::is_same<Acc, float>::value, "tensor-core paths accumulate in fp32");
  // staging type of the S = A B^T product, and of the G products' operands
  using E = typename std::conditional<kMma, typename std::conditional<std::is_same<T, double>::value,
                                                                     float, T>::type,
                                      Acc>::type;
  using GE = Acc;  // G products: TF32 (kMma) or SIMT in Acc
  static constexpr int KC = std::is_same<Acc, double>::value ? 8 : 32;  // d-chunk of S product
  static constexpr int DK = KC;                                         // d-chunk of G products
  static constexpr int LDK = KC + pad_for(sizeof(E));    // staging tile leading dim
  static constexpr int LDD = DK + pad_for(sizeof(GE));   // G-product operand leading dim
  static constexpr int LDS = BN + pad_for(sizeof(Acc));  // logits / G tile leading dim

  static constexpr size_t kS = round128(sizeof(Acc) * BM * LDS);
  static constexpr size_t kStage = round128(sizeof(E) * BM * LDK) + round128(sizeof(E) * BN * LDK);
  static constexpr size_t kGOps = 2 * round128(sizeof(GE) * BM * LDD);
  static constexpr size_t kUnion = kStage > kGOps ? kStage : kGOps;
  static constexpr size_t kVec = round128(sizeof(Acc) * BM);
  static constexpr size_t kBytes = kS + kUnion + 4 * kVec + round128(sizeof(double) * 4);
  static_assert(kBytes <= 48 * 1024, "static shared memory limit");

  using DotTile =
      typename std::conditional<kMma, WmmaTile<E, BN>, SimtTile<Acc, BN>>::type;
  using GTile = typename std::conditional<kMma, WmmaTile<float, DK>, SimtTile<Acc, DK>>::type;
};

// Shared-memory carve-up (byte offsets fixed by Cfg).
template <class C, typename Acc>
struct Smem {
  unsigned char* base;
  __device__ Acc* S() const { return reinterpret_cast<Acc*>(base); }
  __device__ typename C::E* sa() const { return reinterpret_cast<typename C::E*>(base + C::kS); }
  __device__ typename C::E* sb() const {
    return reinterpret_cast<typename C::E*>(base + C::kS + round128(sizeof(typename C::E) * BM * C::LDK));
  }
  __device__ Acc* xa() const { return reinterpret_cast<Acc*>(base + C::kS); }
  __device__ Acc* xb() const {
    return reinterpret_cast<Acc*>(base + C::kS + round128(sizeof(Acc) * BM * C::LDD));
  }
  __device__ Acc* vec(int k) const {
    return reinterpret_cast<Acc*>(base + C::kS + C::kUnion + k * C::kVec);
  }
  __device__ double* red() const {
    return reinterpret_cast<double*>(base + C::kS + C::kUnion + 4 * C::kVec);
  }
};

// S[r][c] = sum_k X[i0 + r][k] * Y[j0 + c][k] (raw dot products, unscaled), rows past n and
// columns past m read as zeros. Ends with a __syncthreads(): S is complete and visible.
template <class C, typename T, typename Acc>
__device__ void tile_dots(const T* __restrict__ X, const T* __restrict__ Y, int64_t n, int64_t m,
                          int64_t d, int64_t i0, int64_t j0, const Smem<C, Acc>& sm) {
  using E = typename C::E;
  typename C::DotTile tile;
  tile.zero();
  E* sa = sm.sa();
  E* sb = sm.sb();
  for (int64_t k0 = 0; k0 < d; k0 += C::KC) {
    for (int idx = threadIdx.x; idx < BM * C::KC; idx += kThreads) {
      const int r = idx / C::KC, k = idx % C::KC;
      const int64_t i = i0 + r, kk = k0 + k;
      sa[r * C::LDK + k] = (i < n && kk < d) ? stage_cast<E>(X[i * d + kk]) : stage_zero<E>();
    }
    for (int idx = threadIdx.x; idx < BN * C::KC; idx += kThreads) {
      const int c = idx / C::KC, k = idx % C::KC;
      const int64_t j = j0 + c, kk = k0 + k;
      sb[c * C::LDK + k] = (j < m && kk < d) ? stage_cast<E>(Y[j * d + kk]) : stage_zero<E>();
    }
    __syncthreads();
    // S += sa (row-major [BM x KC]) * sb^T (sb is [BN x KC] row-major, i.e. [KC x BN] col-major)
    tile.template mma<RowMajor, ColMajor>(sa, C::LDK, sb, C::LDK, C::KC);
    __syncthreads();
  }
  tile.store(sm.S(), C::LDS);
  __syncthreads();
}

// ------------------------------------------------------------------------------------- forward
template <typename T, typename Acc, bool kMma>
__global__ void __launch_bounds__(kThreads)
    strip_forward_kernel(const T* __restrict__ A, const T* __restrict__ B, int64_t n, int64_t m,
                         int64_t d, const Acc* __restrict__ scale, int64_t offset,
                         Acc* __restrict__ row_lse, Acc* __restrict__ pos,
                         Acc* __restrict__ col_max, Acc* __restrict__ col_sum) {
  using C = Cfg<T, Acc, kMma>;
  __shared__ __align__(128) unsigned char smem_raw[C::kBytes];
  const Smem<C, Acc> sm{smem_raw};
  Acc* S = sm.S();
  const Acc s = *scale;
  const int h = threadIdx.x & 1;
  const int half_idx = threadIdx.x >> 1;  // row (row phase) or column (column phase) of the tile
  Acc* my_cmax = col_max + static_cast<int64_t>(blockIdx.x) * m;
  Acc* my_csum = col_sum + static_cast<int64_t>(blockIdx.x) * m;
  const int64_t row_blocks = (n + BM - 1) / BM;

  for (int64_t rb = blockIdx.x; rb < row_blocks; rb += gridDim.x) {
    const int64_t i0 = rb * BM;
    const int64_t i = i0 + half_idx;  // this thread's row
    // The row's online LSE. Both threads of the pair keep one (equal up to FMA rounding: lse_merge
    // is symmetric only in exact arithmetic); thread h == 0's copy is the one written.
    Acc run_m = -INFINITY, run_s = 0;
    for (int64_t j0 = 0; j0 < m; j0 += BN) {
      tile_dots<C>(A, B, n, m, d, i0, j0, sm);
      const int cols = static_cast<int>(m - j0 < BN ? m - j0 : BN);
      const int rows = static_cast<int>(n - i0 < BM ? n - i0 : BM);
      // Rows: thread pair (2r, 2r+1) folds columns h, h + 2, ... of row r.
      {
        Acc tm, ts;
        lse_partial(S + half_idx * C::LDS + h, (cols - h + 1) / 2, 2, s, tm, ts);
        const Acc om = __shfl_xor_sync(0xffffffffu, tm, 1);
        const Acc os = __shfl_xor_sync(0xffffffffu, ts, 1);
        lse_merge(tm, ts, om, os);
        lse_merge(run_m, run_s, tm, ts);
        const int64_t p = i + offset - j0;
        if (h == 0 && half_idx < rows && p >= 0 && p < cols) pos[i] = s * S[half_idx * C::LDS + p];
      }
      // Columns: thread pair (2c, 2c+1) folds rows h, h + 2, ... of column c.
      {
        Acc tm, ts;
        lse_partial(S + h * C::LDS + half_idx, (rows - h + 1) / 2, 2 * C::LDS, s, tm, ts);
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
      __syncthreads();  // S is rewritten by the next tile
    }
    if (h == 0 && i < n) row_lse[i] = lse_finalize(run_m, run_s);
  }
}

// col_lse[j] = LSE over the R per-block partial states of column j, merged in block order.
template <typename Acc>
__global__ void col_lse_merge_kernel(const Acc* __restrict__ col_max, const Acc* __restrict__ col_sum,
                                     int64_t parts, int64_t m, Acc* __restrict__ col_lse) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= m) return;
  Acc cm = col_max[j], cs = col_sum[j];
  for (int64_t r = 1; r < parts; ++r) lse_merge(cm, cs, col_max[r * m + j], col_sum[r * m + j]);
  col_lse[j] = lse_finalize(cm, cs);
}

// ------------------------------------------------------------------------------------ backward
// dX [n, d] (+)= sum_j G_ij Y_j for the rows owned by this block (plain read-modify-write);
// dY [m, d] += sum_i G_ij X_i by atomics when dY != nullptr; ds_part[block] = sum G_ij X_i.Y_j
// when ds_part != nullptr. G_ij uses the row statistics of X and the column statistics of Y, and
// the positive of row i is column i + offset (offset may be negative: the transposed strip).
// dX and dY are unscaled (the launcher multiplies by s once).
template <typename T, typename Acc, bool kMma>
__global__ void __launch_bounds__(kThreads)
    strip_backward_kernel(const T* __restrict__ X, const T* __restrict__ Y, int64_t n, int64_t m,
                          int64_t d, const Acc* __restrict__ scale, int64_t offset,
                          const Acc* __restrict__ row_lse, const Acc* __restrict__ col_lse,
                          const Acc* __restrict__ g_row, const Acc* __restrict__ g_col,
                          Acc* __restrict__ dX, Acc* __restrict__ dY, double* __restrict__ ds_part) {
  using C = Cfg<T, Acc, kMma>;
  __shared__ __align__(128) unsigned char smem_raw[C::kBytes];
  const Smem<C, Acc> sm{smem_raw};
  Acc* S = sm.S();
  Acc* s_rl = sm.vec(0);
  Acc* s_gr = sm.vec(1);
  Acc* s_cl = sm.vec(2);
  Acc* s_gc = sm.vec(3);
  Acc* xa = sm.xa();
  Acc* xb = sm.xb();
  const Acc s = *scale;
  const int64_t row_blocks = (n + BM - 1) / BM;
  double ds_thread = 0;

  for (int64_t rb = blockIdx.x; rb < row_blocks; rb += gridDim.x) {
    const int64_t i0 = rb * BM;
    const int rows = static_cast<int>(n - i0 < BM ? n - i0 : BM);
    for (int64_t j0 = 0; j0 < m; j0 += BN) {
      const int cols = static_cast<int>(m - j0 < BN ? m - j0 : BN);
      if (threadIdx.x < BM) {
        const int r = threadIdx.x;
        s_rl[r] = r < rows ? row_lse[i0 + r] : Acc(0);
        s_gr[r] = r < rows ? g_row[i0 + r] : Acc(0);
      } else {
        const int c = threadIdx.x - BM;
        s_cl[c] = c < cols ? col_lse[j0 + c] : Acc(0);
        s_gc[c] = c < cols ? g_col[j0 + c] : Acc(0);
      }
      tile_dots<C>(X, Y, n, m, d, i0, j0, sm);  // ends with __syncthreads (covers s_* too)
      // S (raw dots) -> G in place; padding rows / columns become 0.
      Acc ds_tile = 0;
      for (int idx = threadIdx.x; idx < BM * BN; idx += kThreads) {
        const int r = idx / BN, c = idx % BN;
        Acc* cell = S + r * C::LDS + c;
        if (r < rows && c < cols) {
          const Acc dot = *cell;
          const bool positive = (j0 + c) == (i0 + r) + offset;
          const Acc g = grad_weight(s * dot, s_rl[r], s_cl[c], s_gr[r], s_gc[c], positive);
          ds_tile += g * dot;
          *cell = g;
        } else {
          *cell = Acc(0);
        }
      }
      ds_thread += static_cast<double>(ds_tile);
      __syncthreads();
      for (int64_t k0 = 0; k0 < d; k0 += C::DK) {
        // xb = Y[j0 : j0 + BN, k0 : k0 + DK], xa = X[i0 : i0 + BM, k0 : k0 + DK] (zero padded)
        for (int idx = threadIdx.x; idx < BN * C::DK; idx += kThreads) {
          const int c = idx / C::DK, k = idx % C::DK;
          const int64_t j = j0 + c, kk = k0 + k;
          xb[c * C::LDD + k] = (c < cols && kk < d) ? stage_cast<Acc>(Y[j * d + kk]) : Acc(0);
        }
        if (dY != nullptr) {
          for (int idx = threadIdx.x; idx < BM * C::DK; idx += kThreads) {
            const int r = idx / C::DK, k = idx % C::DK;
            const int64_t i = i0 + r, kk = k0 + k;
            xa[r * C::LDD + k] = (r < rows && kk < d) ? stage_cast<Acc>(X[i * d + kk]) : Acc(0);
          }
        }
        __syncthreads();
        typename C::GTile pa, pb;
        pa.zero();
        // pa = G [BM x BN] * xb [BN x DK]
        pa.template mma<RowMajor, RowMajor>(S, C::LDS, xb, C::LDD, BN);
        if (dY != nullptr) {
          pb.zero();
          // pb = G^T [BN x BM] (G read col-major) * xa [BM x DK]
          pb.template mma<ColMajor, RowMajor>(S, C::LDS, xa, C::LDD, BM);
        }
        __syncthreads();  // operands consumed: reuse xb / xa as result staging
        pa.store(xb, C::LDD);
        if (dY != nullptr) pb.store(xa, C::LDD);
        __syncthreads();
        for (int idx = threadIdx.x; idx < BM * C::DK; idx += kThreads) {
          const int r = idx / C::DK, k = idx % C::DK;
          const int64_t kk = k0 + k;
          if (kk >= d) continue;
          if (r < rows) dX[(i0 + r) * d + kk] += xb[r * C::LDD + k];  // owned row: no race
          if (dY != nullptr && r < cols) atomicAdd(dY + (j0 + r) * d + kk, xa[r * C::LDD + k]);
        }
        __syncthreads();
      }
    }
  }

  if (ds_part != nullptr) {  // block sum of the per-thread partials, in a fixed order
    double v = ds_thread;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    double* red = sm.red();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x == 0) ds_part[blockIdx.x] = ((red[0] + red[1]) + red[2]) + red[3];
  }
}

// ds = sum of the per-block partials in block order (one thread: a few hundred values).
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
