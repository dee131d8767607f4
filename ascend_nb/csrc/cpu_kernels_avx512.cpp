// The CPU kernels for AVX512F/BW (16 float32 lanes, one cache line of bf16 weights per two loads): the
// GEMVs of gemv.h and quant_gemv.h (int8 dots by vpmaddubsw), the RMSNorm of rms_norm.h, the decode attention of decode_attention.h and the decode
// layer of decode_layer.h; compiled with -mavx512f -mavx512bw -mfma.
#include "vec_avx512.h"

// Exact int8 dot products without VNNI: |w| (unsigned) times x with w's sign, pairs summed into int16
// (at most 2 * 127 * 127, no saturation), then into int32 lanes.
struct I8 {
  using ireg = __m512i;
  static constexpr int bytes = 64;
  static constexpr int32_t bias = 0;
  static ireg zero() { return _mm512_setzero_si512(); }
  static ireg dot(ireg acc, const int8_t* w, const int8_t* x) {
    const __m512i wv = _mm512_loadu_si512(w), xv = _mm512_loadu_si512(x);
    const __m512i signed_x = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), _mm512_setzero_si512(), xv);
    const __m512i pairs = _mm512_maddubs_epi16(_mm512_abs_epi8(wv), signed_x);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)));
  }
  static int32_t sum(ireg v) { return _mm512_reduce_add_epi32(v); }
};

#define GEMV_OP "gemv_avx512"
#define DEQUANT_LINEAR_OP "dequant_linear_avx512"
#define W8A8_LINEAR_OP "w8a8_linear_avx512"
#include "gemv.h"

#define RMS_NORM_OP "rms_norm_avx512"
#include "rms_norm.h"

#define DECODE_ATTENTION_OP "decode_attention_avx512"
#include "decode_attention.h"

#define DECODE_LAYER_OP "decode_layer_avx512"
#include "decode_layer.h"
