// The chunking and grid sizes of the CUDA strip launchers (csrc/cuda/strip.cu), as plain host
// functions of the shapes and a few device facts, so that the host emulation (tests/cuda_emu)
// runs the very same plan with its own small numbers. Design: docs/cuda.md.
//
// Every number here is a function of the shapes, the dtypes and fixed device facts (resident
// blocks, total memory), never of the free memory: the plan fixes the order of every sum, so the
// same inputs give the same bits on every call.
#pragma once

#include <algorithm>
#include <cstdint>

namespace gapops {
namespace cuda {

// The epilogue kernels' geometry (csrc/cuda/epilogue_common.cuh uses the same constants): a block
// of 8 warps owns kRowsPerBlock rows of the chunk, each warp kRowsPerWarp of them, and sweeps
// column tiles of 32 lanes x one 16-byte pack of the accumulation dtype (128 fp32 columns, 64 fp64).
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerWarp = 16;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;  // 128

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

struct DeviceFacts {
  int64_t resident_blocks;  // epilogue blocks resident at once: SMs x blocks per SM
  int64_t scratch_bytes;    // fixed budget for the chunk's strip buffers
};

// The scratch budget: 1/16 of the device's memory, clamped to [256 MiB, 4 GiB]. 4 GiB holds the
// fp32 strip of N = 32768 rows against 32768 columns in one chunk, and 2048 rows at m = 2^19
// (+ bf16 H), so the products' K (the chunk rows, for grad_b += H^T A_rows) stays large.
inline int64_t default_scratch_bytes(int64_t total_device_bytes) {
  const int64_t lo = int64_t(256) << 20, hi = int64_t(4) << 30;
  return std::min(hi, std::max(lo, total_device_bytes / 16));
}

// One strip pass (forward, backward or sigmoid), chunk_rows rows at a time: the chunk's product
// S = A_rows B^T goes to an fp32 (fp64) buffer [chunk_rows, ld_s]; the epilogue kernels run on a
// grid of row_blocks(rows) x col_groups blocks, block (x, y) owning rows [128 x, 128 x + 128) of
// the chunk and column tiles y, y + C, ...; 16-bit gradient weights H go to their own buffer
// [chunk_rows, ld_h] (fp32 / fp64 H overwrite S in place).
struct StripPlan {
  int64_t chunk_rows;  // rows per chunk: a multiple of 128 when at least 128, at most n
  int64_t chunks;      // ceil(n / chunk_rows)
  int64_t ld_s;        // leading dimension of S: m rounded up to a 16-byte pack
  int64_t ld_h;        // leading dimension of a separate 16-bit H (0: none)
  int64_t col_tiles;   // ceil(m / tile width)
  int64_t col_groups;  // C
};

// Rows of the chunk -> row blocks of the epilogue grid.
inline int64_t row_blocks(int64_t rows) { return ceil_div(rows, kRowsPerBlock); }

// acc_bytes: 4 or 8 (the strip dtype); h_bytes: 2 for a separate 16-bit H, 0 when H is written
// over S (or not written at all).
inline StripPlan strip_plan(int64_t n, int64_t m, int64_t acc_bytes, int64_t h_bytes,
                            const DeviceFacts& f) {
  const int64_t pack = 16 / acc_bytes;
  const int64_t ld_s = round_up(m, pack);
  const int64_t ld_h = h_bytes != 0 ? round_up(m, 16 / h_bytes) : 0;
  const int64_t col_tiles = ceil_div(m, 32 * pack);
  // per chunk row: its S row, its H row, its share of the column partial states (two values per
  // column per row block) and of the row partial states (two values per column group, bounded
  // by the column tiles)
  const int64_t per_row = ld_s * acc_bytes + ld_h * h_bytes +
                          ceil_div(2 * m * acc_bytes, kRowsPerBlock) + 2 * col_tiles * acc_bytes;
  int64_t rows = std::max<int64_t>(1, f.scratch_bytes / per_row);
  if (rows >= kRowsPerBlock) rows = rows / kRowsPerBlock * kRowsPerBlock;
  rows = std::min(n, rows);
  // about two waves of blocks per chunk, never more groups than column tiles
  const int64_t groups = std::min(ceil_div(2 * f.resident_blocks, row_blocks(rows)), col_tiles);
  return {rows, ceil_div(n, rows), ld_s, ld_h, col_tiles, std::max<int64_t>(1, groups)};
}

}  // namespace cuda
}  // namespace gapops
