// Host emulation stand-in for <cuda_fp16.h> (tests/cuda_emu): a 16-bit type that only needs to
// carry values through the kernels' indexing, so it stores a float (no rounding).
#pragma once
#include "emu_runtime.h"
struct __half {
  float v;
};
inline float __half2float(__half h) { return h.v; }
inline __half __float2half_rn(float f) { return __half{f}; }
