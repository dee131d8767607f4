// Prompt linears of int8 / int4 weights on AMX (included by quant_gemv.h in the AVX512-BF16 build where the
// compiler knows AMX: GCC 11+, clang 12+; only the functions marked AMX_TARGET use it, so the rest of the build,
// and older compilers, need no AMX flag).
//
// dequant_linear's tiles write each dequantized weight to a 16 MB buffer and hand it to oneDNN, which reorders
// it again for its own AMX kernel: twice the weight's bytes through the caches on top of the GEMM. Here a block
// of 32 weight rows is widened to bf16 into a buffer of this thread (in L2), and AMX multiplies it from there:
//
//   out^T = W x^T by blocks of 32 weight rows x 32 prompt rows: tiles 0-3 hold the float32 sums of 16 weight
//   rows x 16 prompt rows, tiles 4-5 two 16-row slices of the bf16 weight block (32 k values a row), tiles 6-7
//   the prompt rows' k pairs in AMX's VNNI order (x^T, rearranged once per call).
//
// Each product is exact and summed in float32 (TDPBF16PS), as a bf16 GEMM sums; the output is rounded as
// dequant_linear rounds it (bf16, then times the int8 scale rounded to bf16).
#pragma once

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>

#include "kept_buffer.h"

#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16")))

namespace {

constexpr int64_t kAmxRows = 16;  // rows of a tile
constexpr int64_t kAmxK = 32;     // bf16 values in a tile row (64 bytes)

// Whether this process may use AMX tiles: Linux grants the tile state on request, once per process.
inline bool amx_permitted() {
  static const bool permitted = [] {
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return permitted;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// A 16 x 16 float32 tile transposed in registers (rows in t[0..15]).
inline void transpose16(__m512 t[16]) {
  __m512 u[16];
  for (int i = 0; i < 16; i += 2) {
    u[i] = _mm512_unpacklo_ps(t[i], t[i + 1]);
    u[i + 1] = _mm512_unpackhi_ps(t[i], t[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    t[i] = _mm512_shuffle_ps(u[i], u[i + 2], 0x44);
    t[i + 1] = _mm512_shuffle_ps(u[i], u[i + 2], 0xEE);
    t[i + 2] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0x44);
    t[i + 3] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    u[i] = _mm512_shuffle_f32x4(t[i], t[i + 4], 0x88);
    u[i + 4] = _mm512_shuffle_f32x4(t[i], t[i + 4], 0xDD);
    u[i + 8] = _mm512_shuffle_f32x4(t[i + 8], t[i + 12], 0x88);
    u[i + 12] = _mm512_shuffle_f32x4(t[i + 8], t[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(u[i], u[i + 8], 0x88);
    t[i + 8] = _mm512_shuffle_f32x4(u[i], u[i + 8], 0xDD);
    t[i + 4] = _mm512_shuffle_f32x4(u[i + 4], u[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(u[i + 4], u[i + 12], 0xDD);
  }
}

// x [M, K] bf16 as AMX B tiles, for each 16-row block of x and each 32-wide k step one 1 KB tile whose row r
// holds (x[m][k + 2r], x[m][k + 2r + 1]) for the block's 16 rows m: a 16 x 16 transpose of 32-bit pairs, done in
// registers. Rows past M are zero (M is padded to 32). The buffer is this thread's, kept between calls.
inline const uint32_t* vnni_rows(const at::BFloat16* x, int64_t M, int64_t padded, int64_t K) {
  const int64_t steps = K / kAmxK;
  thread_local KeptBuffer<uint32_t> tiles;
  uint32_t* const kept = tiles.get(padded * K / 2);  // (inside the workers, `tiles` would name their own buffer)
  const float* pairs = reinterpret_cast<const float*>(x);  // row m's k pair p at m * K / 2 + p, moved as 32 bits
  float* data = reinterpret_cast<float*>(kept);
  at::parallel_for(0, padded / kAmxRows * steps, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / steps, s = t % steps;
      __m512 rows[16];
      for (int64_t j = 0; j < kAmxRows; ++j) {
        const int64_t m = b * kAmxRows + j;
        rows[j] = m < M ? _mm512_loadu_ps(pairs + m * (K / 2) + s * kAmxRows) : _mm512_setzero_ps();
      }
      transpose16(rows);
      for (int64_t r = 0; r < kAmxRows; ++r) _mm512_storeu_ps(data + (t * kAmxRows + r) * kAmxRows, rows[r]);
    }
  });
  return kept;
}

// bf16 of v (round to nearest even), 16 lanes.
inline __m256i to_bf16(__m512 v) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)); }

// One float32 sum tile (16 weight rows n0.. x 16 prompt rows m0..) into out [M, N] bf16: rounded to bf16, then
// times each output column's scale (already rounded to bf16, widened) and rounded again where there are scales.
inline void store_sums(const float* sums, const float* scales, at::BFloat16* out, int64_t m0, int64_t n0, int64_t M,
                       int64_t N) {
  __m512 t[16];
  for (int i = 0; i < 16; ++i) t[i] = _mm512_loadu_ps(sums + i * 16);
  transpose16(t);  // t[j]: prompt row m0 + j, its 16 outputs n0..
  const int64_t valid = std::min<int64_t>(16, N - n0);
  const __mmask16 mask = valid == 16 ? 0xFFFF : static_cast<__mmask16>((1u << valid) - 1);
  const __m512 s = scales ? _mm512_maskz_loadu_ps(mask, scales + n0) : _mm512_setzero_ps();
  for (int64_t j = 0; j < 16 && m0 + j < M; ++j) {
    __m256i r = to_bf16(t[j]);
    if (scales) {
      const __m512 widened = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(r), 16));
      r = to_bf16(_mm512_mul_ps(widened, s));
    }
    _mm512_mask_storeu_epi16(out + (m0 + j) * N + n0, static_cast<__mmask32>(mask), _mm512_castsi256_si512(r));
  }
}

// This thread's 8 tiles of 16 rows x 64 bytes, loaded before its first block, released after its last.
AMX_TARGET inline void amx_begin() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = kAmxRows;
    config.colsb[t] = 64;
  }
  // GCC 12 dropped the stores above in this target-attribute function, as if LDTILECFG did not read them (a
  // SIGILL at the first tile instruction): a compiler barrier makes them happen first
  __asm__ __volatile__("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
}

AMX_TARGET inline void amx_end() { _tile_release(); }

// One block of `rows` (<= 32) widened weight rows w (row stride ld, zero past `rows`) times every prompt row of
// xt (`padded` rows, `steps` k steps of 32), into out's columns n0 ..
AMX_TARGET inline void amx_block(const at::BFloat16* w, int64_t ld, const uint32_t* xt, int64_t padded, int64_t steps,
                                 const float* scales, at::BFloat16* out, int64_t n0, int64_t rows, int64_t M, int64_t N) {
  alignas(64) float sums[4][kAmxRows * kAmxRows];
  for (int64_t mb = 0; mb < padded / kAmxRows; mb += 2) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint32_t* x0 = xt + mb * steps * kAmxRows * kAmxRows;
    const uint32_t* x1 = x0 + steps * kAmxRows * kAmxRows;
    for (int64_t s = 0; s < steps; ++s) {
      _tile_loadd(4, w + s * kAmxK, ld * 2);
      _tile_loadd(5, w + 16 * ld + s * kAmxK, ld * 2);
      _tile_loadd(6, x0 + s * kAmxRows * kAmxRows, 64);
      _tile_loadd(7, x1 + s * kAmxRows * kAmxRows, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, sums[0], 64);
    _tile_stored(1, sums[1], 64);
    _tile_stored(2, sums[2], 64);
    _tile_stored(3, sums[3], 64);
    const int64_t m0 = mb * kAmxRows;
    store_sums(sums[0], scales, out, m0, n0, M, N);
    store_sums(sums[1], scales, out, m0 + 16, n0, M, N);
    if (rows > 16) {
      store_sums(sums[2], scales, out, m0, n0 + 16, M, N);
      store_sums(sums[3], scales, out, m0 + 16, n0 + 16, M, N);
    }
  }
}

// out [M, N] bf16 = x [M, K] bf16 times the int8 / int4 weight [N, K] as dequantize_rows widens it (K a multiple
// of 32); `scales` (float32 [N], each rounded to bf16) for int8, null for int4.
template <typename Dequantize>
void amx_linear(const at::BFloat16* x, int64_t M, int64_t N, int64_t K, Dequantize dequantize, const float* scales,
                at::BFloat16* out) {
  const int64_t padded = (M + 31) / 32 * 32, steps = K / kAmxK;
  const uint32_t* xt = vnni_rows(x, M, padded, K);
  at::parallel_for(0, (N + 31) / 32, 1, [&](int64_t b0, int64_t b1) {
    amx_begin();
    // the weight block, widened; rows 64 bytes longer than K values, as a power-of-two stride (K = 2048, 4096) put
    // a tile's 16 rows in one set of the L1 cache (measured: 1.4x bf16's time at K = 2048 against 1.1x at 1536)
    const int64_t ld = K + kAmxK;
    thread_local KeptBuffer<at::BFloat16> block;
    at::BFloat16* const w = block.get(32 * ld);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n0 = b * 32, rows = std::min<int64_t>(32, N - n0);
      dequantize(w, ld, n0, rows);
      if (rows < 32) std::fill(w + rows * ld, w + 32 * ld, at::BFloat16(0.0f));
      amx_block(w, ld, xt, padded, steps, scales, out, n0, rows, M, N);
    }
    amx_end();
  });
}

}  // namespace
