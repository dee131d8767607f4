// One AVX512F/BW register of 16 float32 lanes for gemv.h and quant_gemv.h (bf16 weights widened by a
// shift, int8 by a conversion, int4 nibbles by a table lookup); shared by the AVX512 and AVX512-BF16
// builds, which each add their int8 dot product (struct I8).
#pragma once

#include <immintrin.h>

#include <ATen/ATen.h>

struct Vec {
  using reg = __m512;
  static constexpr int width = 16;
  static constexpr int registers = 32;  // zmm0-31
  static reg zero() { return _mm512_setzero_ps(); }
  static reg loadx(const float* p) { return _mm512_loadu_ps(p); }
  static reg loadw(const at::BFloat16* w) {
    __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  static reg loadw(const int8_t* w) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
  }
  // One int4 group of 32 (16 bytes of packed nibbles) as float32 weights d * q + m (the product and the sum
  // rounded as Int4Weight.dequantize rounds them): the 16 possible values are made once, then each nibble
  // picks its value with one permute (VPERMPS reads the low 4 bits of each index).
  static void int4_group(const uint8_t* p, reg d, reg m, reg* w) {
    const reg values = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const reg table = _mm512_add_ps(_mm512_mul_ps(values, d), m);
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    w[0] = _mm512_permutexvar_ps(b, table);
    w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), table);
  }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static float sum(reg v) { return _mm512_reduce_add_ps(v); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  // float32 -> bf16 rounded to nearest even (no NaN here: dequantized weights are finite; no denormal either,
  // which VCVTNEPS2BF16 would flush).
  static void store_bf16(at::BFloat16* p, reg v) {
#ifdef __AVX512BF16__
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
    return;
#endif
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(rounded));
  }
};
