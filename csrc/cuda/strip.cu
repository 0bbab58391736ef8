// CUDA strip kernels (DESIGN.md section 2): rows A [n, d] against columns B [m, d], positive of row
// i at column i + offset. Design, tile sizes and ptxas numbers: csrc/cuda/NOTES.md.
//
// One block of 128 threads owns 64-row blocks of the strip (block r takes row blocks r, r + R,
// r + 2R, ... for a grid of R blocks) and sweeps all column tiles of 64 for each of them:
//   forward:  S = A_blk B_tile^T (once per tile) -> row online-LSE kept in registers (2 threads
//             per row) and the tile's column (max, sum) merged into this block's own row of the
//             partial buffers [R, m]; a second tiny kernel merges the R partials in a fixed order.
//   backward: S recomputed once per tile, turned into G in shared memory, then per 32-wide chunk
//             of d: dA_blk += G B_chunk (owned by the block: plain read-modify-write, no atomics)
//             and dB_chunk += G^T A_chunk (fp32 atomics). deterministic=True instead runs the same
//             kernel a second time on the transposed strip (rows B, columns A, offset -offset),
//             which gives dB by ownership too: no atomics anywhere, same bits every run.
// Nothing n x m is stored. Inputs are made contiguous; all index math is int64 where it can grow.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "../common/strip_checks.h"
#include "strip_kernels.cuh"

namespace gapops {
namespace cuda {
namespace {

using namespace kernels;

// --------------------------------------------------------------------------------- launchers
int64_t sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

bool tensor_cores_ok() { return at::cuda::getCurrentDeviceProperties()->major >= 8; }

// Calls f(T{}, Acc{}, std::integral_constant<bool, kMma>{}) for the variant serving dtype.
template <typename F>
void dispatch_variant(at::ScalarType dtype, const F& f) {
  switch (dtype) {
    case at::kDouble:
      f(double{}, double{}, std::false_type{});
      return;
    case at::kFloat:
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

at::ScalarType acc_type(const at::Tensor& a) {
  return a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_cuda_inputs(const at::Tensor& a, const at::Tensor& b, const at::Tensor& scale) {
  TORCH_CHECK(a.is_cuda() && b.is_cuda(), "gapops cuda: a and b must be CUDA tensors");
  TORCH_CHECK(scale.is_cuda() ? scale.device() == a.device() : scale.dim() == 0,
              "gapops cuda: scale must be on the device of a (or a 0-dim CPU tensor)");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> strip_forward_cuda(const at::Tensor& a,
                                                                  const at::Tensor& b,
                                                                  const at::Tensor& scale,
                                                                  int64_t offset) {
  check_strip_inputs(a, b, scale, offset);
  check_cuda_inputs(a, b, scale);
  const at::cuda::OptionalCUDAGuard guard(a.device());
  const auto acc = acc_type(a);
  const at::Tensor A = a.contiguous(), B = b.contiguous();
  const at::Tensor s = scale.reshape({}).to(a.device(), acc).contiguous();  // stays on device
  const int64_t n = A.size(0), m = B.size(0), d = A.size(1);
  const auto opts = A.options().dtype(acc);
  const int64_t row_blocks = (n + BM - 1) / BM;
  // R blocks, each owning row blocks r, r + R, ...; its column partials are one row of [R, m].
  const int64_t R = std::min<int64_t>(row_blocks, 2 * sm_count());
  at::Tensor row_lse = at::empty({n}, opts), pos = at::empty({n}, opts);
  at::Tensor col_lse = at::empty({m}, opts);
  at::Tensor col_max = at::full({R, m}, -std::numeric_limits<double>::infinity(), opts);
  at::Tensor col_sum = at::zeros({R, m}, opts);
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_variant(A.scalar_type(), [&](auto t, auto acc_v, auto mma) {
    using T = decltype(t);
    using Acc = decltype(acc_v);
    constexpr bool kMma = decltype(mma)::value;
    strip_forward_kernel<T, Acc, kMma><<<static_cast<unsigned>(R), kThreads, 0, stream>>>(
        reinterpret_cast<const T*>(A.data_ptr()), reinterpret_cast<const T*>(B.data_ptr()), n, m,
        d, s.data_ptr<Acc>(), offset, row_lse.data_ptr<Acc>(), pos.data_ptr<Acc>(),
        col_max.data_ptr<Acc>(), col_sum.data_ptr<Acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const unsigned blocks = static_cast<unsigned>((m + 255) / 256);
    col_lse_merge_kernel<Acc><<<blocks, 256, 0, stream>>>(col_max.data_ptr<Acc>(),
                                                        col_sum.data_ptr<Acc>(), R, m,
                                                        col_lse.data_ptr<Acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {row_lse, col_lse, pos};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> strip_backward_cuda(
    const at::Tensor& a, const at::Tensor& b, const at::Tensor& scale, int64_t offset,
    const at::Tensor& row_lse, const at::Tensor& col_lse, const at::Tensor& g_row,
    const at::Tensor& g_col, bool deterministic) {
  check_strip_inputs(a, b, scale, offset);
  check_strip_stats(a, b, row_lse, col_lse, g_row, g_col);
  check_cuda_inputs(a, b, scale);
  const at::cuda::OptionalCUDAGuard guard(a.device());
  const auto acc = acc_type(a);
  const at::Tensor A = a.contiguous(), B = b.contiguous();
  auto stat = [&](const at::Tensor& t) { return t.to(a.device(), acc).contiguous(); };
  const at::Tensor s = stat(scale.reshape({}));
  const at::Tensor rl = stat(row_lse), cl = stat(col_lse), gr = stat(g_row), gc = stat(g_col);
  const int64_t n = A.size(0), m = B.size(0), d = A.size(1);
  const auto opts = A.options().dtype(acc);
  at::Tensor dA = at::zeros({n, d}, opts), dB = at::zeros({m, d}, opts);
  at::Tensor ds = at::empty({}, opts);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t cap = 4 * sm_count();
  const int64_t R_rows = std::min<int64_t>((n + BM - 1) / BM, cap);
  at::Tensor ds_part = at::empty({R_rows}, A.options().dtype(at::kDouble));
  dispatch_variant(A.scalar_type(), [&](auto t, auto acc_v, auto mma) {
    using T = decltype(t);
    using Acc = decltype(acc_v);
    constexpr bool kMma = decltype(mma)::value;
    const T* pA = reinterpret_cast<const T*>(A.data_ptr());
    const T* pB = reinterpret_cast<const T*>(B.data_ptr());
    // Pass 1: rows A against columns B: dA by ownership, ds; dB by atomics unless deterministic.
    strip_backward_kernel<T, Acc, kMma><<<static_cast<unsigned>(R_rows), kThreads, 0, stream>>>(
        pA, pB, n, m, d, s.data_ptr<Acc>(), offset, rl.data_ptr<Acc>(), cl.data_ptr<Acc>(),
        gr.data_ptr<Acc>(), gc.data_ptr<Acc>(), dA.data_ptr<Acc>(),
        deterministic ? nullptr : dB.data_ptr<Acc>(), ds_part.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (deterministic) {
      // Pass 2: the transposed strip (rows B, columns A, positive of row j at column j - offset,
      // row and column statistics swapped): G^T, so its "dA" is dB, again by ownership.
      const int64_t R_cols = std::min<int64_t>((m + BM - 1) / BM, cap);
      strip_backward_kernel<T, Acc, kMma><<<static_cast<unsigned>(R_cols), kThreads, 0, stream>>>(
          pB, pA, m, n, d, s.data_ptr<Acc>(), -offset, cl.data_ptr<Acc>(), rl.data_ptr<Acc>(),
          gc.data_ptr<Acc>(), gr.data_ptr<Acc>(), dB.data_ptr<Acc>(), nullptr, nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    ds_sum_kernel<Acc><<<1, 32, 0, stream>>>(ds_part.data_ptr<double>(), R_rows,
                                            ds.data_ptr<Acc>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  dA.mul_(s);
  dB.mul_(s);
  return {dA.to(a.scalar_type()), dB.to(b.scalar_type()), ds};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(gapops, CUDA, m) {
  m.impl("strip_forward", &cuda::strip_forward_cuda);
  m.impl("strip_backward", &cuda::strip_backward_cuda);
}

}  // namespace gapops
