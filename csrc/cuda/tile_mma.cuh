// Tile products of the CUDA strip kernels: C[64 x N] = X[64 x K] * Y[K x N] from shared memory,
// by one block of 128 threads (4 warps in a 2 x 2 grid, each warp a 32 x N/2 sub-tile).
//
// Two engines with the same shape contract:
//   * WMMA tensor cores (nvcuda::wmma): __half / __nv_bfloat16 operands (m16n16k16) or float
//     operands rounded to TF32 (m16n16k8), fp32 accumulation. Needs sm_80+.
//   * SIMT: exact fp32 or fp64 FMAs, each thread a 4 x (N/8) sub-tile.
// Operand layouts are compile-time: X is row-major (element (r,k) at X[r*ldx + k]) or col-major
// ((r,k) at X[k*ldx + r]); Y likewise ((k,c) at Y[k*ldy + c] row-major, Y[c*ldy + k] col-major).
// Results come back in registers (fragments or arrays) and are written to shared memory by
// store(), so the caller decides when the operands may be overwritten.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <type_traits>

namespace gapops {
namespace cuda {

constexpr int kThreads = 128;  // 4 warps
constexpr int kTileM = 64;     // rows of a logits tile
constexpr int kTileN = 64;     // columns of a logits tile

struct RowMajor {};
struct ColMajor {};

template <typename E>
__device__ __forceinline__ float to_float(E v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// Converts an input element to the staging type E of the shared-memory tiles (torch builds with
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
template <typename E>
__device__ __forceinline__ E stage_zero() {
  return stage_cast<E>(0.0f);
}

// ---------------------------------------------------------------- WMMA engine
namespace wmma = nvcuda::wmma;

template <typename E>
struct WmmaIn;  // the fragment input type and the k of one mma for a staging type
template <>
struct WmmaIn<__half> {
  using type = __half;
  static constexpr int K = 16;
};
template <>
struct WmmaIn<__nv_bfloat16> {
  using type = __nv_bfloat16;
  static constexpr int K = 16;
};
template <>
struct WmmaIn<float> {
  using type = wmma::precision::tf32;
  static constexpr int K = 8;
};

// fp32 operands feed the TF32 mma: round each loaded fragment element to TF32 first.
template <typename E, typename Frag>
__device__ __forceinline__ void round_to_tf32_if_float(Frag& f) {
  if constexpr (std::is_same<E, float>::value) {
#pragma unroll
    for (int t = 0; t < f.num_elements; ++t) f.x[t] = wmma::__float_to_tf32(f.x[t]);
  }
}

template <typename L>
using WmmaLayout =
    typename std::conditional<std::is_same<L, RowMajor>::value, wmma::row_major,
                              wmma::col_major>::type;

// Warp (wr, wc) of the 2 x 2 warp grid owns rows wr*32 + [0, 32) and columns wc*N/2 + [0, N/2).
template <typename E, int N>
struct WmmaTile {
  static_assert(N % 32 == 0, "WMMA tile width must be a multiple of 32");
  static constexpr int FM = 2, FN = N / 32, K = WmmaIn<E>::K;
  wmma::fragment<wmma::accumulator, 16, 16, K, float> acc[FM][FN];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }

  // acc += X[rows, 0:kdim] * Y[0:kdim, cols]; kdim a multiple of K.
  template <typename LX, typename LY>
  __device__ __forceinline__ void mma(const E* X, int ldx, const E* Y, int ldy, int kdim) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    using In = typename WmmaIn<E>::type;
    const int warp = threadIdx.x / 32, wr = warp / 2, wc = warp % 2;
    for (int k0 = 0; k0 < kdim; k0 += K) {
      wmma::fragment<wmma::matrix_a, 16, 16, K, In, WmmaLayout<LX>> fa[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, K, In, WmmaLayout<LY>> fb[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        const int r0 = wr * 32 + i * 16;
        const E* p = std::is_same<LX, RowMajor>::value ? X + r0 * ldx + k0 : X + k0 * ldx + r0;
        wmma::load_matrix_sync(fa[i], p, ldx);
        round_to_tf32_if_float<E>(fa[i]);
      }
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        const int c0 = wc * (N / 2) + j * 16;
        const E* p = std::is_same<LY, RowMajor>::value ? Y + k0 * ldy + c0 : Y + c0 * ldy + k0;
        wmma::load_matrix_sync(fb[j], p, ldy);
        round_to_tf32_if_float<E>(fb[j]);
      }
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
#else
    __trap();  // tensor-core kernels are only launched on sm_80+
#endif
  }

  // C[r*ldc + c] = acc (row-major, 64 x N).
  __device__ __forceinline__ void store(float* C, int ldc) {
    const int warp = threadIdx.x / 32, wr = warp / 2, wc = warp % 2;
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j)
        wmma::store_matrix_sync(C + (wr * 32 + i * 16) * ldc + wc * (N / 2) + j * 16, acc[i][j],
                                ldc, wmma::mem_row_major);
  }
};

// ---------------------------------------------------------------- SIMT engine
// Thread t owns rows (t / 8) + 16 i (i < 4) and columns (t % 8) + 8 j (j < N / 8).
template <typename Acc, int N>
struct SimtTile {
  static_assert(N % 8 == 0, "SIMT tile width must be a multiple of 8");
  static constexpr int TM = 4, TN = N / 8;
  Acc acc[TM][TN];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = Acc(0);
  }

  template <typename LX, typename LY>
  __device__ __forceinline__ void mma(const Acc* X, int ldx, const Acc* Y, int ldy, int kdim) {
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
    for (int k = 0; k < kdim; ++k) {
      Acc x[TM], y[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const int r = tr + 16 * i;
        x[i] = std::is_same<LX, RowMajor>::value ? X[r * ldx + k] : X[k * ldx + r];
      }
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int c = tc + 8 * j;
        y[j] = std::is_same<LY, RowMajor>::value ? Y[k * ldy + c] : Y[c * ldy + k];
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fma(x[i], y[j], acc[i][j]);
    }
  }

  __device__ __forceinline__ void store(Acc* C, int ldc) {
    const int tr = threadIdx.x / 8, tc = threadIdx.x % 8;
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) C[(tr + 16 * i) * ldc + tc + 8 * j] = acc[i][j];
  }
};

}  // namespace cuda
}  // namespace gapops
