// The CPU kernels for AVX2 + FMA (8 float32 lanes): the GEMVs of gemv.h and quant_gemv.h (int8 dots by
// vpmaddubsw), the RMSNorm of rms_norm.h,
// the decode attention of decode_attention.h and the decode layer of decode_layer.h; compiled with
// -mavx2 -mfma.
#include <immintrin.h>

#include <ATen/ATen.h>

struct Vec {
  using reg = __m256;
  static constexpr int width = 8;
  static constexpr int registers = 16;  // ymm0-15
  static reg zero() { return _mm256_setzero_ps(); }
  static reg loadx(const float* p) { return _mm256_loadu_ps(p); }
  // bf16 is the high half of a float32; int8 converts exactly.
  static reg loadw(const at::BFloat16* w) {
    __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  }
  static reg loadw(const int8_t* w) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w))));
  }
  // One int4 group of 32 (16 bytes of packed nibbles) as float32 weights d * q + m, in order (w[0..1] the
  // low nibbles, w[2..3] the high ones), the product and the sum rounded as Int4Weight.dequantize rounds them.
  static void int4_group(const uint8_t* p, reg d, reg m, reg* w) {
    for (int half = 0; half < 2; ++half) {
      const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * half)));
      const reg lo = _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(15)));
      const reg hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
      w[half] = _mm256_add_ps(_mm256_mul_ps(lo, d), m);
      w[2 + half] = _mm256_add_ps(_mm256_mul_ps(hi, d), m);
    }
  }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(_mm_hadd_ps(s, s));
  }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  // float32 -> bf16 rounded to nearest even (no NaN here: dequantized weights are finite).
  static void store_bf16(at::BFloat16* p, reg v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))), 16);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
};

// Exact int8 dot products without VNNI: |w| (unsigned) times x with w's sign, pairs summed into int16
// (at most 2 * 127 * 127, no saturation), then into int32 lanes.
struct I8 {
  using ireg = __m256i;
  static constexpr int bytes = 32;
  static constexpr int32_t bias = 0;
  static ireg zero() { return _mm256_setzero_si256(); }
  static ireg dot(ireg acc, const int8_t* w, const int8_t* x) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  static int32_t sum(ireg v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_hadd_epi32(s, s);
    return _mm_cvtsi128_si32(_mm_hadd_epi32(s, s));
  }
};

#define GEMV_OP "gemv_avx2"
#define DEQUANT_LINEAR_OP "dequant_linear_avx2"
#define W8A8_LINEAR_OP "w8a8_linear_avx2"
#include "gemv.h"

#define RMS_NORM_OP "rms_norm_avx2"
#include "rms_norm.h"

#define DECODE_ATTENTION_OP "decode_attention_avx2"
#include "decode_attention.h"

#define DECODE_LAYER_OP "decode_layer_avx2"
#include "decode_layer.h"
