"""GGUF -> transformers Llama directory: dequantized safetensors, config, tokenizer, chat template.

Weights are read by :mod:`ascend_nb.convert.sources.gguf_reader` (dequantized, renamed, q/k un-permuted).
Tensors are dequantized one shard at
a time while writing, so big models convert in bounded memory. The config is built from the GGUF
metadata; the tokenizer and its chat template come from transformers' GGUF tokenizer reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ascend_nb.convert.sources.gguf_reader import open_gguf
from ascend_nb.convert.output import Conversion, parse_dtype, write_converted
from ascend_nb.convert.shards import DEFAULT_MAX_SHARD_SIZE, parameter_count
from ascend_nb.convert.verify import gguf_source, verification_step
from ascend_nb.models.registry import METADATA_FILE

def convert_gguf(src: Path, dst: Path, dtype: str | torch.dtype = torch.float32, force: bool = False,
                 progress: bool = True, metadata: dict | None = None,
                 max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE, verify: bool = True,
                 verify_dtype: str | torch.dtype = torch.float32, verify_device: str = "cpu") -> Conversion:
    """Convert a Llama-family GGUF file into a transformers directory at ``dst`` (atomically).

    Every tensor type the ``gguf`` package dequantizes is supported; the result is stored in
    ``dtype`` as safetensors shards of at most ``max_shard_size``. ``metadata`` (e.g.
    ``{"model": "smollm2-135m-instruct"}``) is written to ``ascend_nb.json``. With ``verify`` a
    float64 Llama forward over the GGUF's own weights is compared with the converted model.
    """
    from transformers import AutoTokenizer, GenerationConfig

    src, dst = Path(src), Path(dst)
    model = open_gguf(src, parse_dtype(dtype) or torch.float32)
    config = model.config
    check = verification_step(src, "gguf", verify, verify_dtype, verify_device, parameter_count(model.tensors),
                              source=gguf_source(model))
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)

    def write_files(out: Path) -> None:
        config.save_pretrained(out)
        GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                         pad_token_id=config.pad_token_id).save_pretrained(out)
        tokenizer.save_pretrained(out)
        if metadata:
            (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")

    return write_converted(dst, "gguf", src, model.tensors, write_files, force=force, progress=progress,
                           max_shard_size=max_shard_size, verify=check)
