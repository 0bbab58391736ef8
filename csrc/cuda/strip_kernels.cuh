// All CUDA strip kernels, for csrc/cuda/strip.cu and the host emulation (tests/cuda_emu), which
// compiles exactly these headers against fake CUDA headers. No ATen in any of them.
//   strip_tiles.cuh     configuration, shared memory, routed rows, the dot tile, rel_fold
//   strip_forward.cuh   strip_forward_kernel, col_lse_merge_kernel
//   strip_backward.cuh  g_strip_kernel (the G strip), row_partials_sum_kernel, h_scale_kernel,
//                       ds_sum_kernel
// Design, tile sizes and ptxas numbers: docs/cuda.md.
#pragma once

#include "strip_backward.cuh"
#include "strip_forward.cuh"
