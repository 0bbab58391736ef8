// A tiny host emulation of the CUDA execution model, enough to run csrc/cuda/strip_kernels.cuh
// on the CPU for testing (tests/test_cuda_emulated.py): one std::thread per CUDA thread, blocks
// one after another, __syncthreads as a std::barrier over the block, __shared__ as function
// statics (shared by the threads of the running block), warp shuffles through a block-wide
// exchange (the kernels call them uniformly in every thread). The kernels use no atomics.
// It checks indexing, masking, 16-byte packing, synchronization structure and the math (16-bit
// rounding included, see cuda_fp16.h, cuda_bf16.h); not timing, not races that a
// barrier-per-step schedule hides.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace emu {
inline dim3 grid_dim, block_dim, block_idx;
inline thread_local dim3 thread_idx;
inline std::barrier<>* block_barrier = nullptr;
inline double shfl_slots[1024];

inline unsigned lane() { return thread_idx.x % 32; }
inline void check_warp_uniform() {}

// Runs kernel() for every thread of a grid of grid.x x grid.y blocks of `block` threads, one
// block after another.
inline void launch(dim3 grid, unsigned block, const std::function<void()>& kernel) {
  grid_dim = grid;
  block_dim = dim3{block, 1, 1};
  for (unsigned b = 0; b < grid.x * grid.y; ++b) {
    block_idx = dim3{b % grid.x, b / grid.x, 1};
    std::barrier<> bar(static_cast<std::ptrdiff_t>(block));
    block_barrier = &bar;
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([t, &kernel] {
        thread_idx = dim3{t, 1, 1};
        kernel();
      });
    for (auto& th : threads) th.join();
    block_barrier = nullptr;
  }
}
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
[[noreturn]] inline void __trap() {
  std::fprintf(stderr, "__trap()\n");
  std::abort();
}

template <typename V>
V __shfl_xor_sync(unsigned /*mask*/, V v, int lane_mask) {
  const unsigned t = threadIdx.x;
  emu::shfl_slots[t] = static_cast<double>(v);
  __syncthreads();
  const V other = static_cast<V>(emu::shfl_slots[t ^ static_cast<unsigned>(lane_mask)]);
  __syncthreads();
  return other;
}
