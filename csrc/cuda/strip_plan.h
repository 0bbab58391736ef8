// Grid sizes and G-strip chunking of the CUDA strip launchers (csrc/cuda/strip.cu), as plain host
// functions of a few device facts, so that the host emulation (tests/cuda_emu) runs the very same
// plan with its own small numbers. Design: docs/cuda.md.
//
// Every number here is a function of the shapes, the dtypes and fixed device facts (SM count,
// occupancy, total memory), never of the free memory: the plan fixes the order of every sum, so
// the same inputs give the same bits on every call.
#pragma once

#include <algorithm>
#include <cstdint>

namespace gapops {
namespace cuda {

constexpr int64_t kPlanTile = 64;  // rows (and columns) of a logits tile; equals kTileM / kTileN

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct DeviceFacts {
  int64_t resident_blocks;  // strip-kernel blocks resident at once: SMs x blocks per SM
  int64_t scratch_bytes;    // fixed budget for the forward's column partials and the G strip
};

// The scratch budget: 1/16 of the device's memory, clamped to [256 MiB, 4 GiB]. 4 GiB of bf16 G
// strip is 2048 rows at m = 2^20 columns, enough for the two cuBLAS products per chunk to run at
// full rate (K = 2048 for grad_b += H^T A_rows).
inline int64_t default_scratch_bytes(int64_t total_device_bytes) {
  const int64_t lo = int64_t(256) << 20, hi = int64_t(4) << 30;
  return std::min(hi, std::max(lo, total_device_bytes / 16));
}

// Forward: R blocks, block r owning the 64-row blocks r, r + R, ... and sweeping every column tile
// for each; its column partial states are row r of two [R, m] buffers. R is capped by the row
// blocks, by what is resident at once (one wave) and by the budget for the 2 R m partials.
inline int64_t forward_blocks(int64_t n, int64_t m, int64_t acc_bytes, const DeviceFacts& f) {
  const int64_t by_memory = f.scratch_bytes / (2 * m * acc_bytes);
  const int64_t r = std::min({ceil_div(n, kPlanTile), f.resident_blocks, by_memory});
  return std::max<int64_t>(1, r);
}

// Backward (the G strip): the n rows are processed chunk_rows at a time. For each chunk one kernel
// writes H = s rho G sigma [chunk_rows, m] in the input dtype (the scratch) from a grid of
// (64-row blocks) x col_groups blocks, block (r, c) sweeping column tiles c, c + C, ...; then
// cuBLAS multiplies. row_partials: grad_a is accumulated in-kernel instead (column-routed strips),
// one fp32 / fp64 [chunk_rows, d] partial per column group, merged in group order.
struct BackwardPlan {
  int64_t chunk_rows;  // rows per chunk: a multiple of 64, or n
  int64_t chunks;      // ceil(n / chunk_rows)
  int64_t row_blocks;  // 64-row blocks of a full chunk
  int64_t col_groups;  // C
};

inline BackwardPlan backward_plan(int64_t n, int64_t m, int64_t d, int64_t h_bytes,
                                  int64_t acc_bytes, bool row_partials, const DeviceFacts& f) {
  int64_t rows = f.scratch_bytes / (m * h_bytes) / kPlanTile * kPlanTile;
  rows = std::min(n, std::max(kPlanTile, rows));
  const int64_t row_blocks = ceil_div(rows, kPlanTile);
  // about two waves of blocks per chunk, and never more groups than column tiles
  int64_t groups = std::min(ceil_div(2 * f.resident_blocks, row_blocks), ceil_div(m, kPlanTile));
  if (row_partials) {  // the [C, chunk_rows, d] partials get a quarter of the budget
    groups = std::min(groups, f.scratch_bytes / 4 / (rows * d * acc_bytes));
  }
  return {rows, ceil_div(n, rows), row_blocks, std::max<int64_t>(1, groups)};
}

}  // namespace cuda
}  // namespace gapops
