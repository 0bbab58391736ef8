// The fused elementwise loops of the CPU strip over one row of a tile of raw dots D_ij = A_i.B_j,
// for columns j in [lo, hi) (the strip calls them on both sides of a row's positive, which every
// loop here skips). Scalar templates for any T (namespace scalar; also the vector loops' tails)
// and float overloads on simd::Vec (AVX-512 or AVX2) where the build has one: GCC does not
// vectorize the scalar fast_exp reliably (its range clamps block if-conversion), and these loops
// are the strip's only work besides the BLAS products.
//
// Notation (docs/design.md section 2.1): rho = a_inv_norm_i, sigma = b_inv_norm, ap = a_pos_i,
// bp = b_pos, s = scale; cos_ij = rho sigma_j D_ij, row terms s (cos - ap), column terms
// s (cos - bp_j). The offsets from the positives are taken before the scale multiplies them.
#pragma once

#include <cstdint>

#include "../common/tile_math.h"
#include "simd.h"

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

// Forward, second pass over a row (after the column sums were moved to the maxima cmax):
// csum[j] += exp(s (cos_j - bp[j]) - cmax[j]); returns sum_j exp(s (cos_j - ap) - rmax). Each
// term is recomputed with exactly the roundings of the first pass (a product, then the
// difference: no fused multiply-add, and the build has -ffp-contract=off), so the maximal term
// gives exp(0) = 1 exactly: at a scale of 1e21 a fused product would be off by ~1e14 and turn it
// into exp(+-1e14). at_most_zero is a second guard.
template <typename T>
inline T exp_sums(const T* c, const T* bp, const T* cmax, T* csum, int64_t lo, int64_t hi, T s,
                  T ap, T rmax) {
  T rsum = 0;
  for (int64_t j = lo; j < hi; ++j) {
    rsum += fast_exp(at_most_zero(s * (c[j] - ap) - rmax));
    csum[j] += fast_exp(at_most_zero(s * (c[j] - bp[j]) - cmax[j]));
  }
  return rsum;
}

// Running sums moved to new maxima: sum[j] *= exp(max[j] - new_max[j]); max = new_max.
template <typename T>
inline void rescale_sums(T* sum, T* max, const T* new_max, int64_t lo, int64_t hi) {
  for (int64_t j = lo; j < hi; ++j) {
    sum[j] *= fast_exp(max[j] - new_max[j]);
    max[j] = new_max[j];
  }
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
inline T exp_sums(const T* c, const T* bp, const T* cmax, T* csum, int64_t lo, int64_t hi, T s,
                  T ap, T rmax) {
  return scalar::exp_sums(c, bp, cmax, csum, lo, hi, s, ap, rmax);
}
template <typename T>
inline void rescale_sums(T* sum, T* max, const T* new_max, int64_t lo, int64_t hi) {
  scalar::rescale_sums(sum, max, new_max, lo, hi);
}
template <typename T>
inline T grad_weights(T* c, const T* sigma, const T* bp, const T* cl, const T* gc, int64_t lo,
                      int64_t hi, T rho, T s, T ap, T rl, T gr) {
  return scalar::grad_weights(c, sigma, bp, cl, gc, lo, hi, rho, s, ap, rl, gr);
}

#if GAPOPS_SIMD_WIDTH > 0
// The float overloads below are preferred to the templates above for float arguments.
using V = simd::Vec;

inline float cosines_and_maxima(float* c, const float* sigma, const float* bp, float* cmax,
                                int64_t lo, int64_t hi, float rho, float s, float ap, float mx) {
  const V::R vrho = V::set1(rho), vs = V::set1(s), vap = V::set1(ap);
  V::R vmx = V::set1(mx);
  int64_t j = lo;
  for (; j + V::kWidth <= hi; j += V::kWidth) {
    const V::R cs = V::mul(V::mul(vrho, V::load(sigma + j)), V::load(c + j));
    V::store(c + j, cs);
    vmx = V::max(V::mul(vs, V::sub(cs, vap)), vmx);
    const V::R xc = V::mul(vs, V::sub(cs, V::load(bp + j)));
    V::store(cmax + j, V::max(xc, V::load(cmax + j)));
  }
  return scalar::cosines_and_maxima(c, sigma, bp, cmax, j, hi, rho, s, ap, V::hmax(vmx));
}

inline float exp_sums(const float* c, const float* bp, const float* cmax, float* csum, int64_t lo,
                      int64_t hi, float s, float ap, float rmax) {
  const V::R vs = V::set1(s), vap = V::set1(ap), vrmax = V::set1(rmax);
  V::R rsum = V::zero();
  int64_t j = lo;
  for (; j + V::kWidth <= hi; j += V::kWidth) {
    const V::R cs = V::load(c + j);
    const V::R xr = V::sub(V::mul(vs, V::sub(cs, vap)), vrmax);
    rsum = V::add(rsum, V::exp(V::at_most_zero(xr)));
    const V::R xc = V::sub(V::mul(vs, V::sub(cs, V::load(bp + j))), V::load(cmax + j));
    V::store(csum + j, V::add(V::load(csum + j), V::exp(V::at_most_zero(xc))));
  }
  return V::hsum(rsum) + scalar::exp_sums(c, bp, cmax, csum, j, hi, s, ap, rmax);
}

inline void rescale_sums(float* sum, float* max, const float* new_max, int64_t lo, int64_t hi) {
  int64_t j = lo;
  for (; j + V::kWidth <= hi; j += V::kWidth) {
    const V::R nm = V::load(new_max + j);
    V::store(sum + j, V::mul(V::load(sum + j), V::exp(V::sub(V::load(max + j), nm))));
    V::store(max + j, nm);
  }
  scalar::rescale_sums(sum, max, new_max, j, hi);
}

inline float grad_weights(float* c, const float* sigma, const float* bp, const float* cl,
                          const float* gc, int64_t lo, int64_t hi, float rho, float s, float ap,
                          float rl, float gr) {
  const V::R vrho = V::set1(rho), vs = V::set1(s), vap = V::set1(ap);
  const V::R vrl = V::set1(rl), vgr = V::set1(gr), vh = V::set1(s * rho);
  V::R acc = V::zero();
  int64_t j = lo;
  for (; j + V::kWidth <= hi; j += V::kWidth) {
    const V::R sig = V::load(sigma + j);
    const V::R cs = V::mul(V::mul(vrho, sig), V::load(c + j));
    const V::R dr = V::sub(cs, vap), dc = V::sub(cs, V::load(bp + j));
    const V::R gp = V::mul(vgr, V::exp(V::at_most_zero(V::fmsub(vs, dr, vrl))));
    const V::R gq =
        V::mul(V::load(gc + j), V::exp(V::at_most_zero(V::fmsub(vs, dc, V::load(cl + j)))));
    acc = V::fmadd(gp, dr, V::fmadd(gq, dc, acc));
    V::store(c + j, V::mul(V::mul(vh, sig), V::add(gp, gq)));
  }
  return V::hsum(acc) + scalar::grad_weights(c, sigma, bp, cl, gc, j, hi, rho, s, ap, rl, gr);
}
#endif  // GAPOPS_SIMD_WIDTH > 0

}  // namespace gapops
