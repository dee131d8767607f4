// The CPU kernels for AVX2 + FMA (8 float32 lanes): the GEMV of gemv.h, the RMSNorm of rms_norm.h,
// the decode attention of decode_attention.h and the decode layer of decode_layer.h; compiled with
// -mavx2 -mfma.
#include <immintrin.h>

#include <ATen/ATen.h>

struct Vec {
  using reg = __m256;
  static constexpr int width = 8;
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
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(_mm_hadd_ps(s, s));
  }
};

#define GEMV_OP "gemv_avx2"
#include "gemv.h"

#define RMS_NORM_OP "rms_norm_avx2"
#include "rms_norm.h"

#define DECODE_ATTENTION_OP "decode_attention_avx2"
#include "decode_attention.h"

#define DECODE_LAYER_OP "decode_layer_avx2"
#include "decode_layer.h"
