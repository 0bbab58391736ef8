// The CUDA strip ops run on the host: csrc/cuda/strip_kernels.cuh (the very kernel source nvcc
// compiles) under the thread-per-CUDA-thread emulation of fake_include/, driven by a mirror of the
// launchers of csrc/cuda/strip.cu that uses the same plan (csrc/cuda/strip_plan.h) and plain
// loops with fp32 (fp64) accumulation where strip.cu calls cuBLAS. Built as a shared library and
// called through ctypes by tests/test_cuda_emulated.py, which compares it with
// gapops.reference on the same inputs as tests/test_strip.py.
//   g++ -std=c++20 -O1 -pthread -shared -fPIC -Ifake_include emu_strip.cpp -o emu_strip.so
#include "emu_runtime.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../../csrc/cuda/strip_kernels.cuh"
#include "../../csrc/cuda/strip_plan.h"

using namespace gapops::cuda;
using namespace gapops::cuda::kernels;

extern "C" {
// One side of the strip as Python passes it (strides in elements; swap may be null).
struct EmuSide {
  const void* main;
  int64_t main_s0, main_s1;
  const void* alt;
  int64_t alt_s0, alt_s1;
  const bool* swap;
};
// The device facts the plan is made from, and a switch for the negative control of the 16-bit
// power-of-two scaling of H (h_scale = 0 stores H unscaled).
struct EmuPlan {
  int64_t resident_blocks, scratch_bytes;
  int32_t h_scale;
};
}

namespace {

template <typename T>
RowSource<T> source(const EmuSide& s) {
  return {static_cast<const T*>(s.main), static_cast<const T*>(s.alt), s.swap,
          s.main_s0, s.main_s1, s.alt_s0, s.alt_s1};
}

unsigned u(int64_t v) { return static_cast<unsigned>(v); }

template <typename T, typename Acc, bool kMma>
void forward(int64_t n, int64_t m, int64_t d, const EmuSide& a, const EmuSide& b, const Acc* a_inv,
             const Acc* b_inv, const Acc* a_pos, const Acc* b_pos, const Acc* scale, int64_t offset,
             const EmuPlan& plan, Acc* row_lse, Acc* col_lse) {
  const int64_t R = forward_blocks(n, m, sizeof(Acc), {plan.resident_blocks, plan.scratch_bytes});
  std::vector<Acc> cmax(R * m, Acc(0)), csum(R * m, Acc(0));
  emu::launch(dim3{u(R)}, kThreads, [&] {
    strip_forward_kernel<T, Acc, kMma>(source<T>(a), source<T>(b), n, m, d, a_inv, b_inv, a_pos,
                                       b_pos, scale, offset, row_lse, cmax.data(), csum.data());
  });
  emu::launch(dim3{u(ceil_div(m, 256))}, 256, [&] {
    col_lse_merge_kernel<Acc>(cmax.data(), csum.data(), R, n, m, offset, col_lse);
  });
}

template <typename T, typename Acc, bool kMma>
void backward(int64_t n, int64_t m, int64_t d, const EmuSide& a, const EmuSide& b, const Acc* a_inv,
              const Acc* b_inv, const Acc* a_pos, const Acc* b_pos, const Acc* scale,
              int64_t offset, const Acc* row_lse, const Acc* col_lse, const Acc* g_row,
              const Acc* g_col, const EmuPlan& ep, Acc* grad_a, Acc* grad_b, Acc* grad_scale) {
  const bool half = sizeof(T) == 2, col_routed = b.swap != nullptr;
  const BackwardPlan plan = backward_plan(n, m, d, sizeof(T), sizeof(Acc), col_routed,
                                          {ep.resident_blocks, ep.scratch_bytes});
  std::vector<T> H(plan.chunk_rows * m);
  std::vector<Acc> parts(col_routed ? plan.col_groups * plan.chunk_rows * d : 0);
  const int64_t blocks_per_chunk = plan.row_blocks * plan.col_groups;
  std::vector<double> ds_part(plan.chunks * blocks_per_chunk, 0.0);
  Acc h_scale[2] = {Acc(1), Acc(1)};
  const bool scaled = half && ep.h_scale != 0;
  if (scaled) {
    emu::launch(dim3{1}, 256, [&] {
      h_scale_kernel<Acc>(a_inv, n, b_inv, m, g_row, g_col, scale, 16384.0f, h_scale);
    });
  }
  const RowSource<T> A = source<T>(a), B = source<T>(b);
  std::fill(grad_b, grad_b + m * d, Acc(0));
  std::vector<Acc> b_chunk(m * d);
  for (int64_t c = 0; c < plan.chunks; ++c) {
    const int64_t r0 = c * plan.chunk_rows, rows = std::min(plan.chunk_rows, n - r0);
    Acc* ga = grad_a + r0 * d;
    std::fill(parts.begin(), parts.end(), Acc(0));
    emu::launch(dim3{u(ceil_div(rows, BM)), u(plan.col_groups)}, kThreads, [&] {
      g_strip_kernel<T, Acc, kMma>(A, B, r0, rows, m, d, a_inv, b_inv, a_pos, b_pos, scale,
                                   offset, row_lse, col_lse, g_row, g_col,
                                   scaled ? h_scale : nullptr, H.data(),
                                   col_routed ? parts.data() : nullptr,
                                   ds_part.data() + c * blocks_per_chunk);
    });
    if (col_routed) {
      emu::launch(dim3{u(ceil_div(rows * d, 256))}, 256, [&] {
        row_partials_sum_kernel<Acc>(parts.data(), plan.col_groups, rows, d, ga);
      });
    } else {  // cuBLAS in strip.cu: grad_a rows = H B (fp32 accumulation), scaled back
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < d; ++k) {
          Acc acc = 0;
          for (int64_t j = 0; j < m; ++j)
            acc += stage_cast<Acc>(H[r * m + j]) * stage_cast<Acc>(B.at(j, k));
          ga[r * d + k] = acc * h_scale[1];
        }
    }
    // grad_b += H^T A_rows (the routed rows of the chunk)
    for (int64_t j = 0; j < m; ++j)
      for (int64_t k = 0; k < d; ++k) {
        Acc acc = 0;
        for (int64_t r = 0; r < rows; ++r)
          acc += stage_cast<Acc>(H[r * m + j]) * stage_cast<Acc>(A.at(r0 + r, k));
        b_chunk[j * d + k] = acc;
      }
    for (int64_t q = 0; q < m * d; ++q) grad_b[q] += b_chunk[q];
  }
  for (int64_t q = 0; q < m * d; ++q) grad_b[q] *= h_scale[1];
  emu::launch(dim3{1}, 32, [&] {
    ds_sum_kernel<Acc>(ds_part.data(), static_cast<int64_t>(ds_part.size()), grad_scale);
  });
}

// Calls f(T{}, Acc{}, std::integral_constant<bool, kMma>{}) like strip.cu's dispatch_variant.
// dtype: 0 float64, 1 float32, 2 float16, 3 bfloat16; mma selects TF32 tensor cores for float32.
template <typename F>
int dispatch(int dtype, int mma, const F& f) {
  switch (dtype) {
    case 0: f(double{}, double{}, std::false_type{}); return 0;
    case 1:
      if (mma) f(float{}, float{}, std::true_type{});
      else f(float{}, float{}, std::false_type{});
      return 0;
    case 2: f(__half{}, float{}, std::true_type{}); return 0;
    case 3: f(__nv_bfloat16{}, float{}, std::true_type{}); return 0;
    default: return -1;
  }
}

}  // namespace

extern "C" {

// Per-row vectors, scale and outputs are contiguous arrays of the accumulation type (double for
// dtype 0, else float).
int emu_strip_forward(int dtype, int mma, int64_t n, int64_t m, int64_t d, const EmuSide* a,
                      const EmuSide* b, const void* a_inv, const void* b_inv, const void* a_pos,
                      const void* b_pos, const void* scale, int64_t offset, const EmuPlan* plan,
                      void* row_lse, void* col_lse) {
  return dispatch(dtype, mma, [&](auto t, auto acc_v, auto k) {
    using T = decltype(t);
    using Acc = decltype(acc_v);
    auto p = [](const void* v) { return static_cast<const Acc*>(v); };
    forward<T, Acc, decltype(k)::value>(n, m, d, *a, *b, p(a_inv), p(b_inv), p(a_pos), p(b_pos),
                                        p(scale), offset, *plan, static_cast<Acc*>(row_lse),
                                        static_cast<Acc*>(col_lse));
  });
}

int emu_strip_backward(int dtype, int mma, int64_t n, int64_t m, int64_t d, const EmuSide* a,
                       const EmuSide* b, const void* a_inv, const void* b_inv, const void* a_pos,
                       const void* b_pos, const void* scale, int64_t offset, const void* row_lse,
                       const void* col_lse, const void* g_row, const void* g_col,
                       const EmuPlan* plan, void* grad_a, void* grad_b, void* grad_scale) {
  return dispatch(dtype, mma, [&](auto t, auto acc_v, auto k) {
    using T = decltype(t);
    using Acc = decltype(acc_v);
    auto p = [](const void* v) { return static_cast<const Acc*>(v); };
    backward<T, Acc, decltype(k)::value>(n, m, d, *a, *b, p(a_inv), p(b_inv), p(a_pos), p(b_pos),
                                         p(scale), offset, p(row_lse), p(col_lse), p(g_row),
                                         p(g_col), *plan, static_cast<Acc*>(grad_a),
                                         static_cast<Acc*>(grad_b), static_cast<Acc*>(grad_scale));
  });
}

// The fake headers' roundings, for tests/test_cuda_emulated.py to compare with torch's:
// kind 0: float -> fp16 bits, 1: float -> bf16 bits, 2: float -> TF32 (as float).
void emu_round(int kind, const float* in, void* out, int64_t count) {
  for (int64_t q = 0; q < count; ++q) {
    if (kind == 0) static_cast<__half*>(out)[q] = __float2half_rn(in[q]);
    if (kind == 1) static_cast<__nv_bfloat16*>(out)[q] = __float2bfloat16_rn(in[q]);
    if (kind == 2) static_cast<float*>(out)[q] = nvcuda::wmma::__float_to_tf32(in[q]);
  }
}

}  // extern "C"
