// Per-pair math of the sigmoid (SigLIP) strip (docs/design.md section 2.6), __host__ __device__
// like tile_math.h so that every backend evaluates the same stable forms.
#pragma once

#include "tile_math.h"

namespace gapops {

// For the pair's label l (+1 positive, -1 otherwise), logit z and row weight w: returns the
// gradient weight G = dloss/dz = -l w sigmoid(-l z) (never 1 - sigmoid: no cancellation) and sets
// softplus_term = softplus(-l z) = max(t, 0) + log1p(e^{-|t|}) with t = -l z. One exp: with
// e = e^{-|t|}, sigmoid(t) = 1 / (1 + e) for t >= 0 and e / (1 + e) below. NaN z gives NaN.
template <typename T>
GAPOPS_HD T sigmoid_pair(T label, T z, T w, T& softplus_term) {
  const T t = -label * z;
  const T e = fast_exp(t < T(0) ? t : -t);
  softplus_term = (t > T(0) ? t : T(0)) + log1p(e);
  const T sig = (t >= T(0) ? T(1) : e) / (T(1) + e);
  return -label * w * sig;
}

}  // namespace gapops
