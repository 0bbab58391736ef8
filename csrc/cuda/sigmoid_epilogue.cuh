// The sigmoid (SigLIP) strip's epilogue (docs/design.md section 2.6; docs/cuda.md): one pass over
// a chunk's product S = A_rows B^T on the grid of csrc/cuda/softmax_epilogue.cuh. No ATen here.
#pragma once

#include "../common/sigmoid_math.h"
#include "softmax_epilogue.cuh"

namespace gapops {
namespace cuda {
namespace kernels {

// Per element, with cos = rho_i sigma_j S_ij, z = s cos + bias and l = +1 at the positive
// j = r0 + i + offset, -1 elsewhere (csrc/common/sigmoid_math.h, stable forms):
//   row_part != null: softplus(-l z) summed per row (per lane across this column group's tiles
//                     in shared memory, then one butterfly over the warp) -> row_part[y][i];
//   H != null:        G = -l w_i sigmoid(-l z) (w = g_row, or 1 when g_row is null),
//                     H_ij = s rho_i sigma_j G_ij times *h_pow2 (null: 1), written as T to
//                     H[i ldh + j] (H may be S itself when T is the accumulation dtype), and
//                     sum G cos, sum G per thread in double, per block in a fixed order into
//                     ds_part / db_part[y gridDim.x + x].
template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
    sigmoid_epilogue(const Acc* S, int64_t ld, int64_t r0, int64_t rows, int64_t m,
                     const Acc* __restrict__ a_inv, const Acc* __restrict__ b_inv,
                     const Acc* __restrict__ scale, const Acc* __restrict__ bias, int64_t offset,
                     const Acc* __restrict__ g_row, const Acc* __restrict__ h_pow2, T* H,
                     int64_t ldh, Acc* __restrict__ row_part, int64_t cap,
                     double* __restrict__ ds_part, double* __restrict__ db_part) {
  constexpr int V = kPack<Acc>, R = kRowsPerWarp;
  const int lane = threadIdx.x & 31;
  const Acc s = *scale, b = *bias;
  const Acc pow2 = h_pow2 != nullptr ? *h_pow2 : Acc(1);
  const bool want_loss = row_part != nullptr, want_grads = H != nullptr;
  const int64_t i0 = warp_row0();
  // the block's per-row values in shared memory (as softmax_backward_epilogue)
  __shared__ Acc sh_row[2][kRowsPerBlock];
  if (threadIdx.x < kRowsPerBlock) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x;
    const bool in = i < rows;
    sh_row[0][threadIdx.x] = in ? a_inv[r0 + i] : Acc(0);
    sh_row[1][threadIdx.x] = in ? (g_row != nullptr ? g_row[r0 + i] : Acc(1)) : Acc(0);
  }
  __syncthreads();
  const Acc* rho = sh_row[0] + (threadIdx.x >> 5) * R;
  const Acc* w = sh_row[1] + (threadIdx.x >> 5) * R;
  // this lane's loss partial of each of its warp's rows: its own column of sh_loss, no sharing
  // until the butterflies below
  __shared__ Acc sh_loss[R][kThreads];
  for (int r = 0; r < R; ++r) sh_loss[r][threadIdx.x] = Acc(0);
  double ds_thread = 0, db_thread = 0;
  Acc sig[V];
  auto tile = [&](int64_t j0) {
#pragma unroll
    for (int v = 0; v < V; ++v) sig[v] = j0 + v < m ? b_inv[j0 + v] : Acc(0);
  };
  auto row = [&](int r, int64_t i, int64_t j0, const Pack<Acc, V>& p) {
    const int64_t pos = r0 + i + offset;
    Acc h[V];
    Acc ds_pack = 0, db_pack = 0, loss_pack = 0;
#pragma unroll
    for (int v = 0; v < V; ++v) {
      h[v] = Acc(0);  // padding columns past m (S holds garbage there): nothing
      if (j0 + v >= m) continue;
      const Acc cosv = (rho[r] * p.v[v]) * sig[v];
      const Acc z = s * cosv + b;
      const Acc label = j0 + v == pos ? Acc(1) : Acc(-1);
      Acc softplus_term;
      const Acc g = sigmoid_pair(label, z, w[r], softplus_term);
      loss_pack += softplus_term;
      if (want_grads) {
        ds_pack += g * cosv;
        db_pack += g;
        h[v] = s * (rho[r] * sig[v]) * g * pow2;
      }
    }
    sh_loss[r][threadIdx.x] += loss_pack;
    if (want_grads) {
      store_pack<T>(H + i * ldh + j0, h);
      ds_thread += static_cast<double>(ds_pack);
      db_thread += static_cast<double>(db_pack);
    }
  };
  sweep_group(S, ld, rows, m, tile, row);
  if (want_loss) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      Acc sum = sh_loss[r][threadIdx.x];
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (lane == 0 && i0 + r < rows) row_part[static_cast<int64_t>(blockIdx.y) * cap + i0 + r] = sum;
    }
  }
  if (want_grads) {
    const int64_t slot = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
    const double ds = block_sum(ds_thread);
    const double db = block_sum(db_thread);
    if (threadIdx.x == 0) {
      ds_part[slot] = ds;
      db_part[slot] = db;
    }
  }
}

}  // namespace kernels
}  // namespace cuda
}  // namespace gapops
