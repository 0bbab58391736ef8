// Host emulation stand-in for <mma.h> (tests/cuda_emu): nvcuda::wmma with the documented
// semantics of load / mma / store on whole 16 x 16 (x K) tiles. Every lane of a warp holds the
// whole tile (a lane-agnostic stand-in for the opaque fragment layout); lane 0 alone stores.
// Products of 16-bit or TF32 operands are exact in fp32, accumulation is fp32 (the order within
// one mma differs from the hardware's), and __float_to_tf32 rounds as cvt.rna.tf32.f32 does.
#pragma once
#include <cstdint>
#include <cstring>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "emu_runtime.h"
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K> struct shape;  // rows x cols of each fragment kind
template <int M, int N, int K> struct shape<matrix_a, M, N, K> { static constexpr int R = M, C = K; };
template <int M, int N, int K> struct shape<matrix_b, M, N, K> { static constexpr int R = K, C = N; };
template <int M, int N, int K> struct shape<accumulator, M, N, K> { static constexpr int R = M, C = N; };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int R = shape<Use, M, N, K>::R, C = shape<Use, M, N, K>::C;
  static constexpr int num_elements = R * C;
  float x[R * C];  // x[r * C + c]
};

inline float to_f(float v) { return v; }
inline float to_f(__half h) { return __half2float(h); }
inline float to_f(__nv_bfloat16 h) { return __bfloat162float(h); }

template <class Use, int M, int N, int K, class T, class Layout, class E>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const E* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  for (int r = 0; r < F::R; ++r)
    for (int c = 0; c < F::C; ++c) {
      const E& e = std::is_same<Layout, row_major>::value ? p[r * ldm + c] : p[c * ldm + r];
      f.x[r * F::C + c] = to_f(e);
    }
}

template <int M, int N, int K, class T>
void fill_fragment(fragment<accumulator, M, N, K, T>& f, float v) {
  for (int i = 0; i < M * N; ++i) f.x[i] = v;
}

template <int M, int N, int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k) acc += a.x[i * K + k] * b.x[k * N + j];
      out[i * N + j] = acc;
    }
  for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  emu::check_warp_uniform();
  if (emu::lane() != 0) return;
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}

// Round to nearest, ties away from zero, keeping 10 mantissa bits (the TF32 significand).
inline float __float_to_tf32(float v) {
  if (!std::isfinite(v)) return v;
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u + 0x1000u) & 0xffffe000u;
  std::memcpy(&v, &u, 4);
  return v;
}
}  // namespace wmma
}  // namespace nvcuda
