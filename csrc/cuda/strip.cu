// CUDA strip ops (docs/design.md sections 2.1 and 2.6) on cuBLAS strips with fused epilogues:
// the launchers of csrc/cuda/strip_kernels.cuh and the TORCH_LIBRARY_IMPL registration. Design,
// model and ptxas numbers: docs/cuda.md.
//
// For chunk_rows rows at a time (csrc/cuda/strip_plan.h):
//   S = A_rows B^T                 cuBLAS (at::mm_out; 16-bit in, fp32 out; fp32 in: TF32 only
//                                  where torch allows it, as for any torch.mm)
//   softmax forward:  softmax_forward_epilogue (row / column partial states), merged in order
//   softmax backward: softmax_backward_epilogue (H = s rho G sigma, grad_scale partials), then
//                     grad_a[rows] = H B and grad_b += H^T A_rows on cuBLAS
//   sigmoid:          sigmoid_epilogue (row losses, H, grad_scale / grad_bias partials), then the
//                     same two products when gradients are wanted
// A_rows is a view of a, or the chunk's routed rows gathered (R x d); B is b, or with a column
// swap mask the routed columns gathered once (m x d). Every sum has a fixed order: deterministic
// whatever `deterministic` says.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>

#include "../common/strip_checks.h"
#include "strip_kernels.cuh"
#include "strip_plan.h"

namespace gapops {
namespace cuda {
namespace {

using namespace kernels;
using OptTensor = c10::optional<at::Tensor>;

// Calls f(T{}, Acc{}) for the kernel variant serving dtype.
template <typename F>
void dispatch_dtype(at::ScalarType dtype, const F& f) {
  switch (dtype) {
    case at::kDouble: f(double{}, double{}); return;
    case at::kFloat: f(float{}, float{}); return;
    case at::kHalf: f(__half{}, float{}); return;
    case at::kBFloat16: f(__nv_bfloat16{}, float{}); return;
    default: TORCH_CHECK(false, "gapops cuda: unsupported dtype ", dtype);
  }
}

// The scratch budget of csrc/cuda/strip_plan.h; GAPOPS_CUDA_SCRATCH_MB overrides it (tests use
// it to force several chunks on small strips).
int64_t scratch_bytes() {
  if (const char* env = std::getenv("GAPOPS_CUDA_SCRATCH_MB")) {
    const long long mb = std::atoll(env);
    if (mb > 0) return static_cast<int64_t>(mb) << 20;
  }
  return default_scratch_bytes(static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->totalGlobalMem));
}

template <typename Kernel>
DeviceFacts device_facts(Kernel kernel) {
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return {sms * std::max(1, per_sm), scratch_bytes()};
}

unsigned blocks_for(int64_t count, int64_t per_block) {
  return static_cast<unsigned>(std::max<int64_t>(1, ceil_div(count, per_block)));
}

// The strip's sides as the kernels and cuBLAS read them: per-row vectors and scale in the
// accumulation dtype on the device (no-ops when they already are), swap masks contiguous.
struct Sides {
  at::Tensor a, a_alt, b, b_alt, a_swap, b_swap, a_inv, b_inv, scale;
  int64_t n, m, d, offset;
  at::ScalarType acc;
  bool half;

  Sides(const at::Tensor& a_, const at::Tensor& a_alt_, const OptTensor& a_swap_,
        const at::Tensor& b_, const at::Tensor& b_alt_, const OptTensor& b_swap_,
        const at::Tensor& a_inv_, const at::Tensor& b_inv_, const at::Tensor& scale_, int64_t offset_)
      : a(a_), a_alt(a_alt_), b(b_), b_alt(b_alt_), n(a_.size(0)), m(b_.size(0)), d(a_.size(1)),
        offset(offset_), acc(accumulation_type(a_)),
        half(a_.scalar_type() == at::kHalf || a_.scalar_type() == at::kBFloat16) {
    TORCH_CHECK(a.is_cuda(), "gapops cuda: the features must be CUDA tensors");
    if (a_swap_.has_value()) a_swap = a_swap_->contiguous();
    if (b_swap_.has_value()) b_swap = b_swap_->contiguous();
    a_inv = vec(a_inv_);
    b_inv = vec(b_inv_);
    scale = vec(scale_.reshape({}));
  }
  at::Tensor vec(const at::Tensor& t) const { return t.to(a.device(), acc).contiguous(); }
  at::TensorOptions acc_opts() const { return a.options().dtype(acc); }
};

template <typename Acc>
const Acc* ptr(const at::Tensor& t) { return t.data_ptr<Acc>(); }
template <typename Acc>
Acc* mut(at::Tensor& t) { return t.data_ptr<Acc>(); }

// t as a matrix cuBLAS reads in place (one unit stride), else one contiguous copy.
at::Tensor cublas_operand(const at::Tensor& t) {
  const bool row_major = t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, t.size(1));
  const bool col_major = t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, t.size(0));
  return (row_major || col_major) ? t : t.contiguous();
}

// Rows [r0, r0 + rows) of A, routed: a view of a, or an R x d gather where a_swap is given.
at::Tensor rows_operand(const Sides& x, int64_t r0, int64_t rows) {
  const at::Tensor main = x.a.narrow(0, r0, rows);
  if (!x.a_swap.defined()) return cublas_operand(main);
  return at::where(x.a_swap.narrow(0, r0, rows).unsqueeze(1), x.a_alt.narrow(0, r0, rows), main);
}

// B, routed: b itself, or the m routed columns gathered once (the column swap mask).
at::Tensor cols_operand(const Sides& x) {
  if (!x.b_swap.defined()) return cublas_operand(x.b);
  return at::where(x.b_swap.unsqueeze(1), x.b_alt, x.b);
}

// out = A B on cuBLAS: 16-bit operands with fp32 output (mm.dtype_out), else the operands' dtype.
void product(at::Tensor& out, const at::Tensor& A, const at::Tensor& B, bool half) {
  if (half) {
    at::mm_out(out, A, B, at::kFloat);
  } else {
    at::mm_out(out, A, B);
  }
}

// The chunk's strip S [rows, m] (a view of the [chunk_rows, ld_s] buffer) = A_rows B^T.
at::Tensor strip_product(at::Tensor& S, const at::Tensor& A_rows, const at::Tensor& B, int64_t m,
                         bool half) {
  at::Tensor view = S.narrow(0, 0, A_rows.size(0)).narrow(1, 0, m);
  product(view, A_rows, B.t(), half);
  return view;
}

// grad_a[rows] = H B and grad_b += H^T A_rows for one chunk (H [rows, m], a view with the
// buffer's leading dimension). 16-bit: fp32 outputs (grad_b's through the [m, d] buffer
// b_chunk), H carries 2^k, undone by h_scale[1] (grad_b's once, after the last chunk).
void weight_products(const at::Tensor& Hc, const at::Tensor& B, const at::Tensor& A_rows,
                     at::Tensor ga, at::Tensor& grad_b, at::Tensor& b_chunk,
                     const at::Tensor& h_scale, bool half) {
  if (half) {
    at::mm_out(ga, Hc, B, at::kFloat);
    ga.mul_(h_scale.select(0, 1));
    at::mm_out(b_chunk, Hc.t(), A_rows, at::kFloat);
    grad_b.add_(b_chunk);
  } else {
    at::mm_out(ga, Hc, B);
    grad_b.addmm_(Hc.t(), A_rows);
  }
}

// h_scale = [2^k, 2^-k] for 16-bit H (csrc/cuda/epilogue_common.cuh); undefined otherwise.
template <typename Acc>
at::Tensor h_scale_of(const Sides& x, const at::Tensor& g_row, const at::Tensor& g_col,
                      cudaStream_t stream) {
  if (!x.half) return at::Tensor();
  at::Tensor out = at::empty({2}, x.acc_opts());
  h_scale_kernel<Acc><<<1, kThreads, 0, stream>>>(
      ptr<Acc>(x.a_inv), x.n, ptr<Acc>(x.b_inv), x.m,
      g_row.defined() ? ptr<Acc>(g_row) : nullptr, g_col.defined() ? ptr<Acc>(g_col) : nullptr,
      ptr<Acc>(x.scale), 16384.0f, mut<Acc>(out));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

template <typename Acc>
void ordered_sum(const at::Tensor& parts, at::Tensor& out, cudaStream_t stream) {
  ordered_sum_kernel<Acc><<<1, 1, 0, stream>>>(parts.data_ptr<double>(), parts.numel(), mut<Acc>(out));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> strip_forward_cuda(
    const at::Tensor& a, const at::Tensor& a_alt, const OptTensor& a_swap, const at::Tensor& b,
    const at::Tensor& b_alt, const OptTensor& b_swap, const at::Tensor& a_inv_norm,
    const at::Tensor& b_inv_norm, const at::Tensor& a_pos, const at::Tensor& b_pos,
    const at::Tensor& scale, int64_t offset) {
  check_strip_inputs(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                     scale, offset);
  const at::cuda::OptionalCUDAGuard guard(a.device());
  const Sides x(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale, offset);
  const at::Tensor ap = x.vec(a_pos), bp = x.vec(b_pos);
  const auto opts = x.acc_opts();
  const int64_t n = x.n, m = x.m;
  at::Tensor row_lse = at::empty({n}, opts), col_lse = at::empty({m}, opts);
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_dtype(a.scalar_type(), [&](auto, auto acc_v) {
    using Acc = decltype(acc_v);
    const StripPlan plan = strip_plan(n, m, sizeof(Acc), 0, device_facts(softmax_forward_epilogue<Acc>));
    const int64_t cap = plan.chunk_rows, C = plan.col_groups;
    at::Tensor S = at::empty({cap, plan.ld_s}, opts);
    at::Tensor col_pm = at::empty({row_blocks(cap), m}, opts), col_ps = at::empty_like(col_pm);
    at::Tensor row_pm = at::empty({C, cap}, opts), row_ps = at::empty_like(row_pm);
    at::Tensor run_m = at::zeros({m}, opts), run_s = at::zeros({m}, opts);
    const at::Tensor B = cols_operand(x);
    for (int64_t c = 0; c < plan.chunks; ++c) {
      const int64_t r0 = c * cap, rows = std::min(cap, n - r0);
      strip_product(S, rows_operand(x, r0, rows), B, m, x.half);
      const dim3 grid(blocks_for(rows, kRowsPerBlock), static_cast<unsigned>(C));
      softmax_forward_epilogue<Acc><<<grid, kThreads, 0, stream>>>(
          ptr<Acc>(S), plan.ld_s, r0, rows, m, ptr<Acc>(x.a_inv), ptr<Acc>(x.b_inv), ptr<Acc>(ap),
          ptr<Acc>(bp), ptr<Acc>(x.scale), offset, mut<Acc>(row_pm), mut<Acc>(row_ps), cap,
          mut<Acc>(col_pm), mut<Acc>(col_ps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      row_lse_kernel<Acc><<<blocks_for(rows, 256), 256, 0, stream>>>(
          ptr<Acc>(row_pm), ptr<Acc>(row_ps), C, cap, rows, r0, mut<Acc>(row_lse));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      col_merge_kernel<Acc><<<blocks_for(m, 256), 256, 0, stream>>>(
          ptr<Acc>(col_pm), ptr<Acc>(col_ps), row_blocks(rows), m, mut<Acc>(run_m), mut<Acc>(run_s));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    col_lse_kernel<Acc><<<blocks_for(m, 256), 256, 0, stream>>>(
        ptr<Acc>(run_m), ptr<Acc>(run_s), n, m, offset, mut<Acc>(col_lse));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {row_lse, col_lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> strip_backward_cuda(
    const at::Tensor& a, const at::Tensor& a_alt, const OptTensor& a_swap, const at::Tensor& b,
    const at::Tensor& b_alt, const OptTensor& b_swap, const at::Tensor& a_inv_norm,
    const at::Tensor& b_inv_norm, const at::Tensor& a_pos, const at::Tensor& b_pos,
    const at::Tensor& scale, int64_t offset, const at::Tensor& row_lse, const at::Tensor& col_lse,
    const at::Tensor& g_row, const at::Tensor& g_col, bool /*deterministic: always*/) {
  check_strip_inputs(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                     scale, offset);
  check_strip_stats(a, b, row_lse, col_lse, g_row, g_col);
  const at::cuda::OptionalCUDAGuard guard(a.device());
  const Sides x(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale, offset);
  const at::Tensor ap = x.vec(a_pos), bp = x.vec(b_pos);
  const at::Tensor rl = x.vec(row_lse), cl = x.vec(col_lse), gr = x.vec(g_row), gc = x.vec(g_col);
  const int64_t n = x.n, m = x.m, d = x.d;
  const auto opts = x.acc_opts();
  at::Tensor grad_a = at::empty({n, d}, opts), grad_b = at::zeros({m, d}, opts);
  at::Tensor grad_scale = at::empty({}, opts);
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_dtype(a.scalar_type(), [&](auto t, auto acc_v) {
    using T = decltype(t);
    using Acc = decltype(acc_v);
    const StripPlan plan = strip_plan(n, m, sizeof(Acc), x.half ? 2 : 0,
                                      device_facts(softmax_backward_epilogue<T, Acc>));
    const int64_t cap = plan.chunk_rows, slots = row_blocks(cap) * plan.col_groups;
    at::Tensor S = at::empty({cap, plan.ld_s}, opts);
    at::Tensor H = x.half ? at::empty({cap, plan.ld_h}, a.options()) : S;  // fp32 / fp64: over S
    const int64_t ld_h = x.half ? plan.ld_h : plan.ld_s;
    at::Tensor ds_part = at::zeros({plan.chunks * slots}, opts.dtype(at::kDouble));
    const at::Tensor h_scale = h_scale_of<Acc>(x, gr, gc, stream);
    const at::Tensor B = cols_operand(x);
    at::Tensor b_chunk = x.half ? at::empty({m, d}, opts) : at::Tensor();  // H^T A_rows in fp32
    for (int64_t c = 0; c < plan.chunks; ++c) {
      const int64_t r0 = c * cap, rows = std::min(cap, n - r0);
      const at::Tensor A_rows = rows_operand(x, r0, rows);
      strip_product(S, A_rows, B, m, x.half);
      const dim3 grid(blocks_for(rows, kRowsPerBlock), static_cast<unsigned>(plan.col_groups));
      softmax_backward_epilogue<T, Acc><<<grid, kThreads, 0, stream>>>(
          ptr<Acc>(S), plan.ld_s, r0, rows, m, ptr<Acc>(x.a_inv), ptr<Acc>(x.b_inv), ptr<Acc>(ap),
          ptr<Acc>(bp), ptr<Acc>(x.scale), offset, ptr<Acc>(rl), ptr<Acc>(cl), ptr<Acc>(gr),
          ptr<Acc>(gc), x.half ? ptr<Acc>(h_scale) : nullptr, reinterpret_cast<T*>(H.data_ptr()),
          ld_h, ds_part.data_ptr<double>() + c * slots);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const at::Tensor Hc = H.narrow(0, 0, rows).narrow(1, 0, m);
      weight_products(Hc, B, A_rows, grad_a.narrow(0, r0, rows), grad_b, b_chunk, h_scale, x.half);
    }
    if (x.half) grad_b.mul_(h_scale.select(0, 1));
    ordered_sum<Acc>(ds_part, grad_scale, stream);
  });
  return {grad_a, grad_b, grad_scale};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> sigmoid_strip_cuda(
    const at::Tensor& a, const at::Tensor& a_alt, const OptTensor& a_swap, const at::Tensor& b,
    const at::Tensor& b_alt, const OptTensor& b_swap, const at::Tensor& a_inv_norm,
    const at::Tensor& b_inv_norm, const at::Tensor& scale, const at::Tensor& bias, int64_t offset,
    const OptTensor& g_row, bool want_loss, bool want_grads, bool /*deterministic: always*/) {
  check_strip_rows(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale, offset);
  check_sigmoid_strip_args(a, bias, g_row);
  const at::cuda::OptionalCUDAGuard guard(a.device());
  const Sides x(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, scale, offset);
  const at::Tensor bs = x.vec(bias.reshape({}));
  const at::Tensor w = g_row.has_value() ? x.vec(*g_row) : at::Tensor();
  const int64_t n = x.n, m = x.m, d = x.d;
  const auto opts = x.acc_opts();
  at::Tensor row_loss = at::empty({want_loss ? n : 0}, opts);
  at::Tensor grad_a = want_grads ? at::empty({n, d}, opts) : at::empty({0, d}, opts);
  at::Tensor grad_b = want_grads ? at::zeros({m, d}, opts) : at::empty({0, d}, opts);
  at::Tensor grad_scale = at::zeros({}, opts), grad_bias = at::zeros({}, opts);
  if (!want_loss && !want_grads) return {row_loss, grad_a, grad_b, grad_scale, grad_bias};
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_dtype(a.scalar_type(), [&](auto t, auto acc_v) {
    using T = decltype(t);
    using Acc = decltype(acc_v);
    const bool half_h = x.half && want_grads;
    const StripPlan plan = strip_plan(n, m, sizeof(Acc), half_h ? 2 : 0,
                                      device_facts(sigmoid_epilogue<T, Acc>));
    const int64_t cap = plan.chunk_rows, C = plan.col_groups, slots = row_blocks(cap) * C;
    at::Tensor S = at::empty({cap, plan.ld_s}, opts);
    at::Tensor H = half_h ? at::empty({cap, plan.ld_h}, a.options()) : S;  // fp32 / fp64: over S
    const int64_t ld_h = half_h ? plan.ld_h : plan.ld_s;
    at::Tensor row_part = want_loss ? at::empty({C, cap}, opts) : at::Tensor();
    const auto dbl = opts.dtype(at::kDouble);
    at::Tensor ds_part = want_grads ? at::zeros({plan.chunks * slots}, dbl) : at::Tensor();
    at::Tensor db_part = want_grads ? at::zeros({plan.chunks * slots}, dbl) : at::Tensor();
    const at::Tensor h_scale = want_grads ? h_scale_of<Acc>(x, w, at::Tensor(), stream) : at::Tensor();
    const at::Tensor B = cols_operand(x);
    at::Tensor b_chunk = half_h ? at::empty({m, d}, opts) : at::Tensor();
    for (int64_t c = 0; c < plan.chunks; ++c) {
      const int64_t r0 = c * cap, rows = std::min(cap, n - r0);
      const at::Tensor A_rows = rows_operand(x, r0, rows);
      strip_product(S, A_rows, B, m, x.half);
      const dim3 grid(blocks_for(rows, kRowsPerBlock), static_cast<unsigned>(C));
      sigmoid_epilogue<T, Acc><<<grid, kThreads, 0, stream>>>(
          ptr<Acc>(S), plan.ld_s, r0, rows, m, ptr<Acc>(x.a_inv), ptr<Acc>(x.b_inv),
          ptr<Acc>(x.scale), ptr<Acc>(bs), offset, w.defined() ? ptr<Acc>(w) : nullptr,
          half_h ? ptr<Acc>(h_scale) : nullptr,
          want_grads ? reinterpret_cast<T*>(H.data_ptr()) : nullptr, ld_h,
          want_loss ? mut<Acc>(row_part) : nullptr, cap,
          want_grads ? ds_part.data_ptr<double>() + c * slots : nullptr,
          want_grads ? db_part.data_ptr<double>() + c * slots : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (want_loss) {
        row_sum_kernel<Acc><<<blocks_for(rows, 256), 256, 0, stream>>>(
            ptr<Acc>(row_part), C, cap, rows, r0, mut<Acc>(row_loss));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (want_grads) {
        const at::Tensor Hc = H.narrow(0, 0, rows).narrow(1, 0, m);
        weight_products(Hc, B, A_rows, grad_a.narrow(0, r0, rows), grad_b, b_chunk, h_scale, half_h);
      }
    }
    if (want_grads) {
      if (half_h) grad_b.mul_(h_scale.select(0, 1));
      ordered_sum<Acc>(ds_part, grad_scale, stream);
      ordered_sum<Acc>(db_part, grad_bias, stream);
    }
  });
  return {row_loss, grad_a, grad_b, grad_scale, grad_bias};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(gapops, CUDA, m) {
  m.impl("strip_forward", &cuda::strip_forward_cuda);
  m.impl("strip_backward", &cuda::strip_backward_cuda);
  m.impl("sigmoid_strip", &cuda::sigmoid_strip_cuda);
}

}  // namespace gapops
