// The CPU kernels for AVX512F/BW (16 float32 lanes, one cache line of bf16 weights per two loads): the
// GEMV of gemv.h, the RMSNorm of rms_norm.h, the decode attention of decode_attention.h and the decode
// layer of decode_layer.h; compiled with -mavx512f -mavx512bw -mfma.
#include "vec_avx512.h"

#define GEMV_OP "gemv_avx512"
#include "gemv.h"

#define RMS_NORM_OP "rms_norm_avx512"
#include "rms_norm.h"

#define DECODE_ATTENTION_OP "decode_attention_avx512"
#include "decode_attention.h"

#define DECODE_LAYER_OP "decode_layer_avx512"
#include "decode_layer.h"
