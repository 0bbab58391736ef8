// Per-element and per-row math of the strip kernels, shared by the CPU and CUDA backends.
// Everything here is __host__ __device__ so the CPU extension can test what the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define GAPOPS_HD __host__ __device__ __forceinline__
#else
#define GAPOPS_HD inline
#endif

namespace gapops {

// exp(x) for float without a libm call (csrc/cpu/simd.h has its AVX-512 / AVX2 twins).
// Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, then a degree-6 polynomial: <= 2 ulp on
// [-87, 88]. Below -87.3 it returns 0 (e^-87.3 is the smallest normal float); NaN stays NaN
// because comparisons with NaN are false and the polynomial of NaN is NaN.
GAPOPS_HD float fast_exp(float x) {
  const float hi = 88.3762626647949f, lo = -87.3365447504019f;
  x = x > hi ? hi : x;
  const bool underflow = x < lo;
  x = underflow ? lo : x;
  const float k = floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t ki = static_cast<int32_t>(k);
  int32_t bits = (ki + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &bits, sizeof(two_k));
  const float y = p * two_k;
  return underflow ? 0.0f : y;
}

GAPOPS_HD double fast_exp(double x) { return exp(x); }

// min(x, 0), keeping NaN. For the argument of an exp that is <= 0 in exact arithmetic (a term
// minus its running maximum, or minus its complete log-sum-exp) but may round above 0: at a huge
// scale (1e21) the rounding error alone is ~1e14, which would overflow the exp.
template <typename T>
GAPOPS_HD T at_most_zero(T x) {
  return x > T(0) ? T(0) : x;
}

// Merge a running log-sum-exp state (m, s) = (max, sum e^(x - max)) with another one (m2, s2).
// Two empty states (max = -inf) stay empty instead of producing NaN; a NaN max propagates.
template <typename T>
GAPOPS_HD void lse_merge(T& m, T& s, T m2, T s2) {
  const T mn = m > m2 ? m : m2;
  if (mn == -INFINITY) return;
  s = s * fast_exp(m - mn) + s2 * fast_exp(m2 - mn);
  m = mn;
}

// Relative statistics (docs/design.md section 2.1). A row's (or column's) running state is
// (m, s): m = max(0, max of the terms seen) >= 0 and s = sum of e^(x - m) over the terms other
// than the positive, whose own term is the exact 1 added at the end. States merge with lse_merge.
// With the positive the result is log(1 + sum e^x): log1p(s) when m == 0 (no cancellation when
// the positive dominates), else m + log(e^-m + s); without it (a column whose positive row is on
// another strip) it is log(sum e^x), which may come back as -inf when every term underflows.
template <typename T>
GAPOPS_HD T rel_lse_finalize(T m, T s, bool has_positive) {
  if (!has_positive) return m + log(s);
  return m == T(0) ? log1p(s) : m + log(fast_exp(-m) + s);
}

// G at a positive pair: g_row (e^-row_lse - 1) + g_col (e^-col_lse - 1), by expm1, where the
// softmax - one-hot of the naive form cancels.
template <typename T>
GAPOPS_HD T positive_grad_weight(T g_row, T row_lse, T g_col, T col_lse) {
  return g_row * expm1(-row_lse) + g_col * expm1(-col_lse);
}

// G_ij at a pair that is not a positive (docs/design.md section 2.1), from the cosine's offsets
// dr = cos_ij - a_pos_i and dc = cos_ij - b_pos_j: g_row e^(s dr - row_lse) + g_col e^(s dc - col_lse)
// (each exponent <= 0 exactly: row_lse >= log(1 + e^(s dr)), so it is clamped there).
// scale_term receives the pair's share of grad_scale, g_row P dr + g_col Q dc (a small probability
// times a cosine difference: the cancellation-free form).
template <typename T>
GAPOPS_HD T pair_grad_weight(T s, T dr, T dc, T row_lse, T col_lse, T g_row, T g_col,
                             T& scale_term) {
  const T gp = g_row * fast_exp(at_most_zero(s * dr - row_lse));
  const T gq = g_col * fast_exp(at_most_zero(s * dc - col_lse));
  scale_term = gp * dr + gq * dc;
  return gp + gq;
}

// One pair of the sigmoid (SigLIP) loss (docs/design.md section 2.6) at z = s cos + bias with
// label l = +1 (positive) or -1: returns the loss term softplus(-l z) = max(t, 0) + log1p(e^-|t|)
// with t = -l z, and sets grad_weight = G = -l w sigmoid(t) (never 1 - sigmoid, which cancels to
// nothing where the term is tiny). One exponential serves both: e = e^-|t| in [0, 1], and
// sigmoid(t) = 1 / (1 + e) for t >= 0, e / (1 + e) otherwise. NaN in z gives NaN in both.
template <typename T>
GAPOPS_HD T sigmoid_pair(T z, bool positive, T w, T& grad_weight) {
  const T t = positive ? -z : z;
  const T e = fast_exp(t < T(0) ? t : -t);
  const T sig = t >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  grad_weight = positive ? -(w * sig) : w * sig;
  return (t > T(0) ? t : T(0)) + static_cast<T>(log1p(e));
}

}  // namespace gapops
