// The CUDA strip ops run on the host: csrc/cuda/strip_kernels.cuh (the very epilogue source nvcc
// compiles) under the thread-per-CUDA-thread emulation of fake_include/, driven by a mirror of the
// launchers of csrc/cuda/strip.cu: the same plan (csrc/cuda/strip_plan.h), the same chunks, grids,
// buffers (leading dimensions, 16-bit H with its power of two, fp32 H written over S) and merge
// order, with plain loops accumulating in fp32 (fp64) where strip.cu calls cuBLAS. Built as a
// shared library and called through ctypes by tests/test_cuda_emulated.py, which compares it with
// gapops.reference on the strips of tests/helpers.py.
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

unsigned u(int64_t v) { return static_cast<unsigned>(v); }

// Row i of a side, routed (what strip.cu's gathers and views hand to cuBLAS).
template <typename T>
struct Rows {
  EmuSide s;
  T at(int64_t i, int64_t k) const {
    const bool alt = s.swap != nullptr && s.swap[i];
    const T* base = static_cast<const T*>(alt ? s.alt : s.main);
    return alt ? base[i * s.alt_s0 + k * s.alt_s1] : base[i * s.main_s0 + k * s.main_s1];
  }
};

template <typename Acc, typename T>
Acc val(T v) { return stage_cast<Acc>(v); }

// The chunk state strip.cu keeps: plan, S buffer, H buffer (16-bit) and the weight products.
template <typename T, typename Acc>
struct Driver {
  int64_t n, m, d;
  Rows<T> A, B;
  StripPlan plan;
  std::vector<Acc> S;
  std::vector<T> H16;
  bool half;

  Driver(int64_t n_, int64_t m_, int64_t d_, const EmuSide& a, const EmuSide& b, bool h16,
         const EmuPlan& ep)
      : n(n_), m(m_), d(d_), A{a}, B{b}, half(sizeof(T) == 2) {
    plan = strip_plan(n, m, sizeof(Acc), h16 ? 2 : 0, {ep.resident_blocks, ep.scratch_bytes});
    // NaN where cuBLAS would leave the padding columns untouched: the epilogues must not read them
    S.assign(plan.chunk_rows * plan.ld_s, Acc(NAN));
    if (h16) H16.resize(plan.chunk_rows * plan.ld_h);
  }
  dim3 grid(int64_t rows) const { return dim3{u(row_blocks(rows)), u(plan.col_groups)}; }

  // S[i][j] = A_{r0 + i} . B_j (cuBLAS: at::mm_out, fp32 output)
  void strip_product(int64_t r0, int64_t rows) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < m; ++j) {
        Acc acc = 0;
        for (int64_t k = 0; k < d; ++k) acc += val<Acc>(A.at(r0 + i, k)) * val<Acc>(B.at(j, k));
        S[i * plan.ld_s + j] = acc;
      }
  }
  Acc h_at(int64_t i, int64_t j) const {
    return half && !H16.empty() ? val<Acc>(H16[i * plan.ld_h + j]) : S[i * plan.ld_s + j];
  }
  T* h_ptr() { return H16.empty() ? reinterpret_cast<T*>(S.data()) : H16.data(); }
  int64_t ld_h() const { return H16.empty() ? plan.ld_s : plan.ld_h; }

  // grad_a[r0 + i] = (H B)_i * unscale; grad_b += H^T A_rows (unscaled at the end by the caller)
  void weight_products(int64_t r0, int64_t rows, Acc unscale, Acc* grad_a, Acc* grad_b) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t k = 0; k < d; ++k) {
        Acc acc = 0;
        for (int64_t j = 0; j < m; ++j) acc += h_at(i, j) * val<Acc>(B.at(j, k));
        grad_a[(r0 + i) * d + k] = acc * unscale;
      }
    for (int64_t j = 0; j < m; ++j)
      for (int64_t k = 0; k < d; ++k) {
        Acc acc = 0;
        for (int64_t i = 0; i < rows; ++i) acc += h_at(i, j) * val<Acc>(A.at(r0 + i, k));
        grad_b[j * d + k] += acc;
      }
  }
};

template <typename Acc>
std::vector<Acc> h_scale_of(bool on, const Acc* a_inv, int64_t n, const Acc* b_inv, int64_t m,
                            const Acc* g_row, const Acc* g_col, const Acc* scale) {
  std::vector<Acc> out{Acc(1), Acc(1)};
  if (on) {
    emu::launch(dim3{1}, kThreads, [&] {
      h_scale_kernel<Acc>(a_inv, n, b_inv, m, g_row, g_col, scale, 16384.0f, out.data());
    });
  }
  return out;
}

template <typename Acc>
void ordered_sum(const std::vector<double>& parts, Acc* out) {
  emu::launch(dim3{1}, 1, [&] {
    ordered_sum_kernel<Acc>(parts.data(), static_cast<int64_t>(parts.size()), out);
  });
}

template <typename T, typename Acc>
void forward(int64_t n, int64_t m, int64_t d, const EmuSide& a, const EmuSide& b, const Acc* a_inv,
             const Acc* b_inv, const Acc* a_pos, const Acc* b_pos, const Acc* scale, int64_t offset,
             const EmuPlan& ep, Acc* row_lse, Acc* col_lse) {
  Driver<T, Acc> x(n, m, d, a, b, false, ep);
  const int64_t cap = x.plan.chunk_rows, C = x.plan.col_groups;
  std::vector<Acc> col_pm(row_blocks(cap) * m), col_ps(col_pm.size());
  std::vector<Acc> row_pm(C * cap), row_ps(C * cap), run_m(m, Acc(0)), run_s(m, Acc(0));
  for (int64_t c = 0; c < x.plan.chunks; ++c) {
    const int64_t r0 = c * cap, rows = std::min(cap, n - r0);
    x.strip_product(r0, rows);
    emu::launch(x.grid(rows), kThreads, [&] {
      softmax_forward_epilogue<Acc>(x.S.data(), x.plan.ld_s, r0, rows, m, a_inv, b_inv, a_pos,
                                    b_pos, scale, offset, row_pm.data(), row_ps.data(), cap,
                                    col_pm.data(), col_ps.data());
    });
    emu::launch(dim3{u(ceil_div(rows, 256))}, 256, [&] {
      row_lse_kernel<Acc>(row_pm.data(), row_ps.data(), C, cap, rows, r0, row_lse);
    });
    emu::launch(dim3{u(ceil_div(m, 256))}, 256, [&] {
      col_merge_kernel<Acc>(col_pm.data(), col_ps.data(), row_blocks(rows), m, run_m.data(),
                            run_s.data());
    });
  }
  emu::launch(dim3{u(ceil_div(m, 256))}, 256, [&] {
    col_lse_kernel<Acc>(run_m.data(), run_s.data(), n, m, offset, col_lse);
  });
}

template <typename T, typename Acc>
void backward(int64_t n, int64_t m, int64_t d, const EmuSide& a, const EmuSide& b, const Acc* a_inv,
              const Acc* b_inv, const Acc* a_pos, const Acc* b_pos, const Acc* scale,
              int64_t offset, const Acc* row_lse, const Acc* col_lse, const Acc* g_row,
              const Acc* g_col, const EmuPlan& ep, Acc* grad_a, Acc* grad_b, Acc* grad_scale) {
  const bool half = sizeof(T) == 2;
  Driver<T, Acc> x(n, m, d, a, b, half, ep);
  const int64_t cap = x.plan.chunk_rows, slots = row_blocks(cap) * x.plan.col_groups;
  std::vector<double> ds_part(x.plan.chunks * slots, 0.0);
  const bool scaled = half && ep.h_scale != 0;
  const std::vector<Acc> h_scale = h_scale_of(scaled, a_inv, n, b_inv, m, g_row, g_col, scale);
  std::fill(grad_b, grad_b + m * d, Acc(0));
  for (int64_t c = 0; c < x.plan.chunks; ++c) {
    const int64_t r0 = c * cap, rows = std::min(cap, n - r0);
    x.strip_product(r0, rows);
    emu::launch(x.grid(rows), kThreads, [&] {
      softmax_backward_epilogue<T, Acc>(x.S.data(), x.plan.ld_s, r0, rows, m, a_inv, b_inv, a_pos,
                                        b_pos, scale, offset, row_lse, col_lse, g_row, g_col,
                                        scaled ? h_scale.data() : nullptr, x.h_ptr(), x.ld_h(),
                                        ds_part.data() + c * slots);
    });
    x.weight_products(r0, rows, h_scale[1], grad_a, grad_b);
  }
  for (int64_t q = 0; q < m * d; ++q) grad_b[q] *= h_scale[1];
  ordered_sum(ds_part, grad_scale);
}

template <typename T, typename Acc>
void sigmoid(int64_t n, int64_t m, int64_t d, const EmuSide& a, const EmuSide& b, const Acc* a_inv,
             const Acc* b_inv, const Acc* scale, const Acc* bias, int64_t offset, const Acc* g_row,
             bool want_loss, bool want_grads, const EmuPlan& ep, Acc* row_loss, Acc* grad_a,
             Acc* grad_b, Acc* grad_scale, Acc* grad_bias) {
  const bool half_h = sizeof(T) == 2 && want_grads;
  Driver<T, Acc> x(n, m, d, a, b, half_h, ep);
  const int64_t cap = x.plan.chunk_rows, C = x.plan.col_groups, slots = row_blocks(cap) * C;
  std::vector<Acc> row_part(C * cap);
  std::vector<double> ds_part(x.plan.chunks * slots, 0.0), db_part(ds_part.size(), 0.0);
  const bool scaled = half_h && ep.h_scale != 0;
  const std::vector<Acc> h_scale = h_scale_of<Acc>(scaled, a_inv, n, b_inv, m, g_row, nullptr, scale);
  if (want_grads) std::fill(grad_b, grad_b + m * d, Acc(0));
  *grad_scale = *grad_bias = Acc(0);
  if (!want_loss && !want_grads) return;
  for (int64_t c = 0; c < x.plan.chunks; ++c) {
    const int64_t r0 = c * cap, rows = std::min(cap, n - r0);
    x.strip_product(r0, rows);
    emu::launch(x.grid(rows), kThreads, [&] {
      sigmoid_epilogue<T, Acc>(x.S.data(), x.plan.ld_s, r0, rows, m, a_inv, b_inv, scale, bias,
                               offset, g_row, scaled ? h_scale.data() : nullptr,
                               want_grads ? x.h_ptr() : nullptr, x.ld_h(),
                               want_loss ? row_part.data() : nullptr, cap,
                               ds_part.data() + c * slots, db_part.data() + c * slots);
    });
    if (want_loss) {
      emu::launch(dim3{u(ceil_div(rows, 256))}, 256, [&] {
        row_sum_kernel<Acc>(row_part.data(), C, cap, rows, r0, row_loss);
      });
    }
    if (want_grads) x.weight_products(r0, rows, h_scale[1], grad_a, grad_b);
  }
  if (want_grads) {
    for (int64_t q = 0; q < m * d; ++q) grad_b[q] *= h_scale[1];
    ordered_sum(ds_part, grad_scale);
    ordered_sum(db_part, grad_bias);
  }
}

// Calls f(T{}, Acc{}) like strip.cu's dispatch_dtype.
// dtype: 0 float64, 1 float32, 2 float16, 3 bfloat16.
template <typename F>
int dispatch(int dtype, const F& f) {
  switch (dtype) {
    case 0: f(double{}, double{}); return 0;
    case 1: f(float{}, float{}); return 0;
    case 2: f(__half{}, float{}); return 0;
    case 3: f(__nv_bfloat16{}, float{}); return 0;
    default: return -1;
  }
}

}  // namespace

extern "C" {

// Per-row vectors, scalars and outputs are contiguous arrays of the accumulation type (double for
// dtype 0, else float); null g_row (sigmoid) means ones.
int emu_strip_forward(int dtype, int64_t n, int64_t m, int64_t d, const EmuSide* a,
                      const EmuSide* b, const void* a_inv, const void* b_inv, const void* a_pos,
                      const void* b_pos, const void* scale, int64_t offset, const EmuPlan* plan,
                      void* row_lse, void* col_lse) {
  return dispatch(dtype, [&](auto t, auto acc_v) {
    using Acc = decltype(acc_v);
    auto p = [](const void* v) { return static_cast<const Acc*>(v); };
    forward<decltype(t), Acc>(n, m, d, *a, *b, p(a_inv), p(b_inv), p(a_pos), p(b_pos), p(scale),
                              offset, *plan, static_cast<Acc*>(row_lse), static_cast<Acc*>(col_lse));
  });
}

int emu_strip_backward(int dtype, int64_t n, int64_t m, int64_t d, const EmuSide* a,
                       const EmuSide* b, const void* a_inv, const void* b_inv, const void* a_pos,
                       const void* b_pos, const void* scale, int64_t offset, const void* row_lse,
                       const void* col_lse, const void* g_row, const void* g_col,
                       const EmuPlan* plan, void* grad_a, void* grad_b, void* grad_scale) {
  return dispatch(dtype, [&](auto t, auto acc_v) {
    using Acc = decltype(acc_v);
    auto p = [](const void* v) { return static_cast<const Acc*>(v); };
    backward<decltype(t), Acc>(n, m, d, *a, *b, p(a_inv), p(b_inv), p(a_pos), p(b_pos), p(scale),
                               offset, p(row_lse), p(col_lse), p(g_row), p(g_col), *plan,
                               static_cast<Acc*>(grad_a), static_cast<Acc*>(grad_b),
                               static_cast<Acc*>(grad_scale));
  });
}

int emu_sigmoid_strip(int dtype, int64_t n, int64_t m, int64_t d, const EmuSide* a,
                      const EmuSide* b, const void* a_inv, const void* b_inv, const void* scale,
                      const void* bias, int64_t offset, const void* g_row, int want_loss,
                      int want_grads, const EmuPlan* plan, void* row_loss, void* grad_a,
                      void* grad_b, void* grad_scale, void* grad_bias) {
  return dispatch(dtype, [&](auto t, auto acc_v) {
    using Acc = decltype(acc_v);
    auto p = [](const void* v) { return static_cast<const Acc*>(v); };
    auto q = [](void* v) { return static_cast<Acc*>(v); };
    sigmoid<decltype(t), Acc>(n, m, d, *a, *b, p(a_inv), p(b_inv), p(scale), p(bias), offset,
                              p(g_row), want_loss != 0, want_grads != 0, *plan, q(row_loss),
                              q(grad_a), q(grad_b), q(grad_scale), q(grad_bias));
  });
}

// The fake headers' roundings, for tests/test_cuda_emulated.py to compare with torch's:
// kind 0: float -> fp16 bits, 1: float -> bf16 bits.
void emu_round(int kind, const float* in, void* out, int64_t count) {
  for (int64_t q = 0; q < count; ++q) {
    if (kind == 0) static_cast<__half*>(out)[q] = __float2half_rn(in[q]);
    if (kind == 1) static_cast<__nv_bfloat16*>(out)[q] = __float2bfloat16_rn(in[q]);
  }
}

}  // extern "C"
