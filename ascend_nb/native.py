"""Native CPU kernels built from ascend_nb/csrc: memory-bound GEMV custom ops ``torch.ops.ascend_nb.gemv_<isa>``
(bf16, int8, w8a8 and int4 weights; ``quant_gemv.h``), the prompt GEMMs of quantized weights
``dequant_linear_<isa>`` and ``w8a8_linear_<isa>``, a one-pass RMSNorm ``rms_norm_<isa>``, one decode step's attention
``decode_attention_<isa>`` and a whole decoder layer of a decode step ``decode_layer_<isa>`` (those ops and
ATen's add/SiLU/mul, called from C++).

ATen's bf16 GEMV and ``_weight_int8pack_mm`` are compute-bound on a CPU without native bf16
(about 4 GMAC/s a core on AVX2); decoding only needs to stream each weight once. The sources are
the headers in ``ascend_nb/csrc/`` (``gemv.h``, ``rms_norm.h``, ``decode_attention.h``, ``decode_layer.h``)
and one file per instruction set that includes them all (``cpu_kernels_avx2.cpp``, ``cpu_kernels_avx512.cpp``,
``cpu_kernels_avx512bf16.cpp``: bf16 dot products), each built into its own library ``ascend_nb_cpu_<isa>`` by
``torch.utils.cpp_extension`` (ninja, under a file lock, cached under ``$ASCEND_NB_HOME/kernels`` with a
checksum) and loaded only on a CPU that has the instruction set. The RMSNorm and the decode attention replace
about six and twenty small ATen ops
(each a few microseconds of dispatch, which add up to milliseconds per decode step) by one each, and
the decode layer the Python between a layer's ops.
``ascend-nb fetch`` (so ``make lab`` / ``make test``) builds them at set-up;
a first use builds what is missing. Each op has a fake implementation, so ``torch.compile``
graphs call it too. Without a compiler :func:`load_native` is False and says which path is slower.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

from ascend_nb.errors import AscendNbError
from ascend_nb.atomic import file_lock, sha256_file
from ascend_nb.files import atomic_write_text, cache_home as home

logger = logging.getLogger(__name__)

MAX_ROWS = 8
CSRC = Path(__file__).resolve().parent / "csrc"
CACHE_FORMAT = "2"  # libraries with a checksum beside them; older builds are not looked at
# instruction set -> (source file, compiler flags)
ISAS = {"avx2": ("cpu_kernels_avx2.cpp", ["-mavx2", "-mfma", "-mf16c"]),
        "avx512": ("cpu_kernels_avx512.cpp", ["-mavx512f", "-mavx512bw", "-mfma", "-mf16c"]),
        "avx512bf16": ("cpu_kernels_avx512bf16.cpp", ["-mavx512f", "-mavx512bw", "-mavx512bf16", "-mavx512vnni",
                                                      "-mfma", "-mf16c"])}


def _cflags(isa: str) -> list[str]:
    # -ffp-contract=off: no FMA the source does not ask for, so a product is rounded as the PyTorch twin rounds it
    return ["-O3", "-std=c++17", "-fopenmp", "-ffp-contract=off", *ISAS[isa][1]]


def build_dir(isa: str) -> Path:
    """Where the ``<isa>`` library of these exact sources, flags and torch version is built and cached."""
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    for part in (torch.__version__, *_cflags(isa), *(path.read_bytes() for path in sorted(CSRC.glob("*.[ch]*")))):
        digest.update(part if isinstance(part, bytes) else part.encode())
    return home() / "kernels" / f"{isa}-{digest.hexdigest()[:16]}"


def _build(isa: str) -> None:
    """Load the ``<isa>`` library of native kernels, compiling it first when no intact library of these exact sources, flags and
    torch version exists yet. The build directory is named by a hash of all three, so every checkout
    with the same sources shares one build and a loaded library is never rebuilt underneath a process.

    A library is intact when it matches the sha256 written beside it after its build: a truncated one
    would crash the process (SIGBUS) rather than fail to load, so it is never handed to the loader. A
    lock per build directory keeps a second process from loading, or discarding, a library being built."""
    name, directory = f"ascend_nb_cpu_{isa}", build_dir(isa)
    library = directory / f"{name}.so"
    checksum = library.with_name(library.name + ".sha256")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(directory.parent / f".{directory.name}.lock"):
        if checksum.is_file() and library.is_file() and sha256_file(library) == checksum.read_text().strip():
            torch.ops.load_library(str(library))
            return
        if directory.exists():
            if library.is_file():
                logger.warning("the cached %s kernels in %s are damaged (they no longer match their checksum): "
                               "building them again", isa, directory)
            _discard(directory)  # what a damaged or interrupted build left
        _compile(name, ISAS[isa][0], _cflags(isa), directory)
        atomic_write_text(checksum, sha256_file(library) + "\n")


def _compile(name: str, source: str, cflags: list[str], build_dir: Path) -> None:
    """Compile ``source`` into ``build_dir/<name>.so`` with ninja and load it."""
    from torch.utils.cpp_extension import load

    build_dir.mkdir(parents=True)
    # the `ninja` this environment installed (a dependency), also when its bin/ is not on PATH
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    load(name=name, sources=[str(CSRC / source)], extra_include_paths=[str(CSRC)], extra_cflags=cflags,
         extra_ldflags=["-fopenmp"], build_directory=str(build_dir), is_python_module=False, verbose=False)


def _discard(build_dir: Path) -> None:
    """Move a broken build out of the way (one rename: no half-deleted folder under its name), then delete it."""
    aside = build_dir.with_name(f".{build_dir.name}.broken-{os.getpid()}")
    os.replace(build_dir, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1][-300:] if lines else type(exc).__name__


_FAILURES: dict[str, str] = {}


def failure(isa: str) -> str | None:
    """Why the native kernels for ``isa`` could not be built or loaded here (None: they were, or were not tried)."""
    return _FAILURES.get(isa)


@functools.cache
def load_native(isa: str) -> bool:
    """Build (once per machine) and load the native kernels for ``isa``; False, with one warning, if that fails
    (:func:`failure` then says why). A cached library that no longer matches its checksum is built again first.

    The caller checks that the CPU has the instruction set (see :mod:`ascend_nb.device`).
    """
    try:
        _build(isa)
    except (OSError, RuntimeError, ImportError, AscendNbError) as exc:  # no compiler / ninja, a failed build, no cache
        _FAILURES[isa] = _last_line(exc)
        logger.warning("the %s native kernels could not be built (%s): decoding takes the slower ATen path",
                       isa, _FAILURES[isa])
        return False

    @torch.library.register_fake(f"ascend_nb::gemv_{isa}")
    def _(x, weight, scales=None, out_dtype=None, mins=None, int8_activations=False):
        return x.new_empty(x.shape[0], weight.shape[0], dtype=out_dtype or x.dtype)

    @torch.library.register_fake(f"ascend_nb::dequant_linear_{isa}")
    def _(x, weight, scales, mins=None, amx=False):
        return x.new_empty(*x.shape[:-1], weight.shape[0])

    @torch.library.register_fake(f"ascend_nb::w8a8_linear_{isa}")
    def _(x, weight, scales):
        return x.new_empty(*x.shape[:-1], weight.shape[0])

    @torch.library.register_fake(f"ascend_nb::rms_norm_{isa}")
    def _(x, weight, eps):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake(f"ascend_nb::decode_attention_{isa}")
    def _(qkv, cos, sin, k_cache, v_cache, index, key_valid, span, heads, kv_heads, scale):
        return qkv.new_empty(k_cache.shape[0], heads * k_cache.shape[-1])

    @torch.library.register_fake(f"ascend_nb::decode_layer_{isa}")
    def _(h, *weights_and_attention):
        return torch.empty_like(h, memory_format=torch.contiguous_format)

    return True


def int4_int8_dot(isa: str) -> bool:
    """Whether the ``<isa>`` build decodes int4 on the integer-dot path (built with VNNI: activations quantized to
    int8 per group of 32, see ``quant_gemv.h``) rather than in float32."""
    return "-mavx512vnni" in ISAS[isa][1]


def gemv(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor | None = None, isa: str = "avx2",
         out_dtype: torch.dtype | None = None, mins: torch.Tensor | None = None, int8_activations: bool = False
         ) -> torch.Tensor:
    """``x @ weight.T`` for ``x`` ``[..., K]`` with at most 8 rows, through the loaded ``gemv_<isa>`` op:
    bf16 weights; int8 weights ``* scales`` per output channel (``int8_activations``: w8a8, each row of ``x``
    quantized to int8 per token, exact integer dots); uint8 int4 weights ``[N, K/2]`` with their float16
    ``scales`` and ``mins`` (see :class:`~ascend_nb.engine.accelerated.quantize.Int4Weight`; on a build with VNNI
    through int8 activations per group, :func:`int4_int8_dot`). ``out_dtype``
    float32 keeps the float32 accumulator."""
    op = getattr(torch.ops.ascend_nb, f"gemv_{isa}")
    out = op(x.reshape(-1, x.shape[-1]), weight, scales, out_dtype, mins, int8_activations)
    return out.view(*x.shape[:-1], weight.shape[0])


def dequant_linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor | None = None,
                   isa: str = "avx2", amx: bool = False) -> torch.Tensor:
    """``x @ W.T`` for a prompt (any number of rows) with int8 (``scales`` float32, applied to the output in
    ``x``'s dtype) or int4 weights (``scales``/``mins`` float16): tiles of weight rows dequantized into a
    cache-sized buffer and multiplied by ATen's GEMM (``dequant_linear_<isa>``), never the whole weight at once.
    ``amx`` (a CPU with AMX-BF16; the ``avx512bf16`` build): bf16 prompts widen blocks of 32 weight rows in the
    cache and multiply them by AMX tiles instead (``csrc/amx_linear.h``)."""
    return getattr(torch.ops.ascend_nb, f"dequant_linear_{isa}")(x, weight, scales, mins, amx)


def w8a8_linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, isa: str = "avx2") -> torch.Tensor:
    """``w8a8``'s ``x @ W.T`` for any number of rows (``w8a8_linear_<isa>``): each row of ``x`` quantized to int8 per
    token in C++, ATen's int8 GEMM (``torch._int_mm``), then both scales (float32 ``scales`` per output channel):
    bit for bit :class:`~ascend_nb.engine.accelerated.kernels.W8A8Linear`, one op instead of ten."""
    return getattr(torch.ops.ascend_nb, f"w8a8_linear_{isa}")(x, weight, scales)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, isa: str = "avx2") -> torch.Tensor:
    """``weight * (x * rsqrt(mean(x**2) + eps))`` over the last dimension of a float32 or bfloat16 ``x``
    (the normed value rounded to ``x``'s dtype first, as transformers does), through ``rms_norm_<isa>``."""
    return getattr(torch.ops.ascend_nb, f"rms_norm_{isa}")(x, weight, eps)


def decode_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, index: torch.Tensor, key_valid: torch.Tensor, span: int, heads: int,
                     kv_heads: int, scale: float, isa: str = "avx2") -> torch.Tensor:
    """One decode step's attention through ``decode_attention_<isa>``: ``qkv`` ``[B, (heads + 2 kv_heads) * D]``
    (the fused projection), ``cos``/``sin`` ``[B, D]``; rotates q and k, writes k and v into slot ``index`` of the
    contiguous caches ``[B, kv_heads, S, D]``, attends the first ``span`` slots ``key_valid`` ``[B, S]`` allows;
    returns ``[B, heads * D]``."""
    op = getattr(torch.ops.ascend_nb, f"decode_attention_{isa}")
    return op(qkv, cos, sin, k_cache, v_cache, index, key_valid, span, heads, kv_heads, scale)


def decode_layer(h: torch.Tensor, weights: tuple, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                 v_cache: torch.Tensor, index: torch.Tensor, key_valid: torch.Tensor, span: int, heads: int,
                 kv_heads: int, eps: float, scale: float, isa: str = "avx2", sequence: bool = False) -> torch.Tensor:
    """One decoder layer of a decode step through ``decode_layer_<isa>``: ``h`` ``[B, H]``; ``weights`` =
    ``(input_norm, *qkv, *o, post_norm, *gate_up, *down)``, each linear as ``(weight, scales, mins,
    int8_activations)`` as :func:`gemv` takes them; the rest as :func:`decode_attention`. ``sequence``: the rows
    of ``h`` are consecutive positions of one sequence from slot ``index`` on, each attending up to its own slot
    (``span`` the first row's), as a verify pass of speculative decoding runs them. Returns the new ``h``."""
    op = getattr(torch.ops.ascend_nb, f"decode_layer_{isa}")
    return op(h, *weights, cos, sin, k_cache, v_cache, index, key_valid, span, heads, kv_heads, eps, scale, sequence)
