// Runs the CUDA strip kernels (csrc/cuda/strip_kernels.cuh) under the host emulation of
// fake_include/emu_runtime.h and compares them with a naive float64 strip. Driven by
// tests/test_cuda_emulated.py; prints one line per case and exits non-zero on a mismatch.
//   g++ -std=c++20 -O1 -pthread -Ifake_include emu_strip.cpp -o emu_strip && ./emu_strip
#include "emu_runtime.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "../../csrc/cuda/strip_kernels.cuh"

using namespace gapops::cuda::kernels;
using gapops::cuda::kThreads;

namespace {

struct Problem {
  int64_t n, m, d, offset;
  std::vector<double> a, b, g_row, g_col;
  double s;
};

Problem make_problem(int64_t n, int64_t m, int64_t d, int64_t offset, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  Problem p{n, m, d, offset, {}, {}, {}, {}, 0.0};
  auto rows = [&](int64_t count, std::vector<double>& out) {
    out.resize(count * d);
    for (int64_t i = 0; i < count; ++i) {
      double nrm = 0;
      for (int64_t k = 0; k < d; ++k) nrm += (out[i * d + k] = normal(gen)) * out[i * d + k];
      for (int64_t k = 0; k < d; ++k) out[i * d + k] /= std::sqrt(nrm);
    }
  };
  rows(n, p.a);
  rows(m, p.b);
  for (int64_t i = 0; i < n; ++i)  // correlate the positives
    for (int64_t k = 0; k < d; ++k) p.b[(i + offset) * d + k] += 0.7 * p.a[i * d + k];
  p.g_row.resize(n);
  p.g_col.resize(m);
  for (auto& v : p.g_row) v = unif(gen) / n;
  for (auto& v : p.g_col) v = unif(gen) / m;
  p.s = 5.0 + 20.0 * unif(gen);
  return p;
}

struct Ref {
  std::vector<double> row_lse, col_lse, pos, dA, dB;
  double ds = 0;
};

Ref reference(const Problem& p) {
  const int64_t n = p.n, m = p.m, d = p.d;
  std::vector<double> dots(n * m), L(n * m);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < d; ++k) acc += p.a[i * d + k] * p.b[j * d + k];
      dots[i * m + j] = acc;
      L[i * m + j] = p.s * acc;
    }
  Ref r;
  r.row_lse.assign(n, 0);
  r.col_lse.assign(m, 0);
  r.pos.assign(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < m; ++j) mx = std::max(mx, L[i * m + j]);
    for (int64_t j = 0; j < m; ++j) sum += std::exp(L[i * m + j] - mx);
    r.row_lse[i] = mx + std::log(sum);
    r.pos[i] = L[i * m + i + p.offset];
  }
  for (int64_t j = 0; j < m; ++j) {
    double mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, L[i * m + j]);
    for (int64_t i = 0; i < n; ++i) sum += std::exp(L[i * m + j] - mx);
    r.col_lse[j] = mx + std::log(sum);
  }
  r.dA.assign(n * d, 0);
  r.dB.assign(m * d, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) {
      double G = p.g_row[i] * std::exp(L[i * m + j] - r.row_lse[i]) +
                 p.g_col[j] * std::exp(L[i * m + j] - r.col_lse[j]);
      if (j == i + p.offset) G -= p.g_row[i] + p.g_col[j];
      r.ds += G * dots[i * m + j];
      for (int64_t k = 0; k < d; ++k) {
        r.dA[i * d + k] += p.s * G * p.b[j * d + k];
        r.dB[j * d + k] += p.s * G * p.a[i * d + k];
      }
    }
  return r;
}

template <typename V>
double rel_err(const std::vector<V>& got, const std::vector<double>& want, double floor = 1e-300) {
  double num = 0, den = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    const double g = static_cast<double>(got[k]);
    if (!std::isfinite(g)) return INFINITY;
    num += (g - want[k]) * (g - want[k]);
    den += want[k] * want[k];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), floor);
}

template <typename T>
T from_double(double v) {
  if constexpr (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value) {
    return T{static_cast<float>(v)};
  } else {
    return static_cast<T>(v);
  }
}

// Tolerances: tol for the forward statistics, tol_bw for dA, dB, ds. fp32 gradients lose ~1e-4
// relative where G cancels at the positives (G_ii = g (p_ii - 1) with p_ii near 1), exactly as
// the fp32 CPU backend does; fp64 must match to rounding.
// Mirrors the launchers of csrc/cuda/strip.cu with an explicit grid size R (to exercise the
// grid-stride loop over row blocks) and returns the worst relative error of the outputs.
template <typename T, typename Acc, bool kMma>
bool run_case(const char* name, const Problem& p, unsigned R_fwd, unsigned R_bwd, double tol,
              double tol_bw) {
  const int64_t n = p.n, m = p.m, d = p.d;
  std::vector<T> A(n * d), B(m * d);
  for (int64_t k = 0; k < n * d; ++k) A[k] = from_double<T>(p.a[k]);
  for (int64_t k = 0; k < m * d; ++k) B[k] = from_double<T>(p.b[k]);
  const Acc s = static_cast<Acc>(p.s);
  const Ref ref = reference(p);
  const int64_t row_blocks = (n + 63) / 64, col_blocks = (m + 63) / 64;
  const unsigned Rf = static_cast<unsigned>(std::min<int64_t>(R_fwd, row_blocks));

  // forward
  std::vector<Acc> row_lse(n, Acc(-7)), pos(n, Acc(-7)), col_lse(m, Acc(-7));
  std::vector<Acc> cmax(Rf * m, -std::numeric_limits<Acc>::infinity()), csum(Rf * m, Acc(0));
  emu::launch(Rf, kThreads, [&] {
    strip_forward_kernel<T, Acc, kMma>(A.data(), B.data(), n, m, d, &s, p.offset, row_lse.data(),
                                       pos.data(), cmax.data(), csum.data());
  });
  emu::launch(static_cast<unsigned>((m + 255) / 256), 256, [&] {
    col_lse_merge_kernel<Acc>(cmax.data(), csum.data(), Rf, m, col_lse.data());
  });

  // backward with the oracle's statistics, both modes
  std::vector<Acc> rl(n), cl(m), gr(n), gc(m);
  for (int64_t i = 0; i < n; ++i) rl[i] = static_cast<Acc>(ref.row_lse[i]), gr[i] = static_cast<Acc>(p.g_row[i]);
  for (int64_t j = 0; j < m; ++j) cl[j] = static_cast<Acc>(ref.col_lse[j]), gc[j] = static_cast<Acc>(p.g_col[j]);
  double worst_bw = 0;
  std::vector<Acc> dA_modes[2];
  for (int det = 0; det < 2; ++det) {
    const unsigned Rr = static_cast<unsigned>(std::min<int64_t>(R_bwd, row_blocks));
    std::vector<Acc> dA(n * d, Acc(0)), dB(m * d, Acc(0));
    std::vector<double> ds_part(Rr, -1.0);
    emu::launch(Rr, kThreads, [&] {
      strip_backward_kernel<T, Acc, kMma>(A.data(), B.data(), n, m, d, &s, p.offset, rl.data(),
                                          cl.data(), gr.data(), gc.data(), dA.data(),
                                          det ? nullptr : dB.data(), ds_part.data());
    });
    if (det) {
      const unsigned Rc = static_cast<unsigned>(std::min<int64_t>(R_bwd, col_blocks));
      emu::launch(Rc, kThreads, [&] {
        strip_backward_kernel<T, Acc, kMma>(B.data(), A.data(), m, n, d, &s, -p.offset, cl.data(),
                                            rl.data(), gc.data(), gr.data(), dB.data(), nullptr,
                                            nullptr);
      });
    }
    Acc ds = 0;
    emu::launch(1, 32, [&] { ds_sum_kernel<Acc>(ds_part.data(), Rr, &ds); });
    for (auto& v : dA) v *= s;
    for (auto& v : dB) v *= s;
    // ds can cancel to ~0 (n = m = 1 gives exactly 0): relative to the size of its terms
    double ds_scale = 0;
    for (double v : p.g_row) ds_scale += v;
    for (double v : p.g_col) ds_scale += v;
    const double e_ds = std::abs(static_cast<double>(ds) - ref.ds) / std::max(std::abs(ref.ds), ds_scale);
    // gradients can vanish too (n = m = 1): an absolute floor of s * sum(g)
    worst_bw = std::max({worst_bw, rel_err(dA, ref.dA, p.s * ds_scale), rel_err(dB, ref.dB, p.s * ds_scale), e_ds});
    dA_modes[det] = dA;
  }
  const double e_row = rel_err(row_lse, ref.row_lse), e_col = rel_err(col_lse, ref.col_lse);
  const double e_pos = rel_err(pos, ref.pos);
  const bool same_dA = dA_modes[0] == dA_modes[1];
  const bool ok = e_row < tol && e_col < tol && e_pos < tol && worst_bw < tol_bw && same_dA;
  std::printf("%s %-22s n=%lld m=%lld d=%lld offset=%lld R=%u/%u: row %.1e col %.1e pos %.1e "
              "backward %.1e dA-modes-equal %d\n",
              ok ? "ok  " : "FAIL", name, (long long)n, (long long)m, (long long)d,
              (long long)p.offset, R_fwd, R_bwd, e_row, e_col, e_pos, worst_bw, int(same_dA));
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "quick";
  struct Shape {
    int64_t n, m, d, offset;
    unsigned R_fwd, R_bwd;
  };
  std::vector<Shape> shapes = {
      {1, 1, 1, 0, 8, 8},      {1, 5, 3, 4, 8, 8},       {5, 7, 1, 2, 8, 8},
      {64, 64, 64, 0, 8, 8},   {65, 130, 33, 65, 2, 1},  {130, 200, 70, 3, 2, 2},
      {150, 150, 40, 0, 1, 3},
  };
  if (quick) shapes = {{5, 7, 1, 2, 8, 8}, {65, 130, 33, 65, 2, 1}};
  bool ok = true;
  unsigned seed = 1;
  for (const auto& sh : shapes) {
    const Problem p = make_problem(sh.n, sh.m, sh.d, sh.offset, seed++);
    ok &= run_case<double, double, false>("fp64-simt", p, sh.R_fwd, sh.R_bwd, 1e-14, 1e-11);
    ok &= run_case<float, float, false>("fp32-simt", p, sh.R_fwd, sh.R_bwd, 1e-6, 5e-4);
    ok &= run_case<float, float, true>("fp32-tf32-wmma", p, sh.R_fwd, sh.R_bwd, 1e-6, 5e-4);
    ok &= run_case<__half, float, true>("fp16-wmma", p, sh.R_fwd, sh.R_bwd, 1e-6, 5e-4);
    ok &= run_case<__nv_bfloat16, float, true>("bf16-wmma", p, sh.R_fwd, sh.R_bwd, 1e-6, 5e-4);
  }
  std::printf(ok ? "ALL OK\n" : "MISMATCH\n");
  return ok ? 0 : 1;
}
