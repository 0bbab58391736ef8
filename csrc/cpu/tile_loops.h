// The fused elementwise loops of the CPU strip over one row of a tile of raw dots D_ij = A_i.B_j,
// for columns j in [lo, hi) (the strip calls them on both sides of a row's positive, which every
// loop here skips). Scalar templates for any T (namespace scalar, also the vector loops' tails),
// and float overloads with AVX2 where the build has it: GCC does not vectorize the scalar fast_exp reliably (its range clamps block
// if-conversion), and these loops are the strip's only work besides the BLAS products.
//
// Notation (docs/design.md section 2.1): rho = a_inv_norm_i, sigma = b_inv_norm, ap = a_pos_i,
// bp = b_pos, s = scale; cos_ij = rho sigma_j D_ij, row terms s (cos - ap), column terms
// s (cos - bp_j). The offsets from the positives are taken before the scale multiplies them.
#pragma once

#include <cstdint>

#include "../common/tile_math.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GAPOPS_AVX2 1
#endif

namespace gapops {

namespace scalar {

// Forward, first pass over a row: D -> cos in place; returns max(mx, max_j s (cos_j - ap)) and
// raises cmax[j] to s (cos_j - bp[j]). A NaN term leaves the maxima alone: the sums carry it.
template <typename T>
inline T cosines_and_maxima(T* c, const T* sigma, const T* bp, T* cmax, int64_t lo, int64_t hi,
                            T rho, T s, T ap, T mx) {
  for (int64_t j = lo; j < hi; ++j) {
    const T cs = rho * sigma[j] * c[j];
    c[j] = cs;
    const T xr = s * (cs - ap), xc = s * (cs - bp[j]);
    mx = xr > mx ? xr : mx;
    cmax[j] = xc > cmax[j] ? xc : cmax[j];
  }
  return mx;
}

// Forward, row sum: sum_j exp(s (cos_j - ap) - mx).
template <typename T>
inline T row_exp_sum(const T* c, int64_t lo, int64_t hi, T s, T ap, T mx) {
  T sum = 0;
  for (int64_t j = lo; j < hi; ++j) sum += fast_exp(s * (c[j] - ap) - mx);
  return sum;
}

// Running column sums moved to new maxima: sum[j] *= exp(max[j] - new_max[j]); max = new_max.
template <typename T>
inline void rescale_sums(T* sum, T* max, const T* new_max, int64_t lo, int64_t hi) {
  for (int64_t j = lo; j < hi; ++j) {
    sum[j] *= fast_exp(max[j] - new_max[j]);
    max[j] = new_max[j];
  }
}

// Forward, column sums: sum[j] += exp(s (cos_j - bp[j]) - max[j]).
template <typename T>
inline void col_exp_add(T* sum, const T* c, const T* bp, const T* max, int64_t lo, int64_t hi,
                        T s) {
  for (int64_t j = lo; j < hi; ++j) sum[j] += fast_exp(s * (c[j] - bp[j]) - max[j]);
}

// Backward, one row: D -> H_j = s rho sigma_j G_j in place, G_j = pair_grad_weight(...) (the
// pairs that are not the positive); returns the row's grad_scale share sum_j (gp dr + gq dc).
template <typename T>
inline T grad_weights(T* c, const T* sigma, const T* bp, const T* cl, const T* gc, int64_t lo,
                      int64_t hi, T rho, T s, T ap, T rl, T gr) {
  const T h = s * rho;
  T ds = 0;
  for (int64_t j = lo; j < hi; ++j) {
    const T cs = rho * sigma[j] * c[j];
    T term;
    const T g = pair_grad_weight(s, cs - ap, cs - bp[j], rl, cl[j], gr, gc[j], term);
    ds += term;
    c[j] = h * sigma[j] * g;
  }
  return ds;
}

}  // namespace scalar

template <typename T>
inline T cosines_and_maxima(T* c, const T* sigma, const T* bp, T* cmax, int64_t lo, int64_t hi,
                            T rho, T s, T ap, T mx) {
  return scalar::cosines_and_maxima(c, sigma, bp, cmax, lo, hi, rho, s, ap, mx);
}
template <typename T>
inline T row_exp_sum(const T* c, int64_t lo, int64_t hi, T s, T ap, T mx) {
  return scalar::row_exp_sum(c, lo, hi, s, ap, mx);
}
template <typename T>
inline void rescale_sums(T* sum, T* max, const T* new_max, int64_t lo, int64_t hi) {
  scalar::rescale_sums(sum, max, new_max, lo, hi);
}
template <typename T>
inline void col_exp_add(T* sum, const T* c, const T* bp, const T* max, int64_t lo, int64_t hi,
                        T s) {
  scalar::col_exp_add(sum, c, bp, max, lo, hi, s);
}
template <typename T>
inline T grad_weights(T* c, const T* sigma, const T* bp, const T* cl, const T* gc, int64_t lo,
                      int64_t hi, T rho, T s, T ap, T rl, T gr) {
  return scalar::grad_weights(c, sigma, bp, cl, gc, lo, hi, rho, s, ap, rl, gr);
}

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

inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// The float overloads below are preferred to the templates above for float arguments.

inline float cosines_and_maxima(float* c, const float* sigma, const float* bp, float* cmax,
                                int64_t lo, int64_t hi, float rho, float s, float ap, float mx) {
  const __m256 vrho = _mm256_set1_ps(rho), vs = _mm256_set1_ps(s), vap = _mm256_set1_ps(ap);
  __m256 vmx = _mm256_set1_ps(mx);
  int64_t j = lo;
  for (; j + 8 <= hi; j += 8) {
    const __m256 cs = _mm256_mul_ps(_mm256_mul_ps(vrho, _mm256_loadu_ps(sigma + j)),
                                    _mm256_loadu_ps(c + j));
    _mm256_storeu_ps(c + j, cs);
    // max(new, old) returns old when new is NaN, as the scalar loop does
    vmx = _mm256_max_ps(_mm256_mul_ps(vs, _mm256_sub_ps(cs, vap)), vmx);
    const __m256 xc = _mm256_mul_ps(vs, _mm256_sub_ps(cs, _mm256_loadu_ps(bp + j)));
    _mm256_storeu_ps(cmax + j, _mm256_max_ps(xc, _mm256_loadu_ps(cmax + j)));
  }
  return scalar::cosines_and_maxima(c, sigma, bp, cmax, j, hi, rho, s, ap, hmax8(vmx));
}

inline float row_exp_sum(const float* c, int64_t lo, int64_t hi, float s, float ap, float mx) {
  const __m256 vs = _mm256_set1_ps(s), vap = _mm256_set1_ps(ap), vmx = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = lo;
  for (; j + 8 <= hi; j += 8) {
    const __m256 x = _mm256_fmsub_ps(vs, _mm256_sub_ps(_mm256_loadu_ps(c + j), vap), vmx);
    acc = _mm256_add_ps(acc, exp8(x));
  }
  return hsum8(acc) + scalar::row_exp_sum(c, j, hi, s, ap, mx);
}

inline void rescale_sums(float* sum, float* max, const float* new_max, int64_t lo, int64_t hi) {
  int64_t j = lo;
  for (; j + 8 <= hi; j += 8) {
    const __m256 nm = _mm256_loadu_ps(new_max + j);
    const __m256 f = exp8(_mm256_sub_ps(_mm256_loadu_ps(max + j), nm));
    _mm256_storeu_ps(sum + j, _mm256_mul_ps(_mm256_loadu_ps(sum + j), f));
    _mm256_storeu_ps(max + j, nm);
  }
  scalar::rescale_sums(sum, max, new_max, j, hi);
}

inline void col_exp_add(float* sum, const float* c, const float* bp, const float* max, int64_t lo,
                        int64_t hi, float s) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t j = lo;
  for (; j + 8 <= hi; j += 8) {
    const __m256 x = _mm256_fmsub_ps(
        vs, _mm256_sub_ps(_mm256_loadu_ps(c + j), _mm256_loadu_ps(bp + j)), _mm256_loadu_ps(max + j));
    _mm256_storeu_ps(sum + j, _mm256_add_ps(_mm256_loadu_ps(sum + j), exp8(x)));
  }
  scalar::col_exp_add(sum, c, bp, max, j, hi, s);
}

inline float grad_weights(float* c, const float* sigma, const float* bp, const float* cl,
                          const float* gc, int64_t lo, int64_t hi, float rho, float s, float ap,
                          float rl, float gr) {
  const __m256 vrho = _mm256_set1_ps(rho), vs = _mm256_set1_ps(s), vap = _mm256_set1_ps(ap);
  const __m256 vrl = _mm256_set1_ps(rl), vgr = _mm256_set1_ps(gr), vh = _mm256_set1_ps(s * rho);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = lo;
  for (; j + 8 <= hi; j += 8) {
    const __m256 sig = _mm256_loadu_ps(sigma + j);
    const __m256 cs = _mm256_mul_ps(_mm256_mul_ps(vrho, sig), _mm256_loadu_ps(c + j));
    const __m256 dr = _mm256_sub_ps(cs, vap), dc = _mm256_sub_ps(cs, _mm256_loadu_ps(bp + j));
    const __m256 gp = _mm256_mul_ps(vgr, exp8(_mm256_fmsub_ps(vs, dr, vrl)));
    const __m256 gq = _mm256_mul_ps(_mm256_loadu_ps(gc + j),
                                    exp8(_mm256_fmsub_ps(vs, dc, _mm256_loadu_ps(cl + j))));
    acc = _mm256_fmadd_ps(gp, dr, _mm256_fmadd_ps(gq, dc, acc));
    _mm256_storeu_ps(c + j, _mm256_mul_ps(_mm256_mul_ps(vh, sig), _mm256_add_ps(gp, gq)));
  }
  return hsum8(acc) + scalar::grad_weights(c, sigma, bp, cl, gc, j, hi, rho, s, ap, rl, gr);
}
#endif  // GAPOPS_AVX2

}  // namespace gapops
