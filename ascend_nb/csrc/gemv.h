// Memory-bound GEMV for decoding on CPUs: y[M, N] = x[M, K] @ W[N, K]^T (* scales[N]) for a few rows
// (M <= 8) against bf16 or int8 weights. Each weight vector is loaded once, widened to float32 in
// registers and multiplied into every row, with float32 accumulation; output channels are split
// over the threads with at::parallel_for.
//
// This header is the ISA-independent driver. Each translation unit that includes it first defines
// `struct Vec` (one SIMD register of float32 lanes: zero, loadx, loadw for bf16 and int8, fma, sum),
// GEMV_OP (the op's name) and, for AVX512-BF16, GEMV_BF16_DOT; it is compiled with that ISA's flags
// into its own library, loaded only on a CPU that has the ISA (see ascend_nb/native.py).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace {

constexpr int W = Vec::width;

// A float32 or bf16 row's W values, widened to float32 (quant_gemv.h, decode_attention.h).
inline typename Vec::reg load(const float* p) { return Vec::loadx(p); }
inline typename Vec::reg load(const at::BFloat16* p) { return Vec::loadw(p); }

// Call f(std::integral_constant<int, M>) for a row count of 1 to 8, so each count has its own
// unrolled kernel.
template <typename F>
void with_rows(int64_t rows, F&& f) {
  switch (rows) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

// Weight rows a GEMV pass takes against M input rows (`rows`, `dot_rows`, quant_gemv.h's w8a8 and int4 dots): as
// many as the registers hold (R * M accumulators, M inputs of `inputs` registers each and a weight vector), at most
// `most` (4 for the FMA GEMV, 8 for VDPBF16PS: what the one-row passes always took). Each input vector loaded then
// serves R weight rows and there are R * M independent accumulator chains. A verify pass of 3-6 rows used to take
// one or two weight rows at a time; this way it costs 0.6-0.75x (int8) and 0.85-0.95x (bf16) the time on
// SmolLM2-135M shapes (AMX Xeon, 2026-12-05), the one-row pass is unchanged, and as an output's sum is the same
// for any R, so are the bits.
template <int M, int most, int inputs = 1>
constexpr int weight_rows = std::max(1, std::min(most, (Vec::registers - 1 - inputs * M) / M));

// R weight rows against M input rows: R * M independent accumulator chains. The next block of rows
// is prefetched while this one is summed (rows are short: 1 to 3 KiB each).
template <int M, int R, typename Wt, typename T>
void rows(const float* x, const Wt* w, const float* scales, T* out, int64_t n0, int64_t n1, int64_t K, int64_t N) {
  const int64_t KW = K - K % W;
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    typename Vec::reg acc[R * M];
#pragma GCC unroll 32
    for (int i = 0; i < R * M; ++i) acc[i] = Vec::zero();
    for (int64_t k = 0; k < KW; k += W) {
      typename Vec::reg xs[M];
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) xs[m] = Vec::loadx(x + m * K + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const Wt* wk = w + (n + r) * K + k;
        _mm_prefetch(reinterpret_cast<const char*>(wk + R * K), _MM_HINT_T0);
        typename Vec::reg wv = Vec::loadw(wk);
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m) acc[r * M + m] = Vec::fma(wv, xs[m], acc[r * M + m]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Wt* wr = w + (n + r) * K;
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        float s = Vec::sum(acc[r * M + m]);
        for (int64_t k = KW; k < K; ++k) s += static_cast<float>(wr[k]) * x[m * K + k];
        out[m * N + n + r] = static_cast<T>(scales ? s * scales[n + r] : s);
      }
    }
  }
  if (n < n1) rows<M, 1>(x, w, scales, out, n, n1, K, N);
}

#ifdef GEMV_BF16_DOT
// bf16 activations x bf16 weights: VDPBF16PS multiplies 32 pairs and adds them into 16 float32
// lanes per instruction, so no widening instructions run at all (K a multiple of 32).
template <int M, int R, typename T>
void dot_rows(const at::BFloat16* x, const at::BFloat16* w, const float* scales, T* out, int64_t n0, int64_t n1,
              int64_t K, int64_t N) {
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    __m512 acc[R * M];
#pragma GCC unroll 32
    for (int i = 0; i < R * M; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
      __m512bh xs[M];
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) xs[m] = (__m512bh)_mm512_loadu_si512(x + m * K + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const at::BFloat16* wk = w + (n + r) * K + k;
        _mm_prefetch(reinterpret_cast<const char*>(wk + R * K), _MM_HINT_T0);
        __m512bh wv = (__m512bh)_mm512_loadu_si512(wk);
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m) acc[r * M + m] = _mm512_dpbf16_ps(acc[r * M + m], wv, xs[m]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        float s = _mm512_reduce_add_ps(acc[r * M + m]);
        out[m * N + n + r] = static_cast<T>(scales ? s * scales[n + r] : s);
      }
    }
  }
  if (n < n1) dot_rows<M, 1>(x, w, scales, out, n, n1, K, N);
}

template <int M, typename T>
void dot_m(const at::BFloat16* x, const at::BFloat16* w, const float* scales, T* out, int64_t K, int64_t N) {
  constexpr int R = weight_rows<M, 8>;
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) { dot_rows<M, R>(x, w, scales, out, n0, n1, K, N); });
}

template <typename T>
void dot_out(const at::BFloat16* x, const at::BFloat16* w, const float* scales, T* out, int64_t M, int64_t K,
             int64_t N) {
  with_rows(M, [&](auto m) { dot_m<decltype(m)::value>(x, w, scales, out, K, N); });
}
#endif

template <int M, typename Wt, typename T>
void gemv_m(const float* x, const Wt* w, const float* scales, T* out, int64_t K, int64_t N) {
  constexpr int R = weight_rows<M, 4>;
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) { rows<M, R>(x, w, scales, out, n0, n1, K, N); });
}

template <typename Wt, typename T>
void gemv_w(const float* x, const Wt* w, const float* scales, T* out, int64_t M, int64_t K, int64_t N) {
  with_rows(M, [&](auto m) { gemv_m<decltype(m)::value>(x, w, scales, out, K, N); });
}

template <typename Wt>
void gemv_out(const float* x, const Wt* w, const float* scales, at::Tensor& out, int64_t M, int64_t K, int64_t N) {
  if (out.scalar_type() == at::kBFloat16) {
    gemv_w(x, w, scales, out.data_ptr<at::BFloat16>(), M, K, N);
  } else {
    gemv_w(x, w, scales, out.data_ptr<float>(), M, K, N);
  }
}

}  // namespace

#include "quant_gemv.h"

namespace {

// x float32 or bfloat16 [M, K]; weight bfloat16 or int8 [N, K] (scales float32 [N] or none; with
// int8_activations the w8a8 GEMV of quant_gemv.h), or uint8 int4 [N, K/2] (scales and mins float16
// [N, K/32]); out_dtype float32 or bfloat16 (default: x's dtype).
at::Tensor gemv(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& scales,
                std::optional<at::ScalarType> out_dtype, const std::optional<at::Tensor>& mins, bool int8_activations) {
  const bool int4 = weight.scalar_type() == at::kByte;
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1) * (int4 ? 2 : 1),
              "gemv: x [M, K], weight [N, K] (int4: [N, K/2])");
  TORCH_CHECK(x.size(0) >= 1 && x.size(0) <= 8, "gemv: 1 to 8 rows");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "gemv: x float32 or bfloat16");
  TORCH_CHECK(weight.is_contiguous() && (!scales || (scales->is_contiguous() &&
                                                      scales->scalar_type() == (int4 ? at::kHalf : at::kFloat))),
              "gemv: contiguous weight, float32 scales (int4: float16)");
  TORCH_CHECK(!int4 || (scales && mins && mins->is_contiguous() && x.size(1) % kGroup == 0),
              "gemv: int4 weights need their scales and mins, K a multiple of 32");
  TORCH_CHECK(!int8_activations || (weight.scalar_type() == at::kChar && scales), "gemv: w8a8 needs int8 weights and scales");
  const at::ScalarType dtype = out_dtype.value_or(x.scalar_type());
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "gemv: out_dtype float32 or bfloat16");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const float* sp = scales && !int4 ? scales->data_ptr<float>() : nullptr;
  at::Tensor out = at::empty({M, N}, x.options().dtype(dtype));
#ifdef GEMV_BF16_DOT
  if (x.scalar_type() == at::kBFloat16 && weight.scalar_type() == at::kBFloat16 && K % 32 == 0) {
    RECORD_USER_SCOPE("ascend_nb::gemv bf16");
    at::Tensor xc = x.contiguous();
    if (dtype == at::kBFloat16) {
      dot_out(xc.data_ptr<at::BFloat16>(), weight.data_ptr<at::BFloat16>(), sp, out.data_ptr<at::BFloat16>(), M, K, N);
    } else {
      dot_out(xc.data_ptr<at::BFloat16>(), weight.data_ptr<at::BFloat16>(), sp, out.data_ptr<float>(), M, K, N);
    }
    return out;
  }
#endif
  std::vector<float> xbuf;
  const float* xf;
  at::Tensor xc = x.contiguous();
  if (x.scalar_type() == at::kFloat) {
    xf = xc.data_ptr<float>();
  } else {
    const at::BFloat16* xb = xc.data_ptr<at::BFloat16>();
    xbuf.assign(xb, xb + M * K);
    xf = xbuf.data();
  }
  // Each weight format is a profiler scope of its own, so a trace names the kernel each linear ran.
  if (int4 || int8_activations) {
    const bool bf16 = out.scalar_type() == at::kBFloat16;
    if (int4) {
      RECORD_USER_SCOPE("ascend_nb::gemv int4");
      const at::Half* hs = scales->data_ptr<at::Half>();
      const at::Half* hm = mins->data_ptr<at::Half>();
      const uint8_t* w = weight.data_ptr<uint8_t>();
      bf16 ? int4_gemv(xf, w, hs, hm, out.data_ptr<at::BFloat16>(), M, K, N)
           : int4_gemv(xf, w, hs, hm, out.data_ptr<float>(), M, K, N);
    } else {
      RECORD_USER_SCOPE("ascend_nb::gemv w8a8");
      const int8_t* w = weight.data_ptr<int8_t>();
      bf16 ? w8a8_gemv(xf, w, sp, out.data_ptr<at::BFloat16>(), M, K, N)
           : w8a8_gemv(xf, w, sp, out.data_ptr<float>(), M, K, N);
    }
    return out;
  }
  if (weight.scalar_type() == at::kBFloat16) {
    RECORD_USER_SCOPE("ascend_nb::gemv bf16");
    gemv_out(xf, weight.data_ptr<at::BFloat16>(), sp, out, M, K, N);
  } else {
    TORCH_CHECK(weight.scalar_type() == at::kChar, "gemv: weight must be bfloat16 or int8");
    RECORD_USER_SCOPE("ascend_nb::gemv int8");
    gemv_out(xf, weight.data_ptr<int8_t>(), sp, out, M, K, N);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ascend_nb, m) {
  m.def(GEMV_OP "(Tensor x, Tensor weight, Tensor? scales=None, ScalarType? out_dtype=None, Tensor? mins=None, "
                "bool int8_activations=False) -> Tensor");
  m.def(DEQUANT_LINEAR_OP "(Tensor x, Tensor weight, Tensor scales, Tensor? mins=None, bool amx=False) -> Tensor");
  m.def(W8A8_LINEAR_OP "(Tensor x, Tensor weight, Tensor scales) -> Tensor");
}
TORCH_LIBRARY_IMPL(ascend_nb, CPU, m) {
  m.impl(GEMV_OP, &gemv);
  m.impl(DEQUANT_LINEAR_OP, &dequant_linear);
  m.impl(W8A8_LINEAR_OP, &w8a8_linear);
}
