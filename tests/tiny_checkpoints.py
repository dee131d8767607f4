"""Tiny random checkpoints in real download formats, for any test that needs one.

The format builders live in the package (:mod:`ascend_nb.convert.demo_checkpoints`, also used by notebook 02):
``make_tiny_baichuan2(dir) -> Path``, ``make_tiny_aquila(dir) -> Path``, ``make_tiny_llama(dir) -> Path``.
This module adds what only tests need: a GGUF writer (llama.cpp's layout, q/k rows permuted) and
helpers to damage checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ascend_nb.convert.demo_checkpoints import make_tiny_aquila, make_tiny_baichuan2, make_tiny_llama, write_random_llama

__all__ = ["make_tiny_aquila", "make_tiny_baichuan2", "make_tiny_llama", "random_llama", "write_tiny_gguf", "truncate",
           "partial_outputs", "state_dict_of"]

def random_llama(target: Path, tokenizer_dir: Path, seed: int, **sizes) -> Path:
    """A random-weight transformers Llama at ``target`` with the tokenizer of ``tokenizer_dir`` (49152
    tokens, SmolLM2's), of the given ``LlamaConfig`` sizes; bos 1, eos and pad 2."""
    from transformers import AutoTokenizer, LlamaConfig

    config = LlamaConfig(vocab_size=49152, bos_token_id=1, eos_token_id=2, pad_token_id=2, **sizes)
    write_random_llama(target, config, seed=seed)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(target)
    return target


GGUF_BLOCK_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf q/k row order (interleaved rotary halves per head)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(llama_dir: Path, path: Path) -> Path:
    """Write the safetensors Llama at ``llama_dir`` (e.g. from ``make_tiny_llama``) as an F32 GGUF file."""
    import gguf
    import sentencepiece
    from safetensors.torch import load_file

    config = json.loads((Path(llama_dir) / "config.json").read_text())
    state = load_file(Path(llama_dir) / "model.safetensors")
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    processor = sentencepiece.SentencePieceProcessor(model_file=str(Path(llama_dir) / "tokenizer.model"))
    pieces = range(processor.get_piece_size())
    writer.add_tokenizer_model("llama")
    writer.add_token_list([processor.id_to_piece(i) for i in pieces])
    writer.add_token_scores([processor.get_score(i) for i in pieces])
    writer.add_token_types([3 if processor.is_control(i) else 6 if processor.is_byte(i) else 2 if processor.is_unknown(i)
                            else 1 for i in pieces])
    writer.add_bos_token_id(processor.bos_id())
    writer.add_eos_token_id(processor.eos_id())
    for name, tensor in state.items():
        array = tensor.float().numpy()
        if name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            part = rest.removesuffix(".weight")
            if part == "self_attn.q_proj":
                array = _llama_cpp_permute(array, heads)
            elif part == "self_attn.k_proj":
                array = _llama_cpp_permute(array, kv_heads)
            gguf_name = f"blk.{layer}.{GGUF_BLOCK_NAMES[part]}.weight"
        else:
            gguf_name = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                         "lm_head.weight": "output.weight"}[name]
        writer.add_tensor(gguf_name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its size, as an interrupted download does."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def partial_outputs(dst: Path) -> list[Path]:
    """``dst`` itself and any temporary siblings a conversion into ``dst`` may have left."""
    dst = Path(dst)
    return [p for p in dst.parent.iterdir() if p == dst or p.name.startswith(f".{dst.name}.")]


def state_dict_of(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.bin`` checkpoint directory, loaded plainly (tests only, small models)."""
    tensors = {}
    for path in sorted(Path(directory).glob("pytorch_model*.bin")):
        tensors.update(torch.load(path, weights_only=True))
    return tensors
