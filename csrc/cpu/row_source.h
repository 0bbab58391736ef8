// Where the CPU strip reads its rows from: row i is main[i], or alt[i] where swap[i] (the swap
// routing of docs/design.md section 2.1), in the input dtype and with the input's strides.
//
// A block of rows is handed to BLAS either as a view into the input (zero copy: accumulation
// dtype, no swap mask, unit inner stride) or gathered into a caller's buffer in the accumulation
// dtype (fp16 / bf16 rows are widened exactly, so the products stay those of the input values).
// Nothing of size [N, d] is ever made: gathers fill one block-sized buffer per thread.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace gapops {

// dst[k] = float(src[k * step]) for k < d, from one row of any supported source type.
template <typename S, typename T>
inline void widen_row(const S* src, int64_t step, int64_t d, T* dst) {
  if (std::is_same<S, T>::value && step == 1) {
    std::memcpy(dst, src, d * sizeof(T));
    return;
  }
  for (int64_t k = 0; k < d; ++k) dst[k] = static_cast<T>(src[k * step]);
}

#if defined(__AVX2__) && defined(__F16C__)
template <>
inline void widen_row<c10::Half, float>(const c10::Half* src, int64_t step, int64_t d, float* dst) {
  int64_t k = 0;
  if (step == 1) {
    for (; k + 8 <= d; k += 8)
      _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
  }
  for (; k < d; ++k) dst[k] = static_cast<float>(src[k * step]);
}
#endif

#if defined(__AVX2__)
template <>
inline void widen_row<c10::BFloat16, float>(const c10::BFloat16* src, int64_t step, int64_t d,
                                            float* dst) {
  int64_t k = 0;
  if (step == 1) {  // a bf16 is the top half of a float
    for (; k + 8 <= d; k += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k)));
      _mm256_storeu_ps(dst + k, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
  }
  for (; k < d; ++k) dst[k] = static_cast<float>(src[k * step]);
}
#endif

// Rows of one side of the strip (A or B), read as T (the accumulation dtype: float or double).
template <typename T>
class RowSource {
 public:
  // main, alt: [rows, d], same dtype; swap: bool [rows] or none (then alt is never read).
  RowSource(const at::Tensor& main, const at::Tensor& alt, const c10::optional<at::Tensor>& swap)
      : main_(main), alt_(alt), d_(main.size(1)), dtype_(main.scalar_type()) {
    if (swap.has_value()) {
      swap_tensor_ = swap->to(at::kBool).contiguous();
      swap_ = swap_tensor_.data_ptr<bool>();
    }
    zero_copy_ = swap_ == nullptr && dtype_ == c10::CppTypeToScalarType<T>::value &&
                 (main.stride(1) == 1 || main.size(1) == 1) && main.stride(0) >= main.size(1);
  }

  int64_t dim() const { return d_; }

  // True when blocks are views into the input (no buffer needed).
  bool zero_copy() const { return zero_copy_; }

  // Rows [i0, i0 + rows) as a row-major T matrix with row stride *ld: a view into the input when
  // zero_copy(), else gathered into buf (rows * dim() elements, ld = dim()).
  const T* block(int64_t i0, int64_t rows, T* buf, int64_t* ld) const {
    if (zero_copy_) {
      *ld = main_.stride(0);
      return main_.data_ptr<T>() + i0 * main_.stride(0);
    }
    *ld = d_;
    switch (dtype_) {
      case at::kHalf: gather<c10::Half>(i0, rows, buf); break;
      case at::kBFloat16: gather<c10::BFloat16>(i0, rows, buf); break;
      case at::kFloat: gather<float>(i0, rows, buf); break;
      case at::kDouble: gather<double>(i0, rows, buf); break;
      default: TORCH_CHECK(false, "strip: unsupported dtype ", dtype_);
    }
    return buf;
  }

 private:
  template <typename S>
  void gather(int64_t i0, int64_t rows, T* buf) const {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      const at::Tensor& src = (swap_ != nullptr && swap_[i]) ? alt_ : main_;
      const S* row = static_cast<const S*>(src.const_data_ptr()) + i * src.stride(0);
      widen_row<S, T>(row, src.stride(1), d_, buf + r * d_);
    }
  }

  const at::Tensor& main_;
  const at::Tensor& alt_;
  at::Tensor swap_tensor_;
  const bool* swap_ = nullptr;
  int64_t d_;
  at::ScalarType dtype_;
  bool zero_copy_ = false;
};

}  // namespace gapops
