// The three BLAS products of the CPU strip on row-major tiles, through ATen's CPU BLAS wrapper
// (MKL / OpenBLAS sgemm and dgemm; no tensors, no allocation, and run single-threaded inside the
// strip's parallel region).
#pragma once

#include <ATen/native/CPUBlas.h>

#include <cstdint>

namespace gapops {

// cpublas::gemm is column-major; a row-major X [r, c] with row stride ld is the column-major
// X^T with the same ld, so each row-major product C = P Q is issued as C^T = Q^T P^T.
using at::native::TransposeType;

// D [rows, cols] (row stride cols) = A [rows, d] . B [cols, d]^T: raw dots of a tile.
template <typename T>
inline void tile_dots(const T* A, int64_t lda, const T* B, int64_t ldb, int64_t rows,
                      int64_t cols, int64_t d, T* D) {
  at::native::cpublas::gemm(TransposeType::Transpose, TransposeType::NoTranspose, cols, rows, d,
                            T(1), B, ldb, A, lda, T(0), D, cols);
}

// dA [rows, d] (row stride d) (+)= H [rows, cols] . B [cols, d]; overwrites when !accumulate.
template <typename T>
inline void tile_grad_rows(const T* H, const T* B, int64_t ldb, int64_t rows, int64_t cols,
                           int64_t d, bool accumulate, T* dA) {
  at::native::cpublas::gemm(TransposeType::NoTranspose, TransposeType::NoTranspose, d, rows, cols,
                            T(1), B, ldb, H, cols, accumulate ? T(1) : T(0), dA, d);
}

// dB [cols, d] (row stride d) (+)= H [rows, cols]^T . A [rows, d]; overwrites when !accumulate.
template <typename T>
inline void tile_grad_cols(const T* H, const T* A, int64_t lda, int64_t rows, int64_t cols,
                           int64_t d, bool accumulate, T* dB) {
  at::native::cpublas::gemm(TransposeType::NoTranspose, TransposeType::Transpose, d, cols, rows,
                            T(1), A, lda, H, cols, accumulate ? T(1) : T(0), dB, d);
}

}  // namespace gapops
