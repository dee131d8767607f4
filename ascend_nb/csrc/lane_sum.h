// Sums over a row in 16 float32 partial sums (the compiler keeps them in registers and vectorizes the
// loop), then pairwise: shared by rms_norm.h and decode_attention.h.
#pragma once

#include <cstdint>

namespace {

constexpr int kLanes = 16;

// sum over k < K of term(k), with term(k) added to partial sum k % kLanes.
template <typename Term>
float lane_sum(int64_t K, Term term) {
  float partial[kLanes] = {0.0f};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
#pragma GCC unroll 16
    for (int i = 0; i < kLanes; ++i) partial[i] += term(k + i);
  }
  for (; k < K; ++k) partial[0] += term(k);
  for (int width = kLanes / 2; width > 0; width /= 2) {
#pragma GCC unroll 8
    for (int i = 0; i < width; ++i) partial[i] += partial[i + width];
  }
  return partial[0];
}

}  // namespace
