// The three BLAS products of the CPU strip on row-major tiles given by raw pointers. They go
// through at::mm_out / addmm_ on non-owning tensor views (ATen's CPU BLAS entry points are not
// exported to extensions); with contiguous or transposed views ATen calls sgemm / dgemm of its
// BLAS directly, without copies, and inside the strip's parallel region MKL runs single-threaded.
// The views cost a few microseconds per call against milliseconds per product.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace gapops {

template <typename T>
inline at::Tensor matrix_view(const T* data, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<T*>(data), {rows, cols}, {ld, 1},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// D [rows, cols] (row stride cols) = A [rows, d] . B [cols, d]^T: the raw dots of a tile.
template <typename T>
inline void tile_dots(const T* A, int64_t lda, const T* B, int64_t ldb, int64_t rows,
                      int64_t cols, int64_t d, T* D) {
  at::Tensor out = matrix_view(D, rows, cols, cols);
  at::mm_out(out, matrix_view(A, rows, d, lda), matrix_view(B, cols, d, ldb).t());
}

// dA [rows, d] (row stride d) (+)= H [rows, cols] . B [cols, d]; overwrites when !accumulate.
template <typename T>
inline void tile_grad_rows(const T* H, const T* B, int64_t ldb, int64_t rows, int64_t cols,
                           int64_t d, bool accumulate, T* dA) {
  at::Tensor out = matrix_view(dA, rows, d, d);
  const at::Tensor h = matrix_view(H, rows, cols, cols), b = matrix_view(B, cols, d, ldb);
  if (accumulate) {
    out.addmm_(h, b);
  } else {
    at::mm_out(out, h, b);
  }
}

// dB [cols, d] (row stride d) (+)= H [rows, cols]^T . A [rows, d]; overwrites when !accumulate.
template <typename T>
inline void tile_grad_cols(const T* H, const T* A, int64_t lda, int64_t rows, int64_t cols,
                           int64_t d, bool accumulate, T* dB) {
  at::Tensor out = matrix_view(dB, cols, d, d);
  const at::Tensor ht = matrix_view(H, rows, cols, cols).t(), a = matrix_view(A, rows, d, lda);
  if (accumulate) {
    out.addmm_(ht, a);
  } else {
    at::mm_out(out, ht, a);
  }
}

}  // namespace gapops
