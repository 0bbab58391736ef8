// Host emulation stand-in for <cuda_bf16.h> (tests/cuda_emu): value carrier, no rounding.
#pragma once
#include "emu_runtime.h"
struct __nv_bfloat16 {
  float v;
};
inline float __bfloat162float(__nv_bfloat16 h) { return h.v; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{f}; }
