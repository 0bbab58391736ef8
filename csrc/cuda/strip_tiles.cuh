// The pieces every CUDA strip kernel shares: the per-variant configuration and shared-memory
// carve-up, the routed row sources, the 64 x 64 dot-product tile and the fold of a tile row or
// column into a relative log-sum-exp state (docs/design.md section 2.1). No ATen here, so that
// tests/cuda_emu can compile it for the host.
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

// The occupancy the strip kernels are compiled for (the second __launch_bounds__ argument): 4
// blocks of 128 threads per SM caps registers at 128 per thread (fp32 accumulation); fp64 needs
// ~165 and gets 3 (170). Without the hint ptxas spilled a few bytes on sm_80.
template <typename Acc>
constexpr int kMinBlocksPerSm = sizeof(Acc) == 8 ? 3 : 4;

constexpr int pad_for(size_t bytes) { return bytes == 2 ? 8 : (bytes == 4 ? 4 : 1); }
constexpr size_t round128(size_t x) { return (x + 127) / 128 * 128; }

// Compile-time configuration of one kernel variant.
//   T:    input element type (__half, __nv_bfloat16, float, double)
//   Acc:  accumulation / statistics type (float; double for double inputs)
//   kMma: tensor cores (WMMA) when true, exact SIMT FMAs when false
template <typename T, typename Acc, bool kMma>
struct Cfg {
  static_assert(!kMma || std::is_same<Acc, float>::value, "tensor-core paths accumulate in fp32");
  // staging type of the dot-product tile: the input type itself on tensor cores (fp32 is rounded
  // to TF32 by the fragment loads), the accumulation type on SIMT
  using E = typename std::conditional<kMma, typename std::conditional<std::is_same<T, double>::value,
                                                                     float, T>::type,
                                      Acc>::type;
  static constexpr int KC = std::is_same<Acc, double>::value ? 8 : 32;  // d-chunk of the dot tile
  static constexpr int DK = KC;                                         // d-chunk of G products
  static constexpr int LDK = KC + pad_for(sizeof(E));    // staging tile leading dim
  static constexpr int LDD = DK + pad_for(sizeof(Acc));  // G-product operand leading dim
  static constexpr int LDS = BN + pad_for(sizeof(Acc));  // dot / G tile leading dim
  static constexpr int kVecs = 8;                        // per-row and per-column vectors

  static constexpr size_t kS = round128(sizeof(Acc) * BM * LDS);
  static constexpr size_t kStage = round128(sizeof(E) * BM * LDK) + round128(sizeof(E) * BN * LDK);
  static constexpr size_t kGOps = round128(sizeof(Acc) * BN * LDD);  // a B chunk, then the result
  static constexpr size_t kUnion = kStage > kGOps ? kStage : kGOps;
  static constexpr size_t kVec = round128(sizeof(Acc) * BM);
  static constexpr size_t kBytes = kS + kUnion + kVecs * kVec + round128(sizeof(double) * 4);
  static_assert(kBytes <= 48 * 1024, "static shared memory limit");

  using DotTile =
      typename std::conditional<kMma, WmmaTile<E, BN>, SimtTile<Acc, BN>>::type;
  // G products: TF32 on tensor cores (16-bit inputs convert to fp32 exactly), else SIMT in Acc
  using GTile = typename std::conditional<kMma, WmmaTile<float, DK>, SimtTile<Acc, DK>>::type;
};

// Shared-memory carve-up (byte offsets fixed by Cfg): the dot / G tile S, a union of the dot
// product's staging (sa, sb) and the G product's operand (xb), kVecs vectors of 64, a reduction
// scratch of 4 doubles.
template <class C, typename Acc>
struct Smem {
  unsigned char* base;
  __device__ Acc* S() const { return reinterpret_cast<Acc*>(base); }
  __device__ typename C::E* sa() const { return reinterpret_cast<typename C::E*>(base + C::kS); }
  __device__ typename C::E* sb() const {
    return reinterpret_cast<typename C::E*>(base + C::kS + round128(sizeof(typename C::E) * BM * C::LDK));
  }
  __device__ Acc* xb() const { return reinterpret_cast<Acc*>(base + C::kS); }
  __device__ Acc* vec(int k) const {
    return reinterpret_cast<Acc*>(base + C::kS + C::kUnion + k * C::kVec);
  }
  __device__ double* red() const {
    return reinterpret_cast<double*>(base + C::kS + C::kUnion + C::kVecs * C::kVec);
  }
};

// One side of the strip: row i is main[i] or, where swap[i], alt[i] (swap may be null), each with
// its own strides in elements. No routed copy is ever made: the kernels read through this.
template <typename T>
struct RowSource {
  const T* main;
  const T* alt;
  const bool* swap;
  int64_t main_s0, main_s1, alt_s0, alt_s1;

  __device__ __forceinline__ T at(int64_t i, int64_t k) const {
    return (swap != nullptr && swap[i]) ? alt[i * alt_s0 + k * alt_s1] : main[i * main_s0 + k * main_s1];
  }
};

// S[r][c] = X_{i0 + r} . Y_{j0 + c} (raw routed rows, unscaled); rows at or past i_end and columns
// at or past j_end read as zeros. Ends with a __syncthreads(): S is complete and visible.
template <class C, typename T, typename Acc>
__device__ void tile_dots(const RowSource<T>& X, const RowSource<T>& Y, int64_t i_end,
                          int64_t j_end, int64_t d, int64_t i0, int64_t j0, const Smem<C, Acc>& sm) {
  using E = typename C::E;
  typename C::DotTile tile;
  tile.zero();
  E* sa = sm.sa();
  E* sb = sm.sb();
  for (int64_t k0 = 0; k0 < d; k0 += C::KC) {
    for (int idx = threadIdx.x; idx < BM * C::KC; idx += kThreads) {
      const int r = idx / C::KC, k = idx % C::KC;
      const int64_t i = i0 + r, kk = k0 + k;
      sa[r * C::LDK + k] = (i < i_end && kk < d) ? stage_cast<E>(X.at(i, kk)) : stage_zero<E>();
    }
    for (int idx = threadIdx.x; idx < BN * C::KC; idx += kThreads) {
      const int c = idx / C::KC, k = idx % C::KC;
      const int64_t j = j0 + c, kk = k0 + k;
      sb[c * C::LDK + k] = (j < j_end && kk < d) ? stage_cast<E>(Y.at(j, kk)) : stage_zero<E>();
    }
    __syncthreads();
    // S += sa (row-major [BM x KC]) * sb^T (sb is [BN x KC] row-major, i.e. [KC x BN] col-major)
    tile.template mma<RowMajor, ColMajor>(sa, C::LDK, sb, C::LDK, C::KC);
    __syncthreads();
  }
  tile.store(sm.S(), C::LDS);
  __syncthreads();
}

// The relative log-sum-exp state of the terms s (p[k ld] - pos) for k = first, first + stride, ...
// < end, except k == skip (the positive pair, whose term is the exact 1 added at finalization):
// M = max(0, max term) and sum = sum e^(term - M). A NaN term makes M NaN and with it the sum.
// States merge with lse_merge and finish with rel_lse_finalize (csrc/common/tile_math.h).
template <typename Acc>
__device__ __forceinline__ void rel_fold(const Acc* p, int first, int end, int stride, int ld,
                                         int skip, Acc s, Acc pos, Acc& M, Acc& sum) {
  Acc mx = 0;
  for (int k = first; k < end; k += stride) {
    if (k == skip) continue;
    const Acc v = s * (p[k * ld] - pos);
    mx = (v > mx || v != v) ? v : mx;
  }
  Acc acc = 0;
  for (int k = first; k < end; k += stride) {
    if (k == skip) continue;
    // at_most_zero: nvcc may contract this into an fma whose rounding differs from the max's
    // (by ~1e14 at a scale of 1e21), which would overflow the exp
    acc += fast_exp(at_most_zero(s * (p[k * ld] - pos) - mx));
  }
  M = mx;
  sum = acc;
}

}  // namespace kernels
}  // namespace cuda
}  // namespace gapops
