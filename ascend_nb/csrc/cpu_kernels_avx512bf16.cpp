// The CPU kernels for AVX512-BF16: the GEMV of gemv.h with bf16 activations against bf16 weights through
// VDPBF16PS (32 weights per instruction, products summed in float32), other inputs as the AVX512 build;
// the RMSNorm of rms_norm.h, the decode attention of decode_attention.h and the decode layer of
// decode_layer.h; compiled with -mavx512f -mavx512bw -mavx512bf16 -mfma.
#include "vec_avx512.h"

#define GEMV_BF16_DOT
#define GEMV_OP "gemv_avx512bf16"
#include "gemv.h"

#define RMS_NORM_OP "rms_norm_avx512bf16"
#include "rms_norm.h"

#define DECODE_ATTENTION_OP "decode_attention_avx512bf16"
#include "decode_attention.h"

#define DECODE_LAYER_OP "decode_layer_avx512bf16"
#include "decode_layer.h"
