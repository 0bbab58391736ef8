// Host emulation stand-in for <cuda_fp16.h> (tests/cuda_emu): a real IEEE binary16 in 2 bytes
// (the layout of torch.float16, so tensors are passed in place) with round-to-nearest-even
// conversions, subnormals and overflow to infinity, as __float2half_rn does on the device.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "emu_runtime.h"

struct __half {
  uint16_t x;
};

inline __half __float2half_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t mag = u & 0x7fffffffu;
  if (mag >= 0x7f800000u) return {static_cast<uint16_t>(sign | (mag > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  if (mag >= 0x477ff000u) return {static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520: infinity
  if (mag < 0x38800000u) {  // below 2^-14: a multiple of 2^-24, rounded to nearest even
    float v;
    std::memcpy(&v, &mag, 4);
    return {static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(v * 16777216.0f)))};
  }
  uint32_t h = ((((mag >> 23) - 112u) << 10) | ((mag & 0x7fffffu) >> 13));
  const uint32_t rest = mag & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry moves into the exponent
  return {static_cast<uint16_t>(sign | h)};
}

inline float __half2float(__half h) {
  const uint32_t sign = static_cast<uint32_t>(h.x & 0x8000u) << 16;
  const uint32_t e = (h.x >> 10) & 0x1fu, mant = h.x & 0x3ffu;
  if (e == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  const uint32_t bits = sign | (e == 31 ? (0xffu << 23) | (mant << 13) : ((e + 112u) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
