"""Memory-bound AVX2 GEMV for decoding on CPUs without native bf16 GEMM.

ATen's bf16 GEMV and ``_weight_int8pack_mm`` are compute-bound on AVX2 (about 4 GMAC/s a core);
decoding only needs to stream each weight once. ``torch.ops.ascend_nb.gemv(x, weight, scales)``
computes ``x @ weight.T`` (times ``scales`` per output channel when given) for a few rows ``x``
``[M, K]`` (M <= 8) against a bf16 or int8 ``weight`` ``[N, K]``: each weight vector is loaded
once, widened to float32 and multiplied into every row, with float32 accumulation, split over
output channels with ``at::parallel_for``. The op is compiled with the system C++ compiler at
first use (cached under ``$ASCEND_NB_HOME/kernels``) and registered as a torch custom op with a
fake implementation, so ``torch.compile`` graphs call it too. :func:`gemv_available` is False
(logged once) without AVX2/FMA or when the build fails; callers then keep ATen's kernels.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import tempfile

import torch

from ascend_nb.models.embedded import home

logger = logging.getLogger(__name__)

MAX_ROWS = 8

SOURCE = r"""
#include <immintrin.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>
#include <vector>

namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}

// Eight weights widened to float32: bf16 is the high half of a float32; int8 converts exactly.
inline __m256 load8(const at::BFloat16* w) {
  __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}
inline __m256 load8(const int8_t* w) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w))));
}

// R weight rows against M input rows (float32): R * M independent accumulator chains. The next
// block of rows is prefetched while this one is summed (rows are short: 1 to 3 KiB each).
template <int M, int R, typename W, typename T>
void rows(const float* x, const W* w, const float* scales, T* out, int64_t n0, int64_t n1, int64_t K, int64_t N) {
  const int64_t K8 = K - K % 8;
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    __m256 acc[R * M];
#pragma GCC unroll 32
    for (int i = 0; i < R * M; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8) {
      __m256 xs[M];
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) xs[m] = _mm256_loadu_ps(x + m * K + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const W* wk = w + (n + r) * K + k;
        _mm_prefetch(reinterpret_cast<const char*>(wk + R * K), _MM_HINT_T0);
        __m256 wv = load8(wk);
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m) acc[r * M + m] = _mm256_fmadd_ps(wv, xs[m], acc[r * M + m]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const W* wr = w + (n + r) * K;
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        float s = hsum(acc[r * M + m]);
        for (int64_t k = K8; k < K; ++k) s += static_cast<float>(wr[k]) * x[m * K + k];
        out[m * N + n + r] = static_cast<T>(scales ? s * scales[n + r] : s);
      }
    }
  }
  if (n < n1) rows<M, 1>(x, w, scales, out, n, n1, K, N);
}

template <int M, typename W, typename T>
void gemv_m(const float* x, const W* w, const float* scales, T* out, int64_t K, int64_t N) {
  constexpr int R = M == 1 ? 4 : (M == 2 ? 2 : 1);
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) { rows<M, R>(x, w, scales, out, n0, n1, K, N); });
}

template <typename W, typename T>
void gemv_w(const float* x, const W* w, const float* scales, T* out, int64_t M, int64_t K, int64_t N) {
  switch (M) {
    case 1: return gemv_m<1>(x, w, scales, out, K, N);
    case 2: return gemv_m<2>(x, w, scales, out, K, N);
    case 3: return gemv_m<3>(x, w, scales, out, K, N);
    case 4: return gemv_m<4>(x, w, scales, out, K, N);
    case 5: return gemv_m<5>(x, w, scales, out, K, N);
    case 6: return gemv_m<6>(x, w, scales, out, K, N);
    case 7: return gemv_m<7>(x, w, scales, out, K, N);
    default: return gemv_m<8>(x, w, scales, out, K, N);
  }
}

template <typename W>
void gemv_out(const float* x, const W* w, const float* scales, at::Tensor& out, int64_t M, int64_t K, int64_t N) {
  if (out.scalar_type() == at::kBFloat16) {
    gemv_w(x, w, scales, out.data_ptr<at::BFloat16>(), M, K, N);
  } else {
    gemv_w(x, w, scales, out.data_ptr<float>(), M, K, N);
  }
}

// x float32 or bfloat16 [M, K]; weight bfloat16 or int8 [N, K]; scales float32 [N] or none.
at::Tensor gemv(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& scales) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), "gemv: x [M, K], weight [N, K]");
  TORCH_CHECK(x.size(0) >= 1 && x.size(0) <= 8, "gemv: 1 to 8 rows");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "gemv: x float32 or bfloat16");
  TORCH_CHECK(weight.is_contiguous() && (!scales || (scales->is_contiguous() && scales->scalar_type() == at::kFloat)),
              "gemv: contiguous weight, float32 scales");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
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
  const float* sp = scales ? scales->data_ptr<float>() : nullptr;
  at::Tensor out = at::empty({M, N}, x.options());
  if (weight.scalar_type() == at::kBFloat16) {
    gemv_out(xf, weight.data_ptr<at::BFloat16>(), sp, out, M, K, N);
  } else {
    TORCH_CHECK(weight.scalar_type() == at::kChar, "gemv: weight must be bfloat16 or int8");
    gemv_out(xf, weight.data_ptr<int8_t>(), sp, out, M, K, N);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(ascend_nb, m) { m.def("gemv(Tensor x, Tensor weight, Tensor? scales=None) -> Tensor"); }
TORCH_LIBRARY_IMPL(ascend_nb, CPU, m) { m.impl("gemv", &gemv); }
"""


def _cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return False
    return {"avx2", "fma"} <= flags


def _build() -> str:
    """Compile :data:`SOURCE` into a shared library (cached by source and torch version); its path."""
    from torch.utils.cpp_extension import include_paths, library_paths

    key = hashlib.sha256((SOURCE + torch.__version__).encode()).hexdigest()[:16]
    directory = home() / "kernels"
    library = directory / f"ascend_nb_gemv_{key}.so"
    if library.exists():
        return str(library)
    directory.mkdir(parents=True, exist_ok=True)
    lib_dirs = library_paths()
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        src, out = os.path.join(tmp, "gemv.cpp"), os.path.join(tmp, "gemv.so")
        with open(src, "w") as f:
            f.write(SOURCE)
        command = ["c++", src, "-o", out, "-shared", "-fPIC", "-O3", "-std=c++17", "-mavx2", "-mfma", "-fopenmp",
                   f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
                   *(f"-I{p}" for p in include_paths()), *(f"-L{p}" for p in lib_dirs),
                   *(f"-Wl,-rpath,{p}" for p in lib_dirs), "-ltorch", "-ltorch_cpu", "-lc10"]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
        os.replace(out, library)
    return str(library)


@functools.cache
def gemv_available() -> bool:
    """Whether ``torch.ops.ascend_nb.gemv`` is loaded (AVX2 + FMA CPU and a successful build)."""
    if not _cpu_has_avx2():
        logger.info("AVX2 GEMV kernels off: this CPU lacks AVX2/FMA")
        return False
    try:
        torch.ops.load_library(_build())
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        logger.warning("AVX2 GEMV kernels off, using ATen's (build failed: %s)", str(detail)[-500:])
        return False

    @torch.library.register_fake("ascend_nb::gemv")
    def _(x, weight, scales=None):
        return x.new_empty(x.shape[0], weight.shape[0])

    return True


def gemv(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T`` (``* scales`` per output channel) for ``x`` ``[..., K]`` with at most 8 rows."""
    out = torch.ops.ascend_nb.gemv(x.reshape(-1, x.shape[-1]), weight, scales)
    return out.view(*x.shape[:-1], weight.shape[0])
