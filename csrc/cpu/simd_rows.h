// The three fused elementwise loops of the CPU strip, over one tile row, written with AVX2
// intrinsics where the build has them. GCC does not vectorize the scalar fast_exp reliably
// (its range clamps block if-conversion), and these loops are the strip's only non-BLAS work.
#pragma once

#include <cstdint>

#include "../common/tile_math.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GAPOPS_AVX2 1
#endif

namespace gapops {

#ifdef GAPOPS_AVX2
// 8-wide twin of fast_exp (same reduction and polynomial): 0 below -87.3, NaN stays NaN.
inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504019f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 xc = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  const __m256 k = _mm256_floor_ps(
      _mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), under);
  return _mm256_blendv_ps(y, x, nan);
}

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#endif

// sum_j exp(x[j] - m)
template <typename T>
inline T sum_exp_shifted(const T* x, T m, int64_t n) {
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += fast_exp(x[j] - m);
  return sum;
}

// acc[j] = acc[j] * exp(old_max[j] - new_max[j]), then old_max = new_max (a running-LSE rescale)
template <typename T>
inline void rescale_sums(T* acc, T* old_max, const T* new_max, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    acc[j] *= fast_exp(old_max[j] - new_max[j]);
    old_max[j] = new_max[j];
  }
}

// acc[j] += exp(x[j] - m[j])
template <typename T>
inline void add_exp_shifted(T* acc, const T* x, const T* m, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += fast_exp(x[j] - m[j]);
}

// One backward tile row, in place: x[j] (a dot a_i.b_j) becomes
// G_ij = gr exp(s x[j] - rl) + gc[j] exp(s x[j] - cl[j]); returns sum_j G_ij x[j].
template <typename T>
inline T grad_row(T* x, T s, T rl, T gr, const T* cl, const T* gc, int64_t n) {
  T acc = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T dot = x[j], logit = s * dot;
    const T g = gr * fast_exp(logit - rl) + gc[j] * fast_exp(logit - cl[j]);
    acc += g * dot;
    x[j] = g;
  }
  return acc;
}

#ifdef GAPOPS_AVX2
template <>
inline float sum_exp_shifted<float>(const float* x, float m, int64_t n) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm)));
  float sum = hsum8(acc);
  for (; j < n; ++j) sum += fast_exp(x[j] - m);
  return sum;
}

template <>
inline void rescale_sums<float>(float* acc, float* old_max, const float* new_max, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 nm = _mm256_loadu_ps(new_max + j);
    const __m256 f = exp8(_mm256_sub_ps(_mm256_loadu_ps(old_max + j), nm));
    _mm256_storeu_ps(acc + j, _mm256_mul_ps(_mm256_loadu_ps(acc + j), f));
    _mm256_storeu_ps(old_max + j, nm);
  }
  for (; j < n; ++j) {
    acc[j] *= fast_exp(old_max[j] - new_max[j]);
    old_max[j] = new_max[j];
  }
}

template <>
inline void add_exp_shifted<float>(float* acc, const float* x, const float* m, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(m + j)));
    _mm256_storeu_ps(acc + j, _mm256_add_ps(_mm256_loadu_ps(acc + j), e));
  }
  for (; j < n; ++j) acc[j] += fast_exp(x[j] - m[j]);
}

template <>
inline float grad_row<float>(float* x, float s, float rl, float gr, const float* cl,
                             const float* gc, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s), vrl = _mm256_set1_ps(rl), vgr = _mm256_set1_ps(gr);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 dot = _mm256_loadu_ps(x + j);
    const __m256 logit = _mm256_mul_ps(vs, dot);
    const __m256 g = _mm256_fmadd_ps(
        vgr, exp8(_mm256_sub_ps(logit, vrl)),
        _mm256_mul_ps(_mm256_loadu_ps(gc + j), exp8(_mm256_sub_ps(logit, _mm256_loadu_ps(cl + j)))));
    acc = _mm256_fmadd_ps(g, dot, acc);
    _mm256_storeu_ps(x + j, g);
  }
  float sum = hsum8(acc);
  for (; j < n; ++j) {
    const float dot = x[j], logit = s * dot;
    const float g = gr * fast_exp(logit - rl) + gc[j] * fast_exp(logit - cl[j]);
    sum += g * dot;
    x[j] = g;
  }
  return sum;
}
#endif

}  // namespace gapops
