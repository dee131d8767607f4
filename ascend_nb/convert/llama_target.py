"""Shared by the Baichuan2 and Aquila converters: Llama config, tensor plan, small files, the conversion."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ascend_nb.models.checkpoint import Checkpoint
from ascend_nb.convert.kinds import require_kind
from ascend_nb.convert.output import Conversion, copy_license_files, parse_dtype, write_converted
from ascend_nb.convert.shards import DEFAULT_MAX_SHARD_SIZE, PlannedTensor, parameter_count
from ascend_nb.convert.verify import verification_step
from ascend_nb.errors import AscendNbError
from ascend_nb.models.registry import METADATA_FILE

ROTARY_BUFFER = ".rotary_emb.inv_freq"  # saved by old modeling files; transformers recomputes it
LAYER_TENSORS = ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                 "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# A rule maps a source tensor name to its output tensors, or returns None to copy it unchanged.
Rule = Callable[[str], "list[PlannedTensor] | None"]


def llama_config(config: dict, dtype: torch.dtype):
    """A transformers ``LlamaConfig`` with the hyper-parameters of a Llama-shaped original ``config``."""
    from transformers import LlamaConfig

    if config.get("hidden_act", "silu") != "silu":
        raise AscendNbError(f"hidden_act {config['hidden_act']!r} is not Llama's silu: this model cannot become a Llama")
    heads = config["num_attention_heads"]
    llama = LlamaConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"], num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=heads, num_key_value_heads=config.get("num_key_value_heads") or heads,
        max_position_embeddings=config["max_position_embeddings"], rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(config.get("rope_theta", 10000.0))},
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)), bos_token_id=config.get("bos_token_id"),
        eos_token_id=config.get("eos_token_id"), pad_token_id=config.get("pad_token_id"))
    llama.architectures = ["LlamaForCausalLM"]
    llama.dtype = dtype
    return llama


def copy_tensor(checkpoint: Checkpoint, name: str, dtype: torch.dtype | None) -> PlannedTensor:
    return PlannedTensor(name, checkpoint.shape(name), dtype or checkpoint.dtype(name),
                         functools.partial(checkpoint.get, name), source=name)


def expected_names(num_layers: int, tied: bool) -> list[str]:
    names = ["model.embed_tokens.weight"]
    names += [f"model.layers.{i}.{part}.weight" for i in range(num_layers) for part in LAYER_TENSORS]
    return names + ["model.norm.weight"] + ([] if tied else ["lm_head.weight"])


def plan_llama_tensors(checkpoint: Checkpoint, config: dict, dtype: torch.dtype | None, kind: str,
                       rule: Rule) -> list[PlannedTensor]:
    """Every output tensor, in source file order; raises when the result is not exactly a Llama's tensors."""
    planned: list[PlannedTensor] = []
    for name in checkpoint.names():
        if not name.endswith(ROTARY_BUFFER):
            planned.extend(rule(name) or [copy_tensor(checkpoint, name, dtype)])
    expected = expected_names(config["num_hidden_layers"], bool(config.get("tie_word_embeddings", False)))
    produced = {t.name for t in planned}
    missing = [n for n in expected if n not in produced]
    if missing:
        raise AscendNbError(f"tensor {missing[0]} is missing from {checkpoint.directory} ({len(missing)} missing): "
                            f"the download is incomplete or this is not a {kind} checkpoint")
    unexpected = sorted(produced - set(expected))
    if unexpected:
        raise AscendNbError(f"unexpected tensor {unexpected[0]} in {checkpoint.directory}: this is not a plain "
                            f"{kind} checkpoint (config.json num_hidden_layers={config['num_hidden_layers']})")
    return planned


def output_dtype(checkpoint: Checkpoint, dtype: torch.dtype | None) -> torch.dtype:
    """The requested dtype, or the source embedding's dtype when keeping the source's."""
    return dtype or checkpoint.dtype("model.embed_tokens.weight")


def write_generation_config(src: Path, out: Path, config: dict) -> None:
    """Keep the original ``generation_config.json`` (chat ids, sampling defaults) or write a minimal one."""
    source = Path(src) / "generation_config.json"
    if source.is_file():
        shutil.copy2(source, out / "generation_config.json")
        return
    from transformers import GenerationConfig

    GenerationConfig(bos_token_id=config.get("bos_token_id"), eos_token_id=config.get("eos_token_id"),
                     pad_token_id=config.get("pad_token_id")).save_pretrained(out)


def write_metadata(out: Path, model_name: str, kind: str) -> None:
    """``ascend_nb.json``: the registry name ``ascend_nb.load`` uses for the chat template and defaults."""
    (out / METADATA_FILE).write_text(json.dumps({"model": model_name, "converted_by": f"ascend-nb convert {kind}"},
                                                indent=2) + "\n")


def convert_to_llama(src: Path, dst: Path, kind: str, model_name: str,
                     write_tokenizer: Callable[[Path, Path, dict], None],
                     rule_for: Callable[[Checkpoint, dict, "torch.dtype | None"], Rule] | None = None,
                     check_config: Callable[[dict, Path], None] | None = None,
                     dtype: str | torch.dtype | None = None, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
                     force: bool = False, progress: bool = True, verify: bool = True,
                     verify_dtype: str | torch.dtype = torch.float32, verify_device: str = "cpu") -> Conversion:
    """Convert a Llama-shaped ``kind`` checkpoint directory into a plain Llama directory (atomically).

    ``dtype`` None keeps the source's; ``max_shard_size`` bounds each safetensors file (and the
    memory used); an existing ``dst`` is replaced only with ``force``. With ``verify`` the converted
    model's logits are compared with the original architecture's (computed in ``verify_dtype`` on
    ``verify_device``) before ``dst`` appears.
    """
    src, dst = Path(src), Path(dst)
    config = require_kind(src, kind)
    if check_config is not None:
        check_config(config, src)
    checkpoint = Checkpoint(src)
    dtype = parse_dtype(dtype)
    rule = rule_for(checkpoint, config, dtype) if rule_for is not None else (lambda name: None)
    tensors = plan_llama_tensors(checkpoint, config, dtype, kind, rule)
    check = verification_step(src, kind, verify, verify_dtype, verify_device, parameter_count(tensors))
    llama = llama_config(config, output_dtype(checkpoint, dtype))

    def write_files(out: Path) -> None:
        llama.save_pretrained(out)
        write_generation_config(src, out, config)
        write_tokenizer(src, out, config)
        write_metadata(out, model_name, kind)
        copy_license_files(src, out)

    return write_converted(dst, kind, src, tensors, write_files, force=force, progress=progress,
                           max_shard_size=max_shard_size, verify=check)
