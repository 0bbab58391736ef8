// All CUDA strip kernels, for csrc/cuda/strip.cu and the host emulation (tests/cuda_emu), which
// compiles exactly these headers against fake CUDA headers. No ATen in any of them; the products
// are cuBLAS calls in strip.cu.
//   epilogue_common.cuh   conversions, 16-byte packs, the online relative fold, fixed-order sums,
//                         the merge / finalize / sum kernels, h_scale_kernel
//   softmax_epilogue.cuh  softmax_forward_epilogue (row and column states), softmax_backward_epilogue (H)
//   sigmoid_epilogue.cuh  sigmoid_epilogue (row losses, H, grad_scale / grad_bias partials)
// Design and ptxas numbers: docs/cuda.md.
#pragma once

#include "sigmoid_epilogue.cuh"
#include "softmax_epilogue.cuh"
