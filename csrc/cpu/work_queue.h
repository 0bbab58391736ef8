// Dynamic work distribution for the CPU strip: the workers take items (row blocks, chunks of
// them, or column tiles) from one shared atomic counter instead of a static split.
//
// Why: on cores shared with other processes a thread is descheduled for whole time slices. With
// a static split the pass ends when the slowest thread's fixed share is done, so every
// descheduling of either thread lengthens the pass; with a shared counter the other threads keep
// taking items, and a descheduled thread delays the pass by at most the one item it holds. The
// whole pass is one parallel region (one barrier at its end), and the BLAS calls inside it run
// single-threaded (MKL and OpenBLAS run sequentially inside an OpenMP parallel region).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace gapops {

class WorkQueue {
 public:
  explicit WorkQueue(int64_t items) : items_(items) {}

  // The next untaken item, or -1 when every item has been taken.
  int64_t take() {
    const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    return i < items_ ? i : -1;
  }

 private:
  std::atomic<int64_t> next_{0};
  const int64_t items_;
};

// How many workers run_workers starts for this many items (at most the intra-op thread count).
inline int64_t worker_count(int64_t items) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), items));
}

// Calls worker(w, queue) for w in [0, worker_count(items)), one per thread of one parallel
// region; each worker loops on queue.take() until it returns -1. When no parallel region can be
// opened (e.g. called from inside one) the calls run one after another on this thread, and the
// first one simply takes every item.
template <typename F>
void run_workers(int64_t items, const F& worker) {
  WorkQueue queue(items);
  const int64_t workers = worker_count(items);
  if (workers == 1) {
    worker(int64_t{0}, queue);
    return;
  }
  at::parallel_for(0, workers, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t w = lo; w < hi; ++w) worker(w, queue);
  });
}

}  // namespace gapops
