// The fused elementwise loop of the CPU sigmoid strip (docs/design.md section 2.6) over one row
// of a tile of raw dots D_ij = A_i.B_j, for columns j in [lo, hi) that are not the row's positive
// (label -1; the epilogue in sigmoid_epilogue.cpp calls it on both sides of the positive and does
// that one pair with sigmoid_pair of tile_math.h). Per pair: cos = rho sigma_j D_ij,
// z = s cos + bias, the loss term softplus(z), G = w sigmoid(z) and, in place of the dot,
// H = s rho sigma_j G. One exponential e = e^-|z| serves the softplus and the sigmoid.
//
// kLoss: add the loss terms; kGrad: write H and add sum G and sum G cos. A float overload on
// simd::Vec (AVX-512 / AVX2) where the build has one, the scalar loop for its tail and for double.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../common/tile_math.h"
#include "simd.h"

namespace gapops {

// What one row segment adds up.
template <typename T>
struct SigmoidSums {
  T loss = 0;   // sum of softplus(-l z)
  T g = 0;      // sum of G (grad_bias)
  T g_cos = 0;  // sum of G cos (grad_scale)
};

template <bool kLoss, bool kGrad, typename T>
inline void sigmoid_terms(T* c, const T* sigma, int64_t lo, int64_t hi, T rho, T s, T bias, T w,
                          SigmoidSums<T>& out) {
  int64_t j = lo;
#if GAPOPS_SIMD_WIDTH > 0
  if constexpr (std::is_same<T, float>::value) {
    using V = simd::Vec;
    const V::R vrho = V::set1(rho), vs = V::set1(s), vb = V::set1(bias), vw = V::set1(w);
    const V::R vh = V::set1(s * rho), one = V::set1(1.0f);
    V::R loss = V::zero(), g = V::zero(), g_cos = V::zero();
    for (; j + V::kWidth <= hi; j += V::kWidth) {
      const V::R sig = V::load(sigma + j);
      const V::R cs = V::mul(V::mul(vrho, sig), V::load(c + j));
      const V::R z = V::add(V::mul(vs, cs), vb);
      const V::R e = V::exp(V::neg_abs(z));
      // max(z, 0) drops a NaN z, but e and so log1p(e) carry it
      if (kLoss) loss = V::add(loss, V::add(V::max(z, V::zero()), simd::log1p_unit(e)));
      if (kGrad) {
        const V::R r = V::div(one, V::add(one, e));
        const V::R gw = V::mul(vw, V::select_nonneg(z, r, V::mul(e, r)));
        g = V::add(g, gw);
        g_cos = V::fmadd(gw, cs, g_cos);
        V::store(c + j, V::mul(V::mul(vh, sig), gw));
      }
    }
    if (kLoss) out.loss += V::hsum(loss);
    if (kGrad) {
      out.g += V::hsum(g);
      out.g_cos += V::hsum(g_cos);
    }
  }
#endif
  const T h = s * rho;
  for (; j < hi; ++j) {
    const T cs = rho * sigma[j] * c[j];
    T gw;
    const T term = sigmoid_pair(s * cs + bias, false, w, gw);
    if (kLoss) out.loss += term;
    if (kGrad) {
      out.g += gw;
      out.g_cos += gw * cs;
      c[j] = h * sigma[j] * gw;
    }
  }
}

}  // namespace gapops
