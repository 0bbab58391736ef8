// Host emulation stand-in for <cuda_bf16.h> (tests/cuda_emu): a real bfloat16 in 2 bytes (the
// layout of torch.bfloat16) with round-to-nearest-even conversion, as __float2bfloat16_rn.
#pragma once
#include <cstdint>
#include <cstring>

#include "emu_runtime.h"

struct __nv_bfloat16 {
  uint16_t x;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((u >> 16) | 0x40u)};  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return {static_cast<uint16_t>(u >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = static_cast<uint32_t>(h.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
