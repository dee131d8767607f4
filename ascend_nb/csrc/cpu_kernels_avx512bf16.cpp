// The CPU kernels for AVX512-BF16: the GEMV of gemv.h with bf16 activations against bf16 weights through
// VDPBF16PS (32 weights per instruction, products summed in float32), other inputs as the AVX512 build;
// the RMSNorm of rms_norm.h, the decode attention of decode_attention.h and the decode layer of
// decode_layer.h; the int8 dots of quant_gemv.h by VNNI; compiled with -mavx512f -mavx512bw -mavx512bf16 -mavx512vnni -mfma -mf16c.
#include "vec_avx512.h"

// Exact int8 dot products by AVX512-VNNI: w + 128 (unsigned, by flipping its sign bit) times x, four
// products a lane per vpdpbusd; the caller subtracts 128 * sum(x).
struct I8 {
  using ireg = __m512i;
  static constexpr int bytes = 64;
  static constexpr int32_t bias = 128;
  static ireg zero() { return _mm512_setzero_si512(); }
  static ireg dot(ireg acc, const int8_t* w, const int8_t* x) {
    const __m512i biased = _mm512_xor_si512(_mm512_loadu_si512(w), _mm512_set1_epi8(static_cast<char>(0x80)));
    return _mm512_dpbusd_epi32(acc, biased, _mm512_loadu_si512(x));
  }
  static int32_t sum(ireg v) { return _mm512_reduce_add_epi32(v); }
};

#define GEMV_BF16_DOT
#define GEMV_OP "gemv_avx512bf16"
#define DEQUANT_LINEAR_OP "dequant_linear_avx512bf16"
#define W8A8_LINEAR_OP "w8a8_linear_avx512bf16"
#include "gemv.h"

#define RMS_NORM_OP "rms_norm_avx512bf16"
#include "rms_norm.h"

#define DECODE_ATTENTION_OP "decode_attention_avx512bf16"
#include "decode_attention.h"

#define DECODE_LAYER_OP "decode_layer_avx512bf16"
#include "decode_layer.h"
