// Float vectors for the CPU strip's fused loops: the widest the build allows (AVX-512, else
// AVX2 + FMA), behind one small interface so that tile_loops.h writes each loop once.
// GAPOPS_SIMD_WIDTH is 16, 8, or 0 when the build has neither (scalar loops only).
#pragma once

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace gapops {
namespace simd {

#if defined(__AVX512F__)
#define GAPOPS_SIMD_WIDTH 16
// The merge-masked forms with all 16 lanes selected (kAll) are the plain instructions; they are
// spelled so because GCC 12's plain forms pass _mm512_undefined_ps() through and trigger false
// -Wmaybe-uninitialized warnings.
constexpr __mmask16 kAll = 0xFFFF;
struct Vec {
  using R = __m512;
  static constexpr int kWidth = 16;
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  static R zero() { return _mm512_setzero_ps(); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }  // a b + c
  static R fmsub(R a, R b, R c) { return _mm512_fmsub_ps(a, b, c); }  // a b - c
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  // -|x| (the sign bit set; NaN stays NaN)
  static R neg_abs(R x) {
    return _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(x), _mm512_set1_epi32(int(0x80000000u))));
  }
  // x >= 0 ? a : b, b where x is NaN
  static R select_nonneg(R x, R a, R b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, zero(), _CMP_GE_OQ), b, a);
  }
  // max(a, b) with b returned where a is NaN (as x > m ? x : m with a = x, b = m)
  static R max(R a, R b) { return _mm512_mask_max_ps(a, kAll, a, b); }
  // min(x, 0), NaN kept (the second operand is returned when either is NaN): at_most_zero
  static R at_most_zero(R x) { return _mm512_mask_min_ps(x, kAll, zero(), x); }
  // Horizontal reductions through memory: once per row segment, so their cost does not matter,
  // and GCC 12's 512 -> 256 bit casts would warn as above.
  static float hsum(R v) {
    alignas(64) float t[16];
    _mm512_store_ps(t, v);
    float sum = 0;
    for (float x : t) sum += x;
    return sum;
  }
  static float hmax(R v) {
    alignas(64) float t[16];
    _mm512_store_ps(t, v);
    float m = t[0];
    for (float x : t) m = x > m ? x : m;
    return m;
  }

  // fast_exp of tile_math.h, 16 wide: same reduction and polynomial, 0 below -87.3, NaN stays.
  static R exp(R x) {
    const __mmask16 under = _mm512_cmp_ps_mask(x, set1(-87.3365447504019f), _CMP_LT_OQ);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    const R xc = max(_mm512_mask_min_ps(x, kAll, x, set1(88.3762626647949f)),
                     set1(-87.3365447504019f));
    const R k = _mm512_mask_roundscale_ps(xc, kAll, fmadd(xc, set1(1.44269504088896341f), set1(0.5f)),
                                          _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    R r = _mm512_fnmadd_ps(k, set1(0.693359375f), xc);
    r = _mm512_fnmadd_ps(k, set1(-2.12194440e-4f), r);
    R p = set1(1.9875691500e-4f);
    p = fmadd(p, r, set1(1.3981999507e-3f));
    p = fmadd(p, r, set1(8.3334519073e-3f));
    p = fmadd(p, r, set1(4.1665795894e-2f));
    p = fmadd(p, r, set1(1.6666665459e-1f));
    p = fmadd(p, r, set1(5.0000001201e-1f));
    p = fmadd(mul(p, r), r, add(r, set1(1.0f)));
    const __m512i zi = _mm512_setzero_si512();
    const __m512i e = _mm512_mask_slli_epi32(
        zi, kAll, _mm512_add_epi32(_mm512_mask_cvtps_epi32(zi, kAll, k), _mm512_set1_epi32(127)), 23);
    R y = mul(p, _mm512_castsi512_ps(e));
    y = _mm512_mask_blend_ps(under, y, zero());
    return _mm512_mask_blend_ps(nan, y, x);
  }
};
#elif defined(__AVX2__) && defined(__FMA__)
#define GAPOPS_SIMD_WIDTH 8
struct Vec {
  using R = __m256;
  static constexpr int kWidth = 8;
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static R zero() { return _mm256_setzero_ps(); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R fmsub(R a, R b, R c) { return _mm256_fmsub_ps(a, b, c); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R neg_abs(R x) { return _mm256_or_ps(x, set1(-0.0f)); }
  static R select_nonneg(R x, R a, R b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, zero(), _CMP_GE_OQ));
  }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R at_most_zero(R x) { return _mm256_min_ps(zero(), x); }
  static float hsum(R v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  static float hmax(R v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }

  // fast_exp of tile_math.h, 8 wide: same reduction and polynomial, 0 below -87.3, NaN stays.
  static R exp(R x) {
    const R under = _mm256_cmp_ps(x, set1(-87.3365447504019f), _CMP_LT_OQ);
    const R nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    const R xc = _mm256_max_ps(_mm256_min_ps(x, set1(88.3762626647949f)), set1(-87.3365447504019f));
    const R k = _mm256_floor_ps(fmadd(xc, set1(1.44269504088896341f), set1(0.5f)));
    R r = _mm256_fnmadd_ps(k, set1(0.693359375f), xc);
    r = _mm256_fnmadd_ps(k, set1(-2.12194440e-4f), r);
    R p = set1(1.9875691500e-4f);
    p = fmadd(p, r, set1(1.3981999507e-3f));
    p = fmadd(p, r, set1(8.3334519073e-3f));
    p = fmadd(p, r, set1(4.1665795894e-2f));
    p = fmadd(p, r, set1(1.6666665459e-1f));
    p = fmadd(p, r, set1(5.0000001201e-1f));
    p = fmadd(mul(p, r), r, add(r, set1(1.0f)));
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    R y = mul(p, _mm256_castsi256_ps(e));
    y = _mm256_blendv_ps(y, zero(), under);
    return _mm256_blendv_ps(y, x, nan);
  }
};
#else
#define GAPOPS_SIMD_WIDTH 0
#endif

#if GAPOPS_SIMD_WIDTH > 0
// log1p(x) for x in [0, 1] (NaN stays NaN), for the stable softplus of the sigmoid loss, where x
// = e^-|t| may be 1e-9 and log(1 + x) would lose it: log1p(x) = 2 atanh(u), u = x / (2 + x) in
// [0, 1/3], by its odd series 2u (1 + u^2/3 + ... + u^14/15). No cancellation anywhere; the first
// term left out is below 1.5e-9 of the value, so the error is that of the few roundings (a few
// ulp) at every x, including the tiny ones where the loss of a well-classified pair lives.
inline Vec::R log1p_unit(Vec::R x) {
  const Vec::R u = Vec::div(x, Vec::add(Vec::set1(2.0f), x));
  const Vec::R u2 = Vec::mul(u, u);
  Vec::R p = Vec::set1(1.0f / 15.0f);
  p = Vec::fmadd(p, u2, Vec::set1(1.0f / 13.0f));
  p = Vec::fmadd(p, u2, Vec::set1(1.0f / 11.0f));
  p = Vec::fmadd(p, u2, Vec::set1(1.0f / 9.0f));
  p = Vec::fmadd(p, u2, Vec::set1(1.0f / 7.0f));
  p = Vec::fmadd(p, u2, Vec::set1(1.0f / 5.0f));
  p = Vec::fmadd(p, u2, Vec::set1(1.0f / 3.0f));
  p = Vec::fmadd(p, u2, Vec::set1(1.0f));
  return Vec::mul(Vec::add(u, u), p);
}
#endif

}  // namespace simd
}  // namespace gapops
