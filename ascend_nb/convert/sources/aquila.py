"""Aquila-7B (``AquilaForCausalLM``, remote-code config) -> a plain Llama checkpoint.

Aquila's weights already have Llama's names and layout; what changes is the config (``LlamaForCausalLM``,
``model_type: llama``, no ``auto_map``), the tokenizer (its GPT2-style byte-level BPE saved as a plain
fast tokenizer with bos 100006 / eos 100007 and Aquila's ``###Human: ...###Assistant:`` chat template)
and the storage (safetensors shards). One difference remains and is documented: Aquila's modeling file
clamps attention logits to [-1024, 1024]; Llama does not. It only matters for logits beyond that range,
which the verification would show.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ascend_nb.convert.llama_target import convert_to_llama
from ascend_nb.convert.output import Conversion
from ascend_nb.convert.shards import SourceShards
from ascend_nb.convert.tokenizer_files import check_same_encoding, save_tokenizer
from ascend_nb.errors import AscendNbError
from ascend_nb.models.templates import AQUILA_SYSTEM

MODEL_NAME = "aquila-7b"
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
    "{%- set messages = messages[1:] -%}{%- else -%}{%- set system = '" + AQUILA_SYSTEM.replace("'", "\\'") + "' -%}"
    "{%- endif -%}{{- system -}}"
    "{%- for message in messages -%}###{{ 'Human' if message['role'] == 'user' else 'Assistant' }}: "
    "{{ message['content'] }}{%- endfor -%}{%- if add_generation_prompt -%}###Assistant:{%- endif -%}"
)


def source_tokenizer(src: Path):
    """The ``tokenizers.Tokenizer`` users run today: ``tokenizer.json`` verbatim, else transformers' reading."""
    from tokenizers import Tokenizer

    tokenizer_json = Path(src) / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            return Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception on bad JSON
            raise AscendNbError(f"{tokenizer_json} is corrupt ({exc}): restore it from the Aquila download") from exc
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(src, local_files_only=True, trust_remote_code=False).backend_tokenizer
    except (OSError, ValueError, AttributeError) as exc:
        raise AscendNbError(f"cannot read the tokenizer in {src} ({exc}): copy tokenizer.json (or vocab.json and "
                            "merges.txt) from the Aquila download") from exc


def original_encoder(src: Path) -> Callable[[str], list[int]]:
    """How Aquila's own tokenizer encodes text (no special tokens)."""
    tokenizer = source_tokenizer(src)
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


def write_tokenizer(src: Path, out: Path, config: dict) -> None:
    """The source tokenizer with bos/eos taken from config.json's ids and Aquila's chat template."""
    tokenizer = source_tokenizer(src)

    def token(key: str) -> str | None:
        token_id = config.get(key)
        return tokenizer.id_to_token(token_id) if token_id is not None else None

    bos, eos = token("bos_token_id"), token("eos_token_id")
    if bos is None or eos is None:
        raise AscendNbError(f"config.json's bos/eos ids ({config.get('bos_token_id')}, {config.get('eos_token_id')}) "
                            f"are not in the tokenizer of {src}: the tokenizer files do not belong to this model")
    save_tokenizer(tokenizer, out, bos_token=bos, eos_token=eos, chat_template=CHAT_TEMPLATE,
                   model_max_length=config.get("max_position_embeddings"))
    check_same_encoding(original_encoder(src), out)


def convert_aquila(src: Path, dst: Path, dtype: str | torch.dtype | None = None, **options) -> Conversion:
    """Convert an Aquila-7B directory at ``src`` into a plain Llama directory at ``dst`` (atomically).

    ``options`` are those of :func:`ascend_nb.convert.llama_target.convert_to_llama`.
    """
    return convert_to_llama(src, dst, "aquila", MODEL_NAME, write_tokenizer, rule_for=aquila_rule, dtype=dtype, **options)


def aquila_rule(checkpoint, config: dict, dtype: torch.dtype | None):
    """Every tensor copied (cast to ``dtype`` if given), read through one :class:`SourceShards` (one ``.bin``
    shard mapped at a time, released once its tensors are written)."""
    source = SourceShards(checkpoint)
    return lambda name: [source.copy(name, dtype)]
