// The CPU strips' view of their common arguments (docs/design.md sections 2.1 and 2.6: routed
// rows and columns, inverse norms, scale, positives' offset) and the tile geometry, shared by
// the softmax strip (strip_forward.cpp, strip_backward.cpp) and the sigmoid strip
// (sigmoid_strip.cpp) through the tile passes of tile_passes.h.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "row_source.h"

namespace gapops {

// Tiles of kRows x kCols logits. A tile is one BLAS product of a kRows-row block of A against a
// kCols-row tile of B, into a per-thread buffer (512 KiB in fp32: it stays in L2 for the fused
// loops); kRows is also the K of the backward's dB product. Measurements: docs/cpu.md.
constexpr int64_t kRows = 256;
constexpr int64_t kCols = 512;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows (or columns) [start, start + size); block_range(k, block, total) is the k-th block of
// `block` of them out of `total` (the last one may be short).
struct Range {
  int64_t start, size;
};
inline Range block_range(int64_t index, int64_t block, int64_t total) {
  const int64_t start = index * block;
  return {start, std::min(block, total - start)};
}

// T: the accumulation dtype (float, or double for double features). The per-row vectors are
// contiguous T arrays owned by the tensors the op entry point keeps alive.
template <typename T>
struct StripInputs {
  RowSource<T> A, B;  // rows [n, d] and columns [m, d], routed
  const T* rho;       // a_inv_norm [n]
  const T* sigma;     // b_inv_norm [m]
  T s;                // scale
  int64_t n, m, d, offset;

  // Column of row i's positive inside the tile starting at column j0 with cols columns, or -1.
  int64_t positive_in_tile(int64_t i, int64_t j0, int64_t cols) const {
    const int64_t p = i + offset - j0;
    return (p >= 0 && p < cols) ? p : -1;
  }
  // Whether column j's positive row belongs to this strip.
  bool column_has_positive(int64_t j) const { return j >= offset && j < offset + n; }
};

// The per-thread buffers of one worker: gathered A block and B tile (only when the sources are
// not zero-copy) and the tile of dots. Allocated once per worker and pass (64-byte aligned).
template <typename T>
struct TileBuffers {
  at::Tensor a_storage, b_storage, tile_storage;
  T* a = nullptr;
  T* b = nullptr;
  T* tile = nullptr;

  TileBuffers(const StripInputs<T>& in, int64_t rows, int64_t cols) {
    const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    if (!in.A.zero_copy()) {
      a_storage = at::empty({rows * in.d}, opts);
      a = a_storage.data_ptr<T>();
    }
    if (!in.B.zero_copy()) {
      b_storage = at::empty({cols * in.d}, opts);
      b = b_storage.data_ptr<T>();
    }
    tile_storage = at::empty({rows * cols}, opts);
    tile = tile_storage.data_ptr<T>();
  }
};

}  // namespace gapops
