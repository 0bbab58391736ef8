// What every CUDA epilogue kernel shares: dtype conversions, 16-byte packs of the strip, the
// online relative log-sum-exp fold, fixed-order block sums, and the small kernels that merge
// partials in a fixed order (row and column states, scalar sums) or pick the power of two of
// 16-bit H. No ATen here, so that tests/cuda_emu compiles it for the host.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "../common/tile_math.h"
#include "strip_plan.h"

namespace gapops {
namespace cuda {
namespace kernels {

template <typename E>
__device__ __forceinline__ float to_float(E v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// Converts between the input dtype and the accumulation dtype (torch builds with
// __CUDA_NO_HALF_CONVERSIONS__, so every 16-bit conversion is spelled out).
template <typename E, typename T>
__device__ __forceinline__ E stage_cast(T v) {
  if constexpr (std::is_same<E, T>::value) {
    return v;
  } else if constexpr (std::is_same<E, double>::value) {
    return static_cast<double>(to_float(v));
  } else if constexpr (std::is_same<E, float>::value) {
    return to_float(v);
  } else if constexpr (std::is_same<E, __half>::value) {
    return __float2half_rn(to_float(v));
  } else {
    return __float2bfloat16_rn(to_float(v));
  }
}

// Elements of one 16-byte pack of the strip (4 fp32, 2 fp64) and a column tile's width.
template <typename Acc>
constexpr int kPack = static_cast<int>(16 / sizeof(Acc));
template <typename Acc>
constexpr int kTileCols = 32 * kPack<Acc>;

// V elements of E at an address aligned to their size: one 128-bit (16-bit H: 64-bit) access.
template <typename E, int V>
struct alignas(sizeof(E) * V) Pack {
  E v[V];
};
template <typename Acc>
__device__ __forceinline__ Pack<Acc, kPack<Acc>> load_pack(const Acc* p) {
  return *reinterpret_cast<const Pack<Acc, kPack<Acc>>*>(p);
}
template <typename T, typename Acc, int V>
__device__ __forceinline__ void store_pack(T* p, const Acc (&h)[V]) {
  Pack<T, V> out;
#pragma unroll
  for (int v = 0; v < V; ++v) out.v[v] = stage_cast<T>(h[v]);
  *reinterpret_cast<Pack<T, V>*>(p) = out;
}

// Adds the term v to the relative log-sum-exp state (M, S) of docs/design.md section 2.1
// (M = max(0, terms seen), S = sum e^(term - M)) online: one exp per term unless it is a new
// maximum. NaN: M and S become NaN and stay NaN.
template <typename Acc>
__device__ __forceinline__ void rel_fold_one(Acc& M, Acc& S, Acc v) {
  if (v <= M) {
    S += fast_exp(at_most_zero(v - M));  // v - M may be contracted into an fma that rounds above 0
  } else {
    S = S * fast_exp(M - v) + Acc(1);
    M = (M != M) ? M : v;
  }
}

// The sum of one double per thread over the block, in a fixed order (warp butterflies, then the
// warps in index order); the result is valid in thread 0. Every thread must call it.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[kWarps];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kWarps; ++w) total += warp_sums[w];
  }
  __syncthreads();  // warp_sums may be reused by the next call
  return total;
}

// row_lse[r0 + i] for the chunk's rows i < rows: the C column groups' partial states of row i
// (part_m / part_s [C][cap]) merged in group order, finalized with the positive's exact 1.
template <typename Acc>
__global__ void row_lse_kernel(const Acc* __restrict__ part_m, const Acc* __restrict__ part_s,
                               int64_t groups, int64_t cap, int64_t rows, int64_t r0,
                               Acc* __restrict__ row_lse) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows) return;
  Acc M = part_m[i], S = part_s[i];
  for (int64_t c = 1; c < groups; ++c) lse_merge(M, S, part_m[c * cap + i], part_s[c * cap + i]);
  row_lse[r0 + i] = rel_lse_finalize(M, S, true);
}

// The running column states (run_m, run_s [m]) merged with a chunk's row blocks' partial states
// (part_m / part_s [parts][m]) in block order; chunks come in order too.
template <typename Acc>
__global__ void col_merge_kernel(const Acc* __restrict__ part_m, const Acc* __restrict__ part_s,
                                 int64_t parts, int64_t m, Acc* __restrict__ run_m,
                                 Acc* __restrict__ run_s) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= m) return;
  Acc M = run_m[j], S = run_s[j];
  for (int64_t p = 0; p < parts; ++p) lse_merge(M, S, part_m[p * m + j], part_s[p * m + j]);
  run_m[j] = M;
  run_s[j] = S;
}

// col_lse[j] from the complete column state; the positive's exact 1 where column j's positive row
// j - offset is in the strip.
template <typename Acc>
__global__ void col_lse_kernel(const Acc* __restrict__ run_m, const Acc* __restrict__ run_s,
                               int64_t n, int64_t m, int64_t offset, Acc* __restrict__ col_lse) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= m) return;
  col_lse[j] = rel_lse_finalize(run_m[j], run_s[j], j >= offset && j < offset + n);
}

// out[r0 + i] = sum over the C column groups, in group order, of part[c][i] (i < rows).
template <typename Acc>
__global__ void row_sum_kernel(const Acc* __restrict__ part, int64_t groups, int64_t cap,
                               int64_t rows, int64_t r0, Acc* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows) return;
  Acc acc = part[i];
  for (int64_t c = 1; c < groups; ++c) acc += part[c * cap + i];
  out[r0 + i] = acc;
}

// *out = the sum of parts[0 .. count) in index order (one thread: deterministic).
template <typename Acc>
__global__ void ordered_sum_kernel(const double* __restrict__ parts, int64_t count,
                                   Acc* __restrict__ out) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double acc = 0;
  for (int64_t k = 0; k < count; ++k) acc += parts[k];
  *out = static_cast<Acc>(acc);
}

// The power of two 2^k (and 2^-k) by which 16-bit H is stored. |H_ij| <= bound =
// |s| max rho max sigma (max |g_row| + max |g_col|): for the softmax strip every probability and
// |expm1(-lse)| (lse >= 0) is at most 1; for the sigmoid strip g_col is null and |G| <= |w|
// (g_row null: w = 1). k = floor(log2(target / bound)), clamped to [-120, 120], so the largest
// |H 2^k| is at most target (2^14: 4x headroom under fp16's 65504) and tiny weights stay out of
// the subnormals (fp16 at N = 32k has G ~ 1e-8, below its smallest subnormal). A zero or
// non-finite bound gives k = 0 (NaN then propagates through H). One block; max is order-free.
template <typename Acc>
__global__ void h_scale_kernel(const Acc* __restrict__ a_inv, int64_t n, const Acc* __restrict__ b_inv,
                               int64_t m, const Acc* __restrict__ g_row, const Acc* __restrict__ g_col,
                               const Acc* __restrict__ scale, float target, Acc* __restrict__ out) {
  __shared__ Acc red[4][kThreads];
  Acc mx[4] = {0, 0, 0, 0};  // max rho, max sigma, max |g_row|, max |g_col| (NaN ignored)
  auto upd = [](Acc& cur, Acc v) { cur = v > cur ? v : cur; };
  auto mag = [](Acc v) { return v < 0 ? -v : v; };
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    upd(mx[0], mag(a_inv[i]));
    upd(mx[2], g_row != nullptr ? mag(g_row[i]) : Acc(1));
  }
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    upd(mx[1], mag(b_inv[j]));
    if (g_col != nullptr) upd(mx[3], mag(g_col[j]));
  }
  for (int q = 0; q < 4; ++q) red[q][threadIdx.x] = mx[q];
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int t = 1; t < static_cast<int>(blockDim.x); ++t)
    for (int q = 0; q < 4; ++q) upd(mx[q], red[q][t]);
  const double bound = static_cast<double>(mag(*scale)) * mx[0] * mx[1] *
                       (static_cast<double>(mx[2]) + mx[3]);
  int k = 0;
  if (bound > 0 && bound < 1e300) {
    k = static_cast<int>(floor(log2(static_cast<double>(target) / bound)));
    k = k < -120 ? -120 : (k > 120 ? 120 : k);  // 2^k and 2^-k stay normal fp32 numbers
  }
  out[0] = static_cast<Acc>(ldexp(1.0, k));
  out[1] = static_cast<Acc>(ldexp(1.0, -k));
}

}  // namespace kernels
}  // namespace cuda
}  // namespace gapops
