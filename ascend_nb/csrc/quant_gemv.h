// Quantized linears for CPUs, included by gemv.h (which dispatches to them):
//
//  - int4 GEMV (decoding, up to 8 rows): weight uint8 [N, K/2] of packed nibbles, float16 scales and mins
//    [N, K/32] (ascend_nb/engine/accelerated/quantize.py, Int4Weight). Each group of 32 weights is widened
//    in registers to its float32 values d * q + m (Vec::int4_group) and multiplied into float32 activations:
//    the float reference x @ (d q + m)^T up to float32 summation order. Where the build has VNNI (the
//    AVX512-BF16 build) the activations are quantized per group of 32 to int8 instead and each group's
//    products are summed exactly in int32 by vpdpbusd (int4_dot_rows below: the integer-dot path).
//  - w8a8 GEMV: weight int8 [N, K] with float32 scales [N]; each input row is quantized to int8 per token
//    (scale max|x| / 127, rounded half to even) and the products are summed exactly in int32 by I8::dot
//    (VNNI's vpdpbusd where the build has it, else vpmaddubsw + vpmaddwd), then y = acc * x_scale * w_scale:
//    bit for bit the twin W8A8Linear (torch._int_mm).
//  - w8a8_linear (prompts, any number of rows): the same per-token quantization, then ATen's int8 GEMM.
//  - dequant_linear (prompts, any number of rows): a tile of weight rows at a time (int8, or int4 groups)
//    is dequantized into a cache-sized buffer in x's dtype and multiplied by ATen's GEMM, so the prompt path
//    never holds a dequantized copy of a whole weight; int8 scales multiply the output, as Int8Linear does.
//
// Needs from the including unit: Vec (gemv.h's float lanes, plus set1, int4_group, store, store_bf16) and
// I8 (int8 dot products: zero, dot, sum, bytes, bias).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kept_buffer.h"

// AMX prompts (amx_linear.h) in the AVX512-BF16 build, where the compiler knows AMX
#if defined(__AVX512BF16__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define ASCEND_NB_AMX
#include "amx_linear.h"
#endif

namespace {

constexpr int kGroup = 32;  // ascend_nb.quant_formats.INT4_GROUP_SIZE

inline float half_to_float(const at::Half h) { return _cvtsh_ss(h.x); }

// A row's float16 scales and mins as float32 (F16C, 8 at a time), so each group broadcasts them from memory.
void row_params(const at::Half* scales, const at::Half* mins, int64_t G, float* d, float* m) {
  int64_t g = 0;
  for (; g + 8 <= G; g += 8) {
    _mm256_storeu_ps(d + g, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + g))));
    _mm256_storeu_ps(m + g, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mins + g))));
  }
  for (; g < G; ++g) {
    d[g] = half_to_float(scales[g]);
    m[g] = half_to_float(mins[g]);
  }
}

// R weight rows against M input rows, with R * M * kRegs independent accumulator chains (the FMAs of one
// chain would otherwise wait on each other).
template <int M, int R, typename T>
void int4_rows(const float* x, const uint8_t* w, const at::Half* scales, const at::Half* mins, T* out, int64_t n0,
               int64_t n1, int64_t K, int64_t N) {
  constexpr int kRegs = kGroup / W;
  const int64_t G = K / kGroup;
  std::vector<float> d(R * G), mn(R * G);
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    _mm_prefetch(reinterpret_cast<const char*>(w + (n + R) * (K / 2)), _MM_HINT_T0);
    for (int r = 0; r < R; ++r) row_params(scales + (n + r) * G, mins + (n + r) * G, G, &d[r * G], &mn[r * G]);
    typename Vec::reg acc[R][M][kRegs];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < M; ++m)
        for (int i = 0; i < kRegs; ++i) acc[r][m][i] = Vec::zero();
    for (int64_t g = 0; g < G; ++g) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        typename Vec::reg wv[kRegs];
        Vec::int4_group(w + (n + r) * (K / 2) + g * (kGroup / 2), Vec::set1(d[r * G + g]), Vec::set1(mn[r * G + g]), wv);
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m) {
#pragma GCC unroll 4
          for (int i = 0; i < kRegs; ++i) {
            acc[r][m][i] = Vec::fma(wv[i], Vec::loadx(x + m * K + g * kGroup + i * W), acc[r][m][i]);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        typename Vec::reg total = acc[r][m][0];
        for (int i = 1; i < kRegs; ++i) total = Vec::add(total, acc[r][m][i]);
        out[m * N + n + r] = static_cast<T>(Vec::sum(total));
      }
    }
  }
  if (n < n1) int4_rows<M, 1>(x, w, scales, mins, out, n, n1, K, N);
}

#ifdef __AVX512VNNI__
// int4 x int8 by VNNI: each input row quantized once per call, per group of 32 (scale max|x_g| / 127, rounded
// half to even, as quantize_rows per group), so a group's weight nibbles (unsigned 0..15) times its int8
// activations sum exactly in int32 by vpdpbusd, 64 products an instruction. Then per group
//   sum_j (d q_j + m) x_j  ~  d * s_x * sum_j q_j qx_j  +  m * sum_j x_j
// with the activations' float sums in the min term: the only approximation is x_j ~ s_x qx_j.
//
// Four groups make a chunk of 64 weight bytes, low nibbles q[0..16) and high nibbles q[16..32) of each group;
// the activations are laid out to match (the chunk's 4 x 16 low-half values, then its 4 x 16 high-half ones),
// so a chunk is two vpdpbusd and its 16 int32 lanes hold 4 lanes a group. The last chunk may hold 1 to 3 groups
// (masked loads).
struct GroupActivations {
  std::vector<int8_t> q;       // [M, K] in chunk layout
  std::vector<float> scales;   // [M, chunks * 16]: each group's scale on its 4 lanes (0 past the last group)
  std::vector<float> sums;     // [M, G]: each group's float32 sum

  GroupActivations(const float* x, int64_t M, int64_t K) {
    const int64_t G = K / kGroup, C = (G + 3) / 4;
    q.assign(M * K, 0);
    scales.assign(M * C * 16, 0.0f);
    sums.assign(M * G, 0.0f);
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t g = 0; g < G; ++g) {  // a group is two registers: its low and its high half
        const __m512 lo = _mm512_loadu_ps(x + m * K + g * kGroup), hi = _mm512_loadu_ps(x + m * K + g * kGroup + 16);
        float scale = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi))) / 127.0f;
        if (!(scale > 0.0f)) scale = 1.0f;
        const __m512 s = _mm512_set1_ps(scale), limit = _mm512_set1_ps(127.0f);
        auto to_int8 = [&](__m512 v) {  // round(v / scale), half to even, within +-127
          const __m512 r = _mm512_roundscale_ps(_mm512_div_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, _mm512_sub_ps(_mm512_setzero_ps(), limit)), limit)));
        };
        const int64_t c = g / 4, p = g % 4, P = std::min<int64_t>(4, G - 4 * c);
        int8_t* chunk = q.data() + m * K + c * 4 * kGroup;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(chunk + p * 16), to_int8(lo));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(chunk + 16 * P + p * 16), to_int8(hi));
        std::fill_n(scales.data() + (m * C + c) * 16 + p * 4, 4, scale);
        sums[m * G + g] = _mm512_reduce_add_ps(_mm512_add_ps(lo, hi));
      }
    }
  }
};

// A chunk's P weight scales (float16), each on its group's 4 lanes.
inline __m512 chunk_scales(const at::Half* d, int64_t P) {
  __m128i halves;
  if (P == 4) {
    halves = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(d));
  } else {  // the row's last chunk: read no further than its last group
    uint16_t h[4] = {0, 0, 0, 0};
    std::memcpy(h, d, P * sizeof(uint16_t));
    halves = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(h));
  }
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                               _mm512_castps128_ps512(_mm_cvtph_ps(halves)));
}

// sum_g m_g * sum_x_g over a row's groups.
inline float min_term(const at::Half* mins, const float* sums, int64_t G) {
  __m512 acc = _mm512_setzero_ps();
  int64_t g = 0;
  for (; g + 16 <= G; g += 16) {
    acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(mins + g))),
                          _mm512_loadu_ps(sums + g), acc);
  }
  float s = _mm512_reduce_add_ps(acc);
  for (; g < G; ++g) s += half_to_float(mins[g]) * sums[g];
  return s;
}

// R weight rows against M input rows: each chunk's activations are loaded once for the R rows, and the R * M
// accumulator chains are independent.
template <int M, int R, typename T>
void int4_dot_rows(const GroupActivations& a, const uint8_t* w, const at::Half* scales, const at::Half* mins, T* out,
                   int64_t n0, int64_t n1, int64_t K, int64_t N) {
  const int64_t G = K / kGroup, C = (G + 3) / 4;
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    __m512 acc[R][M];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
    for (int64_t c = 0; c < C; ++c) {
      const int64_t P = std::min<int64_t>(4, G - 4 * c);
      const __mmask64 mask = P == 4 ? ~0ULL : (1ULL << (16 * P)) - 1;
      __m512i x_lo[M], x_hi[M];
      __m512 x_scales[M];
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const int8_t* xc = a.q.data() + m * K + c * 4 * kGroup;
        x_lo[m] = _mm512_maskz_loadu_epi8(mask, xc);
        x_hi[m] = _mm512_maskz_loadu_epi8(mask, xc + 16 * P);
        x_scales[m] = _mm512_loadu_ps(a.scales.data() + (m * C + c) * 16);
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        // each line of the rows R ahead is fetched while this chunk is summed (from DRAM, the hardware
        // prefetcher alone left this loop at half of int8's read rate); their scales and mins every 8 chunks
        _mm_prefetch(reinterpret_cast<const char*>(w + (n + r + R) * (K / 2) + c * 64), _MM_HINT_T0);
        if (c % 8 == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(scales + (n + r + R) * G + 4 * c), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(mins + (n + r + R) * G + 4 * c), _MM_HINT_T0);
        }
        const __m512i bytes = _mm512_maskz_loadu_epi8(mask, w + (n + r) * (K / 2) + c * 64);
        const __m512i lo = _mm512_and_si512(bytes, nibble), hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
        const __m512 d = chunk_scales(scales + (n + r) * G + 4 * c, P);
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m) {
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, x_lo[m]), hi, x_hi[m]);
          acc[r][m] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), x_scales[m]), d, acc[r][m]);
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const float total = _mm512_reduce_add_ps(acc[r][m]) + min_term(mins + (n + r) * G, a.sums.data() + m * G, G);
        out[m * N + n + r] = static_cast<T>(total);
      }
    }
  }
  if (n < n1) int4_dot_rows<M, 1>(a, w, scales, mins, out, n, n1, K, N);
}
#endif

template <typename T>
void int4_gemv(const float* x, const uint8_t* w, const at::Half* scales, const at::Half* mins, T* out, int64_t M,
               int64_t K, int64_t N) {
#ifdef __AVX512VNNI__
  const GroupActivations a(x, M, K);
  with_rows(M, [&](auto m) {
    at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
      constexpr int M = decltype(m)::value;
      int4_dot_rows<M, weight_rows<M, 4, 3>>(a, w, scales, mins, out, n0, n1, K, N);
    });
  });
#else
  with_rows(M, [&](auto m) {
    at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
      constexpr int M = decltype(m)::value;
      constexpr int R = M * (kGroup / W) >= 8 ? 1 : 8 / (M * (kGroup / W));
      int4_rows<M, R>(x, w, scales, mins, out, n0, n1, K, N);
    });
  });
#endif
}

// Per-token int8 of each row of x, as quantize_rows: scale = max|x| / 127 (1 for a zero row),
// q = round_half_even(x / scale) clamped to +-127. Also each row's sum of q over [0, KB) for a biased dot.
void quantize_rows(const float* x, int8_t* q, float* scales, int32_t* qsum, int64_t M, int64_t K, int64_t KB) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    float amax = 0.0f;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
    float scale = amax / 127.0f;
    if (!(scale > 0.0f)) scale = 1.0f;
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) {
      const float r = std::nearbyint(xr[k] / scale);
      q[m * K + k] = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, r)));
      if (k < KB) s += q[m * K + k];
    }
    scales[m] = scale;
    qsum[m] = s;
  }
}

// R weight rows against M input rows (R * M independent accumulator chains, each input vector serving R weight
// rows, as gemv.h's rows); the integer sums are exact, so any R gives the same bits.
template <int M, int R, typename T>
void w8a8_rows(const int8_t* xq, const float* xs, const int32_t* qsum, const int8_t* w, const float* ws, T* out,
               int64_t n0, int64_t n1, int64_t K, int64_t N) {
  const int64_t KB = K - K % I8::bytes;
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    typename I8::ireg acc[R * M];
#pragma GCC unroll 32
    for (int i = 0; i < R * M; ++i) acc[i] = I8::zero();
    for (int64_t k = 0; k < KB; k += I8::bytes) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int8_t* wk = w + (n + r) * K + k;
        _mm_prefetch(reinterpret_cast<const char*>(wk + R * K), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m) acc[r * M + m] = I8::dot(acc[r * M + m], wk, xq + m * K + k);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const int8_t* wr = w + (n + r) * K;
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        int32_t s = I8::sum(acc[r * M + m]) - I8::bias * qsum[m];
        for (int64_t k = KB; k < K; ++k) s += static_cast<int32_t>(wr[k]) * xq[m * K + k];
        out[m * N + n + r] = static_cast<T>(static_cast<float>(s) * xs[m] * ws[n + r]);
      }
    }
  }
  if (n < n1) w8a8_rows<M, 1>(xq, xs, qsum, w, ws, out, n, n1, K, N);
}

template <typename T>
void w8a8_gemv(const float* x, const int8_t* w, const float* ws, T* out, int64_t M, int64_t K, int64_t N) {
  std::vector<int8_t> xq(M * K);
  std::vector<float> xs(M);
  std::vector<int32_t> qsum(M);
  quantize_rows(x, xq.data(), xs.data(), qsum.data(), M, K, K - K % I8::bytes);
  with_rows(M, [&](auto m) {
    at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
      constexpr int M = decltype(m)::value;
      w8a8_rows<M, weight_rows<M, 4>>(xq.data(), xs.data(), qsum.data(), w, ws, out, n0, n1, K, N);
    });
  });
}

// -- prompts ----------------------------------------------------------------------------------------------

// The [M, N] result of a prompt linear viewed as x's leading dimensions by N.
inline at::Tensor with_batch_dims(const at::Tensor& out, const at::Tensor& x) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out.size(1);
  return out.view(shape);
}

// w8a8 for any number of rows: each row quantized per token as w8a8_gemv quantizes it, the int32 product by
// ATen's int8 GEMM (at::_int_mm: oneDNN, with AMX or VNNI where the CPU has them), then acc * x_scale * w_scale
// in float32 and one rounding to x's dtype: bit for bit W8A8Linear, in one call instead of its ten ATen ops.
at::Tensor w8a8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales) {
  const int64_t K = x.size(-1), N = weight.size(0);
  TORCH_CHECK(weight.scalar_type() == at::kChar && weight.is_contiguous() && weight.size(1) == K &&
                  scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.numel() == N,
              "w8a8_linear: int8 weight [N, K] with float32 scales [N]");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "w8a8_linear: x float32 or bfloat16");
  RECORD_USER_SCOPE("ascend_nb::w8a8_linear");
  const at::Tensor xf = x.reshape({-1, K}).to(at::kFloat).contiguous();
  const int64_t M = xf.size(0);
  at::Tensor q = at::empty({M, K}, x.options().dtype(at::kChar));
  std::vector<float> x_scales(M);
  std::vector<int32_t> qsum(M);
  at::parallel_for(0, M, 8, [&](int64_t m0, int64_t m1) {
    quantize_rows(xf.data_ptr<float>() + m0 * K, q.data_ptr<int8_t>() + m0 * K, x_scales.data() + m0, qsum.data() + m0,
                  m1 - m0, K, K);
  });
  const at::Tensor acc = at::_int_mm(q, weight.t());
  at::Tensor out = at::empty({M, N}, x.options());
  const int32_t* a = acc.data_ptr<int32_t>();
  const float* ws = scales.data_ptr<float>();
  auto scale = [&](auto* o) {
    at::parallel_for(0, M, 8, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        for (int64_t n = 0; n < N; ++n) {
          o[m * N + n] = static_cast<std::remove_pointer_t<decltype(o)>>(static_cast<float>(a[m * N + n]) * x_scales[m] * ws[n]);
        }
      }
    });
  };
  if (x.scalar_type() == at::kFloat) {
    scale(out.data_ptr<float>());
  } else {
    scale(out.data_ptr<at::BFloat16>());
  }
  return with_batch_dims(out, x);
}

// -- prompts: tiles of dequantized weight rows through ATen's GEMM ------------------------------------------

inline void store(float* p, typename Vec::reg v) { Vec::store(p, v); }
inline void store(at::BFloat16* p, typename Vec::reg v) { Vec::store_bf16(p, v); }

// Rows [r0, r1) of an int8 weight into buf (their exact values; row r at buf + r * ld), or of an int4 weight
// as T(d * q + m) with the product and the sum rounded in float32, as Int4Weight.dequantize.
template <typename T>
void dequantize_rows(const at::Tensor& weight, const at::Half* scales, const at::Half* mins, T* buf, int64_t n0,
                     int64_t r0, int64_t r1, int64_t K, int64_t ld) {
  if (weight.scalar_type() == at::kChar) {
    const int8_t* w = weight.data_ptr<int8_t>();
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = 0; k < K; k += W) store(buf + r * ld + k, Vec::loadw(w + (n0 + r) * K + k));
    }
    return;
  }
  const uint8_t* w = weight.data_ptr<uint8_t>();
  const int64_t G = K / kGroup;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      typename Vec::reg wv[kGroup / W];
      Vec::int4_group(w + (n0 + r) * (K / 2) + g * (kGroup / 2), Vec::set1(half_to_float(scales[(n0 + r) * G + g])),
                      Vec::set1(half_to_float(mins[(n0 + r) * G + g])), wv);
      for (int i = 0; i < kGroup / W; ++i) store(buf + r * ld + g * kGroup + i * W, wv[i]);
    }
  }
}

constexpr int64_t kTileBytes = 16 << 20;  // of 0.25-64 MB on an AMX Xeon (0.8B shapes, 128 rows): 8 MB 1.15x 16 MB's time, 32 MB even

// This thread's buffer `slot` (0: dequantized tiles, 1: their products) of at least `elements` values of
// `dtype`, its memory kept between calls (kept_buffer.h). The tensor is a fresh view each call, made under the
// caller's inference mode: a kept tensor made under inference_mode could not be written outside it.
inline at::Tensor tile_buffer(int slot, int64_t elements, at::ScalarType dtype) {
  thread_local KeptBuffer<char> storage[2];
  return at::from_blob(storage[slot].get(elements * at::elementSize(dtype)), {elements},
                       at::TensorOptions().dtype(dtype));
}

// out[:, n0 : n0 + rows] = T(product * scale) per column (scale already rounded to T and widened, as Int8Linear's
// product times scales.to(dtype) rounds), or a plain copy without scales (int4: its tiles carry their scales).
template <typename T>
void scaled_columns(const T* product, const float* scale, T* out, int64_t M, int64_t rows, int64_t n0, int64_t N) {
  at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const T* p = product + m * rows;
      T* o = out + m * N + n0;
      int64_t j = 0;
      if (scale) {
        for (; j + W <= rows; j += W) store(o + j, Vec::mul(load(p + j), Vec::loadx(scale + n0 + j)));
        for (; j < rows; ++j) o[j] = static_cast<T>(static_cast<float>(p[j]) * scale[n0 + j]);
      } else {
        std::copy(p, p + rows, o);
      }
    }
  });
}

// x [..., K] float32 or bfloat16; weight int8 [N, K] (scales float32 [N], multiplied into the output in x's
// dtype) or uint8 int4 [N, K/2] (scales and mins float16 [N, K/32]). K a multiple of the SIMD width. With `amx`
// (the CPU has AMX-BF16), bf16 prompts with K a multiple of 32 run amx_linear.h's kernel in builds that have it.
at::Tensor dequant_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales,
                          const std::optional<at::Tensor>& mins, bool amx) {
  const bool int4 = weight.scalar_type() == at::kByte;
  const int64_t K = x.size(-1), N = weight.size(0);
  TORCH_CHECK(weight.is_contiguous() && scales.is_contiguous(), "dequant_linear: contiguous weight and scales");
  TORCH_CHECK(int4 ? (weight.size(1) * 2 == K && K % kGroup == 0 && mins && scales.scalar_type() == at::kHalf)
                   : (weight.scalar_type() == at::kChar && weight.size(1) == K && K % W == 0),
              "dequant_linear: int8 [N, K] or int4 [N, K/2] weights with their scales");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "dequant_linear: x float32 or bfloat16");
  at::Tensor x2 = x.reshape({-1, K}).contiguous();
  const at::Half* sp = int4 ? scales.data_ptr<at::Half>() : nullptr;
  const at::Half* mp = int4 ? mins->data_ptr<at::Half>() : nullptr;
  // int8: each column's scale rounded to x's dtype, as Int8Linear multiplies by scales.to(dtype)
  const at::Tensor rounded = int4 ? at::Tensor() : scales.to(x.scalar_type()).to(at::kFloat);
  const float* column_scales = int4 ? nullptr : rounded.data_ptr<float>();
#ifdef ASCEND_NB_AMX
  if (amx && x.scalar_type() == at::kBFloat16 && K % kAmxK == 0 && amx_permitted()) {
    RECORD_USER_SCOPE(int4 ? "ascend_nb::dequant_linear int4 amx" : "ascend_nb::dequant_linear int8 amx");
    at::Tensor out = at::empty({x2.size(0), N}, x.options());
    amx_linear(
        x2.data_ptr<at::BFloat16>(), x2.size(0), N, K,
        [&](at::BFloat16* buf, int64_t ld, int64_t n0, int64_t rows) { dequantize_rows(weight, sp, mp, buf, n0, 0, rows, K, ld); },
        column_scales, out.data_ptr<at::BFloat16>());
    return with_batch_dims(out, x);
  }
#endif
  RECORD_USER_SCOPE(int4 ? "ascend_nb::dequant_linear int4" : "ascend_nb::dequant_linear int8");
  const int64_t tile = std::max<int64_t>(16, kTileBytes / (K * x.element_size()));
  const int64_t M = x2.size(0), tile_rows = std::min(tile, N);
  at::Tensor buf = tile_buffer(0, tile_rows * K, x.scalar_type()).view({tile_rows, K});
  at::Tensor product = tile_buffer(1, M * tile_rows, x.scalar_type());
  at::Tensor out = at::empty({M, N}, x.options());
  auto run = [&](auto* typed) {
    using T = std::remove_pointer_t<decltype(typed)>;
    for (int64_t n0 = 0; n0 < N; n0 += tile) {
      const int64_t rows = std::min(tile, N - n0);
      at::parallel_for(0, rows, 8, [&](int64_t r0, int64_t r1) {
        dequantize_rows(weight, sp, mp, buf.data_ptr<T>(), n0, r0, r1, K, K);
      });
      at::Tensor p = product.narrow(0, 0, M * rows).view({M, rows});
      at::mm_out(p, x2, buf.narrow(0, 0, rows).t());
      scaled_columns(p.data_ptr<T>(), column_scales, out.data_ptr<T>(), M, rows, n0, N);
    }
  };
  if (x.scalar_type() == at::kFloat) {
    run(static_cast<float*>(nullptr));
  } else {
    run(static_cast<at::BFloat16*>(nullptr));
  }
  return with_batch_dims(out, x);
}

}  // namespace
