// One decode step's attention on CPUs in one op: from the fused q/k/v projection of each row, rotate q
// and k (rotate_half convention), write k and v into the cache slot, and attend the first `span` slots
// the key mask allows (grouped-query: query head h reads kv head h / (heads / kv_heads)). In PyTorch this
// is about twenty small ops a layer; here it is one.
//
// Numerics follow the plain-PyTorch twin: the rotary products and their sum are rounded to the input
// dtype T as `x * cos + rotate_half(x) * sin` is in T; scores, softmax and the weighted sum of values run
// in float32 (as SDPA's CPU kernel does), the output is rounded to T once.
//
// Included by each ISA's translation unit after gemv.h (whose `struct Vec` registers and `load` it uses), with
// DECODE_ATTENTION_OP defined; compiled with that unit's flags.
#pragma once

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <immintrin.h>

#include "lane_sum.h"

namespace {

// lane_tree of lane_sum.h on partial sums 0-7 (p[i] += p[i + 4], p[i + 2], p[i + 1]).
inline float tree8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// lane_sum's 16 partial sums, in one AVX-512 register or two AVX2 ones, summed as lane_tree sums them.
inline float tree16(const typename Vec::reg* part) {
#ifdef __AVX512F__
  const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(part[0]), 1));
  return tree8(_mm256_add_ps(_mm512_castps512_ps256(part[0]), high));
#else
  return tree8(_mm256_add_ps(part[0], part[1]));
#endif
}

// The sums below take the same products and sums in the same order for every head size; kD is the head size
// when it is 64 or 128, known at compile time so the partial sums live in registers (the compiler's own
// vectorization of the general loops spilled lane_sum's partial sums in pieces and reloaded them whole, a
// store-forwarding stall on every key, and kept the value sums in memory around each expf call: 1.8x the time),
// else 0 (the general loops over D).

// q . k as lane_sum sums it.
template <int64_t kD, typename T>
float dot(const float* q, const T* k, int64_t D) {
  if constexpr (kD == 0) {
    return lane_sum(D, [&](int64_t d) { return q[d] * static_cast<float>(k[d]); });
  } else {
    constexpr int R = kLanes / Vec::width;
    typename Vec::reg part[R];
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) part[r] = Vec::zero();
#pragma GCC unroll 16
    for (int64_t d = 0; d < kD; d += kLanes) {
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        part[r] = Vec::add(part[r], Vec::mul(Vec::loadx(q + d + r * Vec::width), load(k + d + r * Vec::width)));
      }
    }
    return tree16(part);
  }
}

// acc = the sum over the allowed keys j, in order, of p[j] * v_j.
template <int64_t kD, typename T>
void weighted_values(const float* p, const bool* valid, const T* values, int64_t seen, int64_t D, float* acc) {
  if constexpr (kD == 0) {
    std::fill(acc, acc + D, 0.0f);
    for (int64_t j = 0; j < seen; ++j) {
      if (!valid[j]) continue;
      const T* v = values + j * D;
      for (int64_t d = 0; d < D; ++d) acc[d] += p[j] * static_cast<float>(v[d]);
    }
  } else {
    constexpr int64_t regs = kD / Vec::width;
    typename Vec::reg sums[regs];
#pragma GCC unroll 16
    for (int64_t i = 0; i < regs; ++i) sums[i] = Vec::zero();
    for (int64_t j = 0; j < seen; ++j) {
      if (!valid[j]) continue;
      const typename Vec::reg weight = Vec::set1(p[j]);
      const T* v = values + j * kD;
#pragma GCC unroll 16
      for (int64_t i = 0; i < regs; ++i) sums[i] = Vec::add(sums[i], Vec::mul(weight, load(v + i * Vec::width)));
    }
#pragma GCC unroll 16
    for (int64_t i = 0; i < regs; ++i) Vec::store(acc + i * Vec::width, sums[i]);
  }
}

// One query head over the first `seen` slots: scores (times scale; -inf where not allowed), their exponentials
// after the maximum's subtraction (in place, all before the weighted sum), the weighted values into acc; returns
// the exponentials' sum.
template <int64_t kD, typename T>
float attend_head(const float* q, const T* keys, const T* values, const bool* valid, int64_t seen, int64_t D,
                  float scale, float* scores, float* acc) {
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < seen; ++j) {
    scores[j] = valid[j] ? dot<kD>(q, keys + j * D, D) * scale : -std::numeric_limits<float>::infinity();
    top = std::max(top, scores[j]);
  }
  float total = 0.0f;
  for (int64_t j = 0; j < seen; ++j) {
    if (!valid[j]) continue;
    scores[j] = std::exp(scores[j] - top);
    total += scores[j];
  }
  weighted_values<kD>(scores, valid, values, seen, D, acc);
  return total;
}

// out[d] = T(T(x[d] * cos[d]) + T(rotate_half(x)[d] * sin[d])), rotate_half(x) = (-x[D/2:], x[:D/2]).
template <typename T>
void rotate(const T* x, const T* cos, const T* sin, T* out, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t d = 0; d < D; ++d) {
    const float rotated = d < half ? -static_cast<float>(x[d + half]) : static_cast<float>(x[d - half]);
    const T a = static_cast<T>(static_cast<float>(x[d]) * static_cast<float>(cos[d]));
    const T b = static_cast<T>(rotated * static_cast<float>(sin[d]));
    out[d] = static_cast<T>(static_cast<float>(a) + static_cast<float>(b));
  }
}

// Rows b < B of one step of B sequences (cache row b, slot `slot`, `span` slots), or with `sequence` B consecutive
// positions of one sequence (cache row 0, slot `slot + b`, `span + b` slots: causal among them).
template <typename T>
void attend_rows(const T* qkv, const T* cos, const T* sin, T* k_cache, T* v_cache, int64_t slot,
                 const bool* key_valid, T* out, int64_t B, int64_t S, int64_t span, int64_t heads, int64_t kv_heads,
                 int64_t D, float scale, bool sequence) {
  const int64_t width = (heads + 2 * kv_heads) * D, group = heads / kv_heads;
  auto cache_row = [&](int64_t b) { return sequence ? 0 : b; };
  auto step = [&](int64_t b) { return sequence ? b : 0; };
  for (int64_t b = 0; b < B; ++b) {  // the new keys and values first: this step attends its own slot
    const T* row = qkv + b * width;
    for (int64_t g = 0; g < kv_heads; ++g) {
      const int64_t at = ((cache_row(b) * kv_heads + g) * S + slot + step(b)) * D;
      rotate(row + (heads + g) * D, cos + b * D, sin + b * D, k_cache + at, D);
      std::copy(row + (heads + kv_heads + g) * D, row + (heads + kv_heads + g + 1) * D, v_cache + at);
    }
  }
  float (*const head)(const float*, const T*, const T*, const bool*, int64_t, int64_t, float, float*, float*) =
      D == 64 ? attend_head<64, T> : (D == 128 ? attend_head<128, T> : attend_head<0, T>);
  at::parallel_for(0, B * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> q(D), acc(D), scores(span + (sequence ? B - 1 : 0));
    std::vector<T> rotated(D);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / heads, h = bh % heads, g = h / group;
      rotate(qkv + b * width + h * D, cos + b * D, sin + b * D, rotated.data(), D);
      for (int64_t d = 0; d < D; ++d) q[d] = static_cast<float>(rotated[d]);
      const T* keys = k_cache + (cache_row(b) * kv_heads + g) * S * D;
      const T* values = v_cache + (cache_row(b) * kv_heads + g) * S * D;
      const bool* valid = key_valid + cache_row(b) * S;
      const int64_t seen = span + step(b);
      const float total = head(q.data(), keys, values, valid, seen, D, scale, scores.data(), acc.data());
      T* o = out + (b * heads + h) * D;
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(acc[d] / total);
    }
  });
}

// qkv [B, (heads + 2 kv_heads) * D]; cos, sin [B, D]; k_cache, v_cache [B, kv_heads, S, D] (contiguous);
// index: int64 [1], the slot to write; key_valid bool [B, S] (the slot already marked); out [B, heads * D].
// With `sequence` the B rows are consecutive positions of one sequence (caches [1, kv_heads, S, D], key_valid
// [1, S] with all B slots marked): row b writes slot index + b and attends span + b slots, each row what a
// one-row step at its position attends.
at::Tensor decode_attention(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, at::Tensor k_cache,
                            at::Tensor v_cache, const at::Tensor& index, const at::Tensor& key_valid, int64_t span,
                            int64_t heads, int64_t kv_heads, double scale, bool sequence) {
  const at::ScalarType dtype = qkv.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "decode_attention: float32 or bfloat16");
  TORCH_CHECK(cos.scalar_type() == dtype && sin.scalar_type() == dtype && k_cache.scalar_type() == dtype &&
                  v_cache.scalar_type() == dtype, "decode_attention: one dtype for qkv, cos, sin and the caches");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  v_cache.sizes() == k_cache.sizes(), "decode_attention: contiguous caches [B, kv_heads, S, D]");
  const int64_t S = k_cache.size(2), D = k_cache.size(3);
  const int64_t B = sequence ? qkv.numel() / ((heads + 2 * kv_heads) * D) : k_cache.size(0);
  TORCH_CHECK(k_cache.size(1) == kv_heads && heads % kv_heads == 0 && D % 2 == 0, "decode_attention: head counts");
  TORCH_CHECK(!sequence || k_cache.size(0) == 1, "decode_attention: one sequence's caches [1, kv_heads, S, D]");
  TORCH_CHECK(qkv.numel() == B * (heads + 2 * kv_heads) * D && cos.numel() == B * D && sin.numel() == B * D,
              "decode_attention: qkv [B, (heads + 2 kv_heads) * D], cos and sin [B, D]");
  TORCH_CHECK(key_valid.scalar_type() == at::kBool && key_valid.dim() == 2 && key_valid.size(0) == k_cache.size(0) &&
                  key_valid.size(1) == S, "decode_attention: key_valid bool [B, S]");
  const int64_t slot = index.item<int64_t>(), last = sequence ? B - 1 : 0;
  TORCH_CHECK(0 <= slot && slot < span && span + last <= S, "decode_attention: slot < span <= S");
  at::Tensor q = qkv.contiguous(), c = cos.contiguous(), s = sin.contiguous(), valid = key_valid.contiguous();
  at::Tensor out = at::empty({B, heads * D}, qkv.options());
  const float sc = static_cast<float>(scale);
  if (dtype == at::kFloat) {
    attend_rows(q.data_ptr<float>(), c.data_ptr<float>(), s.data_ptr<float>(), k_cache.data_ptr<float>(),
                v_cache.data_ptr<float>(), slot, valid.data_ptr<bool>(), out.data_ptr<float>(), B, S, span, heads,
                kv_heads, D, sc, sequence);
  } else {
    attend_rows(q.data_ptr<at::BFloat16>(), c.data_ptr<at::BFloat16>(), s.data_ptr<at::BFloat16>(),
                k_cache.data_ptr<at::BFloat16>(), v_cache.data_ptr<at::BFloat16>(), slot, valid.data_ptr<bool>(),
                out.data_ptr<at::BFloat16>(), B, S, span, heads, kv_heads, D, sc, sequence);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ascend_nb, m) {
  m.def(DECODE_ATTENTION_OP "(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) v_cache, "
                            "Tensor index, Tensor key_valid, int span, int heads, int kv_heads, float scale, "
                            "bool sequence=False) -> Tensor");
}
TORCH_LIBRARY_IMPL(ascend_nb, CPU, m) { m.impl(DECODE_ATTENTION_OP, &decode_attention); }
