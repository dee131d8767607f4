// One AVX512F/BW register of 16 float32 lanes for gemv.h (bf16 weights widened by a shift, int8 by
// a conversion); shared by the AVX512 and AVX512-BF16 builds.
#pragma once

#include <immintrin.h>

#include <ATen/ATen.h>

struct Vec {
  using reg = __m512;
  static constexpr int width = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg loadx(const float* p) { return _mm512_loadu_ps(p); }
  static reg loadw(const at::BFloat16* w) {
    __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  static reg loadw(const int8_t* w) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
  }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static float sum(reg v) { return _mm512_reduce_add_ps(v); }
};
