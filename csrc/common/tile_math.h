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

// G_ij of DESIGN.md section 1, for one logit L_ij = s a_i.b_j of the strip.
template <typename T>
GAPOPS_HD T grad_weight(T logit, T row_lse, T col_lse, T g_row, T g_col, bool positive) {
  T g = g_row * fast_exp(logit - row_lse) + g_col * fast_exp(logit - col_lse);
  return positive ? g - (g_row + g_col) : g;
}

// Backward of a_hat = a / max(||a||, eps) for one row: da = (dhat - a_hat (a_hat.dhat)) / max(||a||, eps).
template <typename T>
GAPOPS_HD void normalize_backward_row(const T* a_hat, const T* d_hat, T norm, int64_t d, T eps,
                                      T* da) {
  T dot = 0;
  for (int64_t k = 0; k < d; ++k) dot += a_hat[k] * d_hat[k];
  const T inv = T(1) / (norm > eps ? norm : eps);
  for (int64_t k = 0; k < d; ++k) da[k] = (d_hat[k] - a_hat[k] * dot) * inv;
}

}  // namespace gapops
