// The GEMV of gemv.h and the RMSNorm of rms_norm.h for AVX512F/BW (16 float32 lanes, one cache line of
// bf16 weights per two loads); compiled with -mavx512f -mavx512bw -mfma.
#include "vec_avx512.h"

#define GEMV_OP "gemv_avx512"
#include "gemv.h"

#define RMS_NORM_OP "rms_norm_avx512"
#include "rms_norm.h"
