// CPU strip kernels (DESIGN.md section 2): rows A [n, d] against columns B [m, d].
//
// The strip is cut into tiles of kRows x kCols logits. Each tile is one BLAS product (at::mm
// into a cache-resident buffer) followed by fused, vectorizable loops that fold it into the row
// online-LSE, the per-thread column LSE and, in backward, the gradient weights G. Nothing of size
// n x m is ever allocated: extra memory is one tile per thread plus O((n + m) d) buffers.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../common/tile_math.h"
#include "simd_rows.h"
#include "../common/strip_checks.h"

namespace gapops {
namespace {

// 256 x 512 fp32 tiles (512 KiB): single-thread sgemm on this shape measured ~15% faster than on
// 128 x 512 here, and kRows is also the K of the backward's dB product.
constexpr int64_t kRows = 256;
constexpr int64_t kCols = 512;

struct Tile {
  int64_t i0, rows, j0, cols;
};

template <typename F>
void for_each_row_block(int64_t n, const F& body) {
  const int64_t blocks = (n + kRows - 1) / kRows;
  at::parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t i0 = blk * kRows;
      body(at::get_thread_num(), i0, std::min(kRows, n - i0));
    }
  });
}

// logits tile = A[i0:i0+rows] @ B[j0:j0+cols]^T, written densely (leading dimension = cols).
at::Tensor tile_product(const at::Tensor& A, const at::Tensor& B, const Tile& t, at::Tensor& buf) {
  at::Tensor out = buf.narrow(0, 0, t.rows * t.cols).view({t.rows, t.cols});
  at::mm_out(out, A.narrow(0, t.i0, t.rows), B.narrow(0, t.j0, t.cols).t());
  return out;
}

template <typename T>
void forward_tile(T* tile, const Tile& t, T s, int64_t offset, T* row_max, T* row_sum, T* pos,
                  T* col_max, T* col_sum, T* scratch) {
  for (int64_t r = 0; r < t.rows; ++r) {
    T* x = tile + r * t.cols;
    T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < t.cols; ++j) {
      x[j] *= s;
      mx = x[j] > mx ? x[j] : mx;
    }
    const int64_t i = t.i0 + r;
    const T m_new = row_max[i] > mx ? row_max[i] : mx;
    const T sum = sum_exp_shifted(x, m_new, t.cols);
    row_sum[i] = (row_max[i] == -std::numeric_limits<T>::infinity())
                     ? sum
                     : row_sum[i] * fast_exp(row_max[i] - m_new) + sum;
    row_max[i] = m_new;
    const int64_t p = i + offset - t.j0;
    if (p >= 0 && p < t.cols) pos[i] = x[p];
  }
  // Columns: the tile's column max, rescale the running sums once, then add the tile's terms.
  T* cm = scratch;
  for (int64_t j = 0; j < t.cols; ++j) cm[j] = col_max[t.j0 + j];
  for (int64_t r = 0; r < t.rows; ++r) {
    const T* x = tile + r * t.cols;
#pragma omp simd
    for (int64_t j = 0; j < t.cols; ++j) cm[j] = x[j] > cm[j] ? x[j] : cm[j];
  }
  T* cmax = col_max + t.j0;
  T* csum = col_sum + t.j0;
  rescale_sums(csum, cmax, cm, t.cols);
  for (int64_t r = 0; r < t.rows; ++r) add_exp_shifted(csum, tile + r * t.cols, cmax, t.cols);
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(const at::Tensor& A,
                                                             const at::Tensor& B, T s,
                                                             int64_t offset) {
  const int64_t n = A.size(0), m = B.size(0);
  const auto opts = A.options();
  const int threads = at::get_num_threads();
  const T ninf = -std::numeric_limits<T>::infinity();
  at::Tensor row_max = at::full({n}, ninf, opts), row_sum = at::zeros({n}, opts);
  at::Tensor pos = at::zeros({n}, opts);
  at::Tensor col_max = at::full({threads, m}, ninf, opts), col_sum = at::zeros({threads, m}, opts);

  for_each_row_block(n, [&](int tid, int64_t i0, int64_t rows) {
    at::Tensor buf = at::empty({rows * std::min(kCols, m) + std::min(kCols, m)}, opts);
    T* scratch = buf.data_ptr<T>() + rows * std::min(kCols, m);
    for (int64_t j0 = 0; j0 < m; j0 += kCols) {
      const Tile t{i0, rows, j0, std::min(kCols, m - j0)};
      at::Tensor tile = tile_product(A, B, t, buf);
      forward_tile<T>(tile.data_ptr<T>(), t, s, offset, row_max.data_ptr<T>(),
                      row_sum.data_ptr<T>(), pos.data_ptr<T>(),
                      col_max.data_ptr<T>() + tid * m, col_sum.data_ptr<T>() + tid * m, scratch);
    }
  });

  // Fold the per-thread column states in a fixed order (deterministic for a thread count).
  T* cm = col_max.data_ptr<T>();
  T* cs = col_sum.data_ptr<T>();
  at::Tensor col_lse = at::empty({m}, opts), row_lse = at::empty({n}, opts);
  T* cl = col_lse.data_ptr<T>();
  for (int64_t j = 0; j < m; ++j) {
    T mx = cm[j], sm = cs[j];
    for (int th = 1; th < threads; ++th) lse_merge(mx, sm, cm[th * m + j], cs[th * m + j]);
    cl[j] = lse_finalize(mx, sm);
  }
  const T* rm = row_max.data_ptr<T>();
  const T* rs = row_sum.data_ptr<T>();
  T* rl = row_lse.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) rl[i] = lse_finalize(rm[i], rs[i]);
  return {row_lse, col_lse, pos};
}

// Turns a tile of raw dots D into G in place; returns sum_ij G_ij D_ij (the d scale term).
template <typename T>
double backward_tile(T* tile, const Tile& t, T s, int64_t offset, const T* row_lse,
                     const T* col_lse, const T* g_row, const T* g_col) {
  double ds = 0;
  const T* cl = col_lse + t.j0;
  const T* gc = g_col + t.j0;
  for (int64_t r = 0; r < t.rows; ++r) {
    T* x = tile + r * t.cols;
    const int64_t i = t.i0 + r;
    const T rl = row_lse[i], gr = g_row[i];
    const int64_t p = i + offset - t.j0;
    const bool has_pos = p >= 0 && p < t.cols;
    const T pos_dot = has_pos ? x[p] : T(0);
    T acc = grad_row(x, s, rl, gr, cl, gc, t.cols);
    if (has_pos) {  // the -(g_row_i + g_col_j) term of the positive logit
      const T w = gr + gc[p];
      x[p] -= w;
      acc -= w * pos_dot;
    }
    ds += static_cast<double>(acc);
  }
  return ds;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(
    const at::Tensor& A, const at::Tensor& B, T s, int64_t offset, const at::Tensor& row_lse,
    const at::Tensor& col_lse, const at::Tensor& g_row, const at::Tensor& g_col) {
  const int64_t n = A.size(0), m = B.size(0), d = A.size(1);
  const auto opts = A.options();
  const int threads = at::get_num_threads();
  at::Tensor dA = at::zeros({n, d}, opts);
  at::Tensor dB_parts = at::zeros({threads, m, d}, opts);
  std::vector<double> ds_parts(threads, 0.0);
  const T* rl = row_lse.data_ptr<T>();
  const T* cl = col_lse.data_ptr<T>();
  const T* gr = g_row.data_ptr<T>();
  const T* gc = g_col.data_ptr<T>();

  for_each_row_block(n, [&](int tid, int64_t i0, int64_t rows) {
    at::Tensor buf = at::empty({rows * std::min(kCols, m)}, opts);
    at::Tensor a_blk = A.narrow(0, i0, rows);
    at::Tensor da_blk = dA.narrow(0, i0, rows);
    at::Tensor db = dB_parts.select(0, tid);
    double ds = 0;
    for (int64_t j0 = 0; j0 < m; j0 += kCols) {
      const Tile t{i0, rows, j0, std::min(kCols, m - j0)};
      at::Tensor tile = tile_product(A, B, t, buf);
      ds += backward_tile<T>(tile.data_ptr<T>(), t, s, offset, rl, cl, gr, gc);
      at::Tensor b_tile = B.narrow(0, j0, t.cols);
      da_blk.addmm_(tile, b_tile);
      db.narrow(0, j0, t.cols).addmm_(tile.t(), a_blk);
    }
    ds_parts[tid] += ds;
  });

  dA.mul_(s);
  // Fold the per-thread dB partials into the first one, in thread order (no extra m x d buffer).
  at::Tensor dB = dB_parts.select(0, 0);
  for (int th = 1; th < threads; ++th) dB.add_(dB_parts.select(0, th));
  dB.mul_(s);
  double ds = 0;
  for (double v : ds_parts) ds += v;
  return {dA, dB, at::scalar_tensor(ds, opts)};
}

at::ScalarType acc_type(const at::Tensor& a) {
  return a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> strip_forward_cpu(const at::Tensor& a,
                                                                 const at::Tensor& b,
                                                                 const at::Tensor& scale,
                                                                 int64_t offset) {
  check_strip_inputs(a, b, scale, offset);
  const auto acc = acc_type(a);
  const at::Tensor A = a.to(acc).contiguous(), B = b.to(acc).contiguous();
  if (acc == at::kDouble) return forward_impl<double>(A, B, scale.item<double>(), offset);
  return forward_impl<float>(A, B, scale.item<float>(), offset);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> strip_backward_cpu(
    const at::Tensor& a, const at::Tensor& b, const at::Tensor& scale, int64_t offset,
    const at::Tensor& row_lse, const at::Tensor& col_lse, const at::Tensor& g_row,
    const at::Tensor& g_col, bool /*deterministic: always, for a fixed thread count*/) {
  check_strip_inputs(a, b, scale, offset);
  check_strip_stats(a, b, row_lse, col_lse, g_row, g_col);
  const auto acc = acc_type(a);
  const at::Tensor A = a.to(acc).contiguous(), B = b.to(acc).contiguous();
  auto stat = [&](const at::Tensor& t) { return t.to(acc).contiguous(); };
  at::Tensor dA, dB, ds;
  if (acc == at::kDouble) {
    std::tie(dA, dB, ds) = backward_impl<double>(A, B, scale.item<double>(), offset,
                                                 stat(row_lse), stat(col_lse), stat(g_row),
                                                 stat(g_col));
  } else {
    std::tie(dA, dB, ds) = backward_impl<float>(A, B, scale.item<float>(), offset, stat(row_lse),
                                                stat(col_lse), stat(g_row), stat(g_col));
  }
  return {dA.to(a.scalar_type()), dB.to(b.scalar_type()), ds};
}

}  // namespace

TORCH_LIBRARY_IMPL(gapops, CPU, m) {
  m.impl("strip_forward", &strip_forward_cpu);
  m.impl("strip_backward", &strip_backward_cpu);
}

}  // namespace gapops
