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

// exp(x) for float without a libm call, so that loops over tiles vectorize (AVX2 on the CPU).
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

// Merge a running log-sum-exp state (m, s) = (max, sum e^(x - max)) with another one (m2, s2).
// Two empty states (max = -inf) stay empty instead of producing NaN; a NaN max propagates.
template <typename T>
GAPOPS_HD void lse_merge(T& m, T& s, T m2, T s2) {
  const T mn = m > m2 ? m : m2;
  if (mn == -INFINITY) return;
  s = s * fast_exp(m - mn) + s2 * fast_exp(m2 - mn);
  m = mn;
}

template <typename T>
GAPOPS_HD T lse_finalize(T m, T s) {
  return m + log(s);
}

// The (max, sum e^(x - max)) state of scale * x[0], scale * x[step], ... (count terms): what one
// GPU thread folds over its share of a logits tile row or column before the threads' states are
// combined with lse_merge. count <= 0 gives the empty state (-inf, 0).
template <typename T>
GAPOPS_HD void lse_partial(const T* x, int count, int step, T scale, T& m, T& s) {
  T mx = -INFINITY;
  for (int k = 0; k < count; ++k) {
    const T v = scale * x[k * step];
    mx = (v > mx || v != v) ? v : mx;  // a NaN term makes the state NaN
  }
  T sum = 0;
  if (mx != -INFINITY) {
    for (int k = 0; k < count; ++k) sum += fast_exp(scale * x[k * step] - mx);
  }
  m = mx;
  s = sum;
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
// dr = cos_ij - a_pos_i and dc = cos_ij - b_pos_j: g_row e^(s dr - row_lse) + g_col e^(s dc - col_lse).
// scale_term receives the pair's share of grad_scale, g_row P dr + g_col Q dc (a small probability
// times a cosine difference: the cancellation-free form).
template <typename T>
GAPOPS_HD T pair_grad_weight(T s, T dr, T dc, T row_lse, T col_lse, T g_row, T g_col,
                             T& scale_term) {
  const T gp = g_row * fast_exp(s * dr - row_lse);
  const T gq = g_col * fast_exp(s * dc - col_lse);
  scale_term = gp * dr + gq * dc;
  return gp + gq;
}

// v1 form (absolute statistics), kept only while csrc/cuda/strip_kernels.cuh still calls it:
// G_ij for one logit L_ij = s a_i.b_j. The positive's g - (g_row + g_col) cancels; v2 uses
// positive_grad_weight and pair_grad_weight instead.
template <typename T>
GAPOPS_HD T grad_weight(T logit, T row_lse, T col_lse, T g_row, T g_col, bool positive) {
  T g = g_row * fast_exp(logit - row_lse) + g_col * fast_exp(logit - col_lse);
  return positive ? g - (g_row + g_col) : g;
}

}  // namespace gapops
