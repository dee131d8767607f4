"""Reading GGUF files: the ``gguf`` package's tensors, dequantized on demand and renamed to transformers' Llama names.

Every type ``gguf`` implements (F32, F16, BF16, Q4_0/1, Q5_x, Q8_0, K-quants, ...) is read; q/k rows
are un-permuted (llama.cpp reorders them for its rotary layout); the Llama config comes from the metadata.
The file is memory-mapped; once a tensor is dequantized (copied), its pages are dropped from this process's
mapping (``MADV_DONTNEED``, the file stays in the page cache), so converting a big GGUF does not count the
whole file in the resident memory.
"""

from __future__ import annotations

import functools
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ascend_nb.convert.kinds import is_gguf
from ascend_nb.convert.shards import PlannedTensor
from ascend_nb.errors import AscendNbError

TOP_LEVEL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_tensor_name(gguf_name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``."""
    base, suffix = gguf_name.rsplit(".", 1)
    if base.startswith("blk."):
        _, layer, part = base.split(".", 2)
        if part not in BLOCK_NAMES:
            raise AscendNbError(f"GGUF tensor {gguf_name!r} is not part of a Llama block; only Llama-family GGUFs convert")
        return f"model.layers.{layer}.{BLOCK_NAMES[part]}.{suffix}"
    if base not in TOP_LEVEL_NAMES:
        raise AscendNbError(f"GGUF tensor {gguf_name!r} is not part of a Llama model; only Llama-family GGUFs convert")
    return f"{TOP_LEVEL_NAMES[base]}.{suffix}"


def unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (it interleaves the two rotary halves of each head)."""
    rows = weight.shape[0]
    return (weight.reshape(num_heads, rows // num_heads // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _metadata(reader) -> dict:
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key not in (
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id"):
            continue  # vocabularies are large; the tokenizer reader handles them
        out[key] = field.contents()
    return out


def llama_config_from_gguf(meta: dict, tied: bool, vocab_size: int):
    """A transformers LlamaConfig from GGUF metadata (``general.architecture`` must be ``llama``)."""
    from transformers import LlamaConfig

    arch = meta.get("general.architecture")
    if arch != "llama":
        raise AscendNbError(f"GGUF architecture {arch!r} is not supported: only 'llama' (Llama-family) converts")
    p = f"{arch}."
    hidden, heads = meta[p + "embedding_length"], meta[p + "attention.head_count"]
    head_dim = meta.get(p + "rope.dimension_count", hidden // heads)
    config = LlamaConfig(
        vocab_size=meta.get(p + "vocab_size", vocab_size), hidden_size=hidden,
        intermediate_size=meta[p + "feed_forward_length"], num_hidden_layers=meta[p + "block_count"],
        num_attention_heads=heads, num_key_value_heads=meta.get(p + "attention.head_count_kv", heads),
        head_dim=head_dim, max_position_embeddings=meta.get(p + "context_length", 2048),
        rms_norm_eps=meta.get(p + "attention.layer_norm_rms_epsilon", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(meta.get(p + "rope.freq_base", 10000.0))},
        tie_word_embeddings=tied, bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"), pad_token_id=meta.get("tokenizer.ggml.padding_token_id"))
    config.architectures = ["LlamaForCausalLM"]
    return config


@dataclass
class GgufModel:
    """A GGUF file opened lazily: planned (dequantize-on-demand) tensors, metadata and Llama config."""

    tensors: list[PlannedTensor]
    meta: dict
    config: object  # transformers.LlamaConfig


def _drop_pages(mapping, tensor) -> None:
    """Drop ``tensor``'s pages from this process's read-only file mapping (re-read from the page cache if
    needed again); best effort: nothing happens where ``madvise`` is not available."""
    handle = getattr(mapping, "_mmap", None)  # numpy.memmap's mmap.mmap
    if handle is None or getattr(mapping, "mode", None) != "r" or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = int(tensor.data_offset) // mmap.PAGESIZE * mmap.PAGESIZE
    try:
        handle.madvise(mmap.MADV_DONTNEED, start, int(tensor.data_offset) + int(tensor.n_bytes) - start)
    except (OSError, ValueError):
        pass


def _dequantize(tensor, heads: int, kv_heads: int, mapping=None) -> torch.Tensor:
    import gguf

    weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    weight = weight.reshape([int(n) for n in reversed(tensor.shape)])
    if tensor.name.startswith("blk.") and ".attn_q." in tensor.name:
        weight = unpermute_rotary(weight, heads)
    elif tensor.name.startswith("blk.") and ".attn_k." in tensor.name:
        weight = unpermute_rotary(weight, kv_heads)
    out = torch.from_numpy(np.array(weight, copy=True))
    del weight
    if mapping is not None:
        _drop_pages(mapping, tensor)
    return out


def open_gguf(path: Path, dtype: torch.dtype = torch.float32) -> GgufModel:
    """Read a GGUF file's metadata and plan its tensors (transformers names, ``dtype``) without dequantizing."""
    import gguf

    path = Path(path)
    if not path.exists():
        raise AscendNbError(f"GGUF file {path} does not exist")
    if not is_gguf(path):
        raise AscendNbError(f"{path} is not a GGUF file: for a model directory use "
                            "`ascend-nb convert safetensors|baichuan2|aquila SRC DST`")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError/struct errors on bad files
        raise AscendNbError(f"{path} is not a readable GGUF file ({exc}); re-download it") from exc
    meta = _metadata(reader)
    arch = meta.get("general.architecture", "llama")
    heads = meta.get(f"{arch}.attention.head_count")
    kv_heads = meta.get(f"{arch}.attention.head_count_kv", heads)
    tensors = []
    for tensor in reader.tensors:
        rotary = tensor.name.startswith("blk.") and (".attn_q." in tensor.name or ".attn_k." in tensor.name)
        tensors.append(PlannedTensor(
            hf_tensor_name(tensor.name), tuple(int(n) for n in reversed(tensor.shape)), dtype,
            functools.partial(_dequantize, tensor, heads, kv_heads, reader.data), source=tensor.name,
            transform=f"dequantize {tensor.tensor_type.name}" + (", un-permute rotary rows" if rotary else "")))
    names = {t.name: t for t in tensors}
    config = llama_config_from_gguf(meta, "lm_head.weight" not in names, names["model.embed_tokens.weight"].shape[0])
    config.dtype = dtype
    return GgufModel(tensors=tensors, meta=meta, config=config)


def read_gguf_state_dict(path: Path, dtype: torch.dtype = torch.float32) -> tuple[dict, dict]:
    """Dequantized transformers-named tensors and the metadata of a GGUF file (all in memory)."""
    model = open_gguf(path, dtype)
    return {t.name: t.materialize() for t in model.tensors}, model.meta
