// RMSNorm for decoding on CPUs in one pass per row, with the numerics of transformers' Llama:
// y = weight * T(x * rsqrt(mean(x^2) + eps)), the mean in float32, T the input dtype (bf16 or float32).
// ATen runs the same formula as six ops (about 40 us a call for one short row, all dispatch); here it is
// one. Sums of squares use 16 float32 partial sums, so a sum can differ from ATen's in its last bit.
//
// Included by each ISA's translation unit after it defines RMS_NORM_OP (the op's name); the loops are
// vectorized by the compiler with that unit's flags.
#pragma once

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <cmath>

#include "lane_sum.h"

namespace {

template <typename T>
void rms_norm_rows(const T* x, const T* weight, T* out, int64_t m0, int64_t m1, int64_t K, float eps) {
  for (int64_t m = m0; m < m1; ++m) {
    const T* xr = x + m * K;
    T* yr = out + m * K;
    const float sum = lane_sum(K, [&](int64_t k) {
      const float v = static_cast<float>(xr[k]);
      return v * v;
    });
    const float scale = 1.0f / std::sqrt(sum / static_cast<float>(K) + eps);
    for (int64_t j = 0; j < K; ++j) {
      const T normed = static_cast<T>(static_cast<float>(xr[j]) * scale);  // rounded to T, as transformers does
      yr[j] = static_cast<T>(static_cast<float>(weight[j]) * static_cast<float>(normed));
    }
  }
}

// x float32 or bfloat16 [..., K]; weight [K] of the same dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "rms_norm: x and weight of one dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "rms_norm: float32 or bfloat16");
  const int64_t K = x.size(-1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == K, "rms_norm: weight [K] for x [..., K]");
  at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor out = at::empty_like(xc);
  const int64_t M = K ? xc.numel() / K : 0;
  const float e = static_cast<float>(eps);
  at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
    if (xc.scalar_type() == at::kFloat) {
      rms_norm_rows(xc.data_ptr<float>(), wc.data_ptr<float>(), out.data_ptr<float>(), m0, m1, K, e);
    } else {
      rms_norm_rows(xc.data_ptr<at::BFloat16>(), wc.data_ptr<at::BFloat16>(), out.data_ptr<at::BFloat16>(), m0, m1,
                    K, e);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ascend_nb, m) { m.def(RMS_NORM_OP "(Tensor x, Tensor weight, float eps) -> Tensor"); }
TORCH_LIBRARY_IMPL(ascend_nb, CPU, m) { m.impl(RMS_NORM_OP, &rms_norm); }
