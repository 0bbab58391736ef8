// CUDA strip ops (docs/design.md section 2.1): the launchers of csrc/cuda/strip_kernels.cuh and
// the TORCH_LIBRARY_IMPL registration. Design, tile sizes, ptxas numbers: docs/cuda.md.
//
//   forward:  one fused pass over the cosine tiles (strip_forward_kernel): row states in
//             registers, per-block column partial states merged in block order.
//   backward: the G strip. For chunk_rows rows at a time (csrc/cuda/strip_plan.h),
//             g_strip_kernel writes H = s rho G sigma [chunk_rows, m] in the input dtype (16-bit
//             H times a power of two) and the grad_scale partials, then cuBLAS:
//               grad_a[rows] = H B            (at::mm_out; fp32 output for 16-bit inputs)
//               grad_b      += H^T A_rows     (A_rows: the chunk's routed rows, R x d)
//             With a column swap mask B is not one matrix, so the kernel accumulates grad_a
//             itself (per column group, merged in order) and only grad_b goes to cuBLAS.
//             Every sum has a fixed order: deterministic whatever `deterministic` says.
// Feature tensors are read in place with their strides and routing: no swapped, normalized or
// contiguous [n, d] copy (only B, when its strides suit neither cuBLAS layout, is made
// contiguous once for the grad_a product).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <type_traits>

#include "../common/strip_checks.h"
#include "strip_kernels.cuh"
#include "strip_plan.h"

namespace gapops {
namespace cuda {
namespace {

using namespace kernels;
using OptTensor = c10::optional<at::Tensor>;

bool tensor_cores_ok() { return at::cuda::getCurrentDeviceProperties()->major >= 8; }

// Calls f(T{}, Acc{}, std::integral_constant<bool, kMma>{}) for the variant serving dtype.
template <typename F>
void dispatch_variant(at::ScalarType dtype, const F& f) {
  switch (dtype) {
    case at::kDouble:
      f(double{}, double{}, std::false_type{});
      return;
    case at::kFloat:  // TF32 tensor cores only where torch's fp32 matmuls may use them too
      if (at::globalContext().allowTF32CuBLAS() && tensor_cores_ok()) {
        f(float{}, float{}, std::true_type{});
      } else {
        f(float{}, float{}, std::false_type{});
      }
      return;
    case at::kHalf:
      TORCH_CHECK(tensor_cores_ok(), "gapops cuda: fp16 strips need sm_80 or newer");
      f(__half{}, float{}, std::true_type{});
      return;
    case at::kBFloat16:
      TORCH_CHECK(tensor_cores_ok(), "gapops cuda: bf16 strips need sm_80 or newer");
      f(__nv_bfloat16{}, float{}, std::true_type{});
      return;
    default:
      TORCH_CHECK(false, "gapops cuda: unsupported dtype ", dtype);
  }
}

// The scratch budget of csrc/cuda/strip_plan.h; GAPOPS_CUDA_SCRATCH_MB overrides it (tests use
// it to force several G-strip chunks on small strips).
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

template <typename T>
RowSource<T> row_source(const at::Tensor& main, const at::Tensor& alt, const at::Tensor* swap) {
  return {reinterpret_cast<const T*>(main.data_ptr()), reinterpret_cast<const T*>(alt.data_ptr()),
          swap != nullptr ? swap->data_ptr<bool>() : nullptr,
          main.stride(0), main.stride(1), alt.stride(0), alt.stride(1)};
}

// The strip's tensors as the kernels read them: per-row vectors and scale in the accumulation
// dtype on the device (no-ops when they already are), swap masks contiguous.
struct StripArgs {
  at::Tensor a, a_alt, b, b_alt, a_swap, b_swap, a_inv, b_inv, a_pos, b_pos, scale;
  int64_t n, m, d, offset;
  at::ScalarType acc;

  StripArgs(const at::Tensor& a_, const at::Tensor& a_alt_, const OptTensor& a_swap_,
            const at::Tensor& b_, const at::Tensor& b_alt_, const OptTensor& b_swap_,
            const at::Tensor& a_inv_, const at::Tensor& b_inv_, const at::Tensor& a_pos_,
            const at::Tensor& b_pos_, const at::Tensor& scale_, int64_t offset_)
      : a(a_), a_alt(a_alt_), b(b_), b_alt(b_alt_), n(a_.size(0)), m(b_.size(0)), d(a_.size(1)),
        offset(offset_), acc(accumulation_type(a_)) {
    TORCH_CHECK(a.is_cuda(), "gapops cuda: the features must be CUDA tensors");
    if (a_swap_.has_value()) a_swap = a_swap_->contiguous();
    if (b_swap_.has_value()) b_swap = b_swap_->contiguous();
    a_inv = vec(a_inv_);
    b_inv = vec(b_inv_);
    a_pos = vec(a_pos_);
    b_pos = vec(b_pos_);
    scale = vec(scale_.reshape({}));
  }
  at::Tensor vec(const at::Tensor& t) const { return t.to(a.device(), acc).contiguous(); }
  template <typename T>
  RowSource<T> rows() const { return row_source<T>(a, a_alt, a_swap.defined() ? &a_swap : nullptr); }
  template <typename T>
  RowSource<T> cols() const { return row_source<T>(b, b_alt, b_swap.defined() ? &b_swap : nullptr); }
  template <typename Acc>
  static const Acc* ptr(const at::Tensor& t) { return t.data_ptr<Acc>(); }
};

std::tuple<at::Tensor, at::Tensor> strip_forward_cuda(
    const at::Tensor& a, const at::Tensor& a_alt, const OptTensor& a_swap, const at::Tensor& b,
    const at::Tensor& b_alt, const OptTensor& b_swap, const at::Tensor& a_inv_norm,
    const at::Tensor& b_inv_norm, const at::Tensor& a_pos, const at::Tensor& b_pos,
    const at::Tensor& scale, int64_t offset) {
  check_strip_inputs(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                     scale, offset);
  const at::cuda::OptionalCUDAGuard guard(a.device());
  const StripArgs x(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                    scale, offset);
  const auto opts = a.options().dtype(x.acc);
  at::Tensor row_lse = at::empty({x.n}, opts), col_lse = at::empty({x.m}, opts);
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_variant(a.scalar_type(), [&](auto t, auto acc_v, auto mma) {
    using T = decltype(t);
    using Acc = decltype(acc_v);
    constexpr bool kMma = decltype(mma)::value;
    const auto kernel = strip_forward_kernel<T, Acc, kMma>;
    const int64_t R = forward_blocks(x.n, x.m, sizeof(Acc), device_facts(kernel));
    at::Tensor col_max = at::zeros({R, x.m}, opts), col_sum = at::zeros({R, x.m}, opts);
    kernel<<<static_cast<unsigned>(R), kThreads, 0, stream>>>(
        x.rows<T>(), x.cols<T>(), x.n, x.m, x.d, x.ptr<Acc>(x.a_inv), x.ptr<Acc>(x.b_inv),
        x.ptr<Acc>(x.a_pos), x.ptr<Acc>(x.b_pos), x.ptr<Acc>(x.scale), x.offset,
        row_lse.data_ptr<Acc>(), col_max.data_ptr<Acc>(), col_sum.data_ptr<Acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    col_lse_merge_kernel<Acc><<<static_cast<unsigned>(ceil_div(x.m, 256)), 256, 0, stream>>>(
        col_max.data_ptr<Acc>(), col_sum.data_ptr<Acc>(), R, x.n, x.m, x.offset,
        col_lse.data_ptr<Acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {row_lse, col_lse};
}

// b as a matrix cuBLAS reads in place (one unit stride), else one contiguous copy.
at::Tensor cublas_operand(const at::Tensor& t) {
  const bool row_major = t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, t.size(1));
  const bool col_major = t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, t.size(0));
  return (row_major || col_major) ? t : t.contiguous();
}

// Rows [r0, r0 + rows) of A, routed: a view of a, or an R x d gather where a_swap is given.
at::Tensor routed_rows(const StripArgs& x, int64_t r0, int64_t rows) {
  const at::Tensor main = x.a.narrow(0, r0, rows);
  if (!x.a_swap.defined()) return main;
  return at::where(x.a_swap.narrow(0, r0, rows).unsqueeze(1), x.a_alt.narrow(0, r0, rows), main);
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
  const StripArgs x(a, a_alt, a_swap, b, b_alt, b_swap, a_inv_norm, b_inv_norm, a_pos, b_pos,
                    scale, offset);
  const at::Tensor rl = x.vec(row_lse), cl = x.vec(col_lse), gr = x.vec(g_row), gc = x.vec(g_col);
  const int64_t n = x.n, m = x.m, d = x.d;
  const auto opts = a.options().dtype(x.acc);
  const bool half = a.scalar_type() == at::kHalf || a.scalar_type() == at::kBFloat16;
  const bool col_routed = x.b_swap.defined();
  at::Tensor grad_a = at::empty({n, d}, opts), grad_b = at::zeros({m, d}, opts);
  at::Tensor grad_scale = at::empty({}, opts);
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_variant(a.scalar_type(), [&](auto t, auto acc_v, auto mma) {
    using T = decltype(t);
    using Acc = decltype(acc_v);
    constexpr bool kMma = decltype(mma)::value;
    const auto kernel = g_strip_kernel<T, Acc, kMma>;
    const BackwardPlan plan =
        backward_plan(n, m, d, sizeof(T), sizeof(Acc), col_routed, device_facts(kernel));
    at::Tensor H = at::empty({plan.chunk_rows, m}, a.options());
    at::Tensor parts = col_routed ? at::empty({plan.col_groups, plan.chunk_rows, d}, opts) : at::Tensor();
    const int64_t blocks_per_chunk = plan.row_blocks * plan.col_groups;
    at::Tensor ds_part = at::zeros({plan.chunks * blocks_per_chunk}, a.options().dtype(at::kDouble));
    // 16-bit H is stored times 2^k (h_scale = [2^k, 2^-k]); the products are scaled back after.
    at::Tensor h_scale;
    if (half) {
      h_scale = at::empty({2}, opts);
      h_scale_kernel<Acc><<<1, 256, 0, stream>>>(
          x.ptr<Acc>(x.a_inv), n, x.ptr<Acc>(x.b_inv), m, gr.data_ptr<Acc>(), gc.data_ptr<Acc>(),
          x.ptr<Acc>(x.scale), 16384.0f, h_scale.data_ptr<Acc>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    const at::Tensor B = col_routed ? at::Tensor() : cublas_operand(x.b);
    at::Tensor b_chunk = half ? at::empty({m, d}, opts) : at::Tensor();  // H^T A_rows in fp32
    for (int64_t c = 0; c < plan.chunks; ++c) {
      const int64_t r0 = c * plan.chunk_rows, rows = std::min(plan.chunk_rows, n - r0);
      const at::Tensor Hc = H.narrow(0, 0, rows);
      at::Tensor ga = grad_a.narrow(0, r0, rows);
      if (col_routed) parts.zero_();
      const dim3 grid(static_cast<unsigned>(ceil_div(rows, BM)), static_cast<unsigned>(plan.col_groups));
      kernel<<<grid, kThreads, 0, stream>>>(
          x.rows<T>(), x.cols<T>(), r0, rows, m, d, x.ptr<Acc>(x.a_inv), x.ptr<Acc>(x.b_inv),
          x.ptr<Acc>(x.a_pos), x.ptr<Acc>(x.b_pos), x.ptr<Acc>(x.scale), x.offset,
          rl.data_ptr<Acc>(), cl.data_ptr<Acc>(), gr.data_ptr<Acc>(), gc.data_ptr<Acc>(),
          half ? h_scale.data_ptr<Acc>() : nullptr, reinterpret_cast<T*>(Hc.data_ptr()),
          col_routed ? parts.data_ptr<Acc>() : nullptr,
          ds_part.data_ptr<double>() + c * blocks_per_chunk);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (col_routed) {
        row_partials_sum_kernel<Acc><<<static_cast<unsigned>(ceil_div(rows * d, 256)), 256, 0, stream>>>(
            parts.data_ptr<Acc>(), plan.col_groups, rows, d, ga.data_ptr<Acc>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      } else if (half) {
        at::mm_out(ga, Hc, B, at::kFloat);
        ga.mul_(h_scale.select(0, 1));
      } else {
        at::mm_out(ga, Hc, B);
      }
      const at::Tensor A_rows = routed_rows(x, r0, rows);
      if (half) {
        at::mm_out(b_chunk, Hc.t(), A_rows, at::kFloat);
        grad_b.add_(b_chunk);
      } else {
        grad_b.addmm_(Hc.t(), A_rows);
      }
    }
    if (half) grad_b.mul_(h_scale.select(0, 1));
    ds_sum_kernel<Acc><<<1, 32, 0, stream>>>(ds_part.data_ptr<double>(), ds_part.numel(),
                                            grad_scale.data_ptr<Acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_a, grad_b, grad_scale};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(gapops, CUDA, m) {
  m.impl("strip_forward", &cuda::strip_forward_cuda);
  m.impl("strip_backward", &cuda::strip_backward_cuda);
}

}  // namespace gapops
