"""Baichuan2-7B (Base or Chat, remote-code format) -> a plain Llama checkpoint transformers loads by itself.

The architecture is Llama with two storage differences, undone here:
- ``self_attn.W_pack.weight`` ``[3H, H]`` packs q, k and v: its rows split in thirds into
  ``q_proj``, ``k_proj`` and ``v_proj``;
- ``NormHead`` L2-normalizes every LM-head row at use: ``lm_head.weight`` is stored normalized
  (``F.normalize(w, dim=-1)``, computed in float32), so a plain ``Linear`` gives the same logits.
The SentencePiece ``tokenizer.model`` becomes a fast tokenizer that encodes exactly like it (no
added prefix space, no automatic BOS/EOS); ``generation_config.json`` (user id 195, assistant id
196, sampling defaults) is kept. Baichuan2-13B uses ALiBi position bias, which Llama cannot express.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ascend_nb.models.checkpoint import Checkpoint
from ascend_nb.convert.llama_target import convert_to_llama
from ascend_nb.convert.output import Conversion
from ascend_nb.convert.shards import PlannedTensor, SourceShards
from ascend_nb.convert.tokenizer_files import check_same_encoding, save_tokenizer, tokenizer_from_sentencepiece
from ascend_nb.errors import AscendNbError

MODEL_NAME = "baichuan2-7b-chat"
USER_TOKEN_ID, ASSISTANT_TOKEN_ID = 195, 196
BAICHUAN_13B_HIDDEN = 5120  # the 13B models (Baichuan-13B, Baichuan2-13B) use ALiBi instead of rotary positions


def check_baichuan2_config(config: dict, src: Path) -> None:
    """Refuse the Baichuan variants that are not Llama-shaped."""
    if "BaiChuanForCausalLM" in (config.get("architectures") or []):
        raise AscendNbError(f"{src} is Baichuan (1), not Baichuan2: its LM head is not a NormHead; "
                            "this converter handles Baichuan2-7B only")
    if "max_position_embeddings" not in config or config.get("hidden_size") == BAICHUAN_13B_HIDDEN:
        raise AscendNbError(f"{src} uses ALiBi position bias (Baichuan 13B), which a Llama model cannot express: "
                            "only Baichuan2-7B converts")


HEAD_ROWS_AT_ONCE = 4096  # the LM head is normalized this many rows at a time (64 MB of float32 at hidden 4096)


def _w_pack_third(source: SourceShards, name: str, index: int, hidden: int) -> torch.Tensor:
    return source.get(name)[index * hidden:(index + 1) * hidden]


def _normalized_head(source: SourceShards, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.normalize(w.float(), dim=-1)`` in ``dtype`` (default float32), computed a block of rows at a time so
    the float32 copy of a large head never exists whole (row-wise, so the values are the same)."""
    weight = source.get(name)
    out = torch.empty(weight.shape, dtype=dtype or torch.float32)
    for start in range(0, weight.shape[0], HEAD_ROWS_AT_ONCE):
        rows = slice(start, start + HEAD_ROWS_AT_ONCE)
        out[rows] = F.normalize(weight[rows].float(), dim=-1)
    return out


def baichuan2_rule(checkpoint: Checkpoint, config: dict, dtype: torch.dtype | None):
    """The tensor rule: split ``W_pack`` in thirds, normalize ``lm_head``, copy the rest; every tensor is read
    through one :class:`SourceShards` (one ``.bin`` shard mapped at a time)."""
    hidden = config["hidden_size"]
    source = SourceShards(checkpoint)

    def rule(name: str) -> list[PlannedTensor]:
        out_dtype = dtype or checkpoint.dtype(name)
        where = {"source": name, "source_file": source.file_of(name).name, "release": source.release}
        if name.endswith(".self_attn.W_pack.weight"):
            if checkpoint.shape(name) != (3 * hidden, hidden):
                raise AscendNbError(f"{name} has shape {checkpoint.shape(name)}, expected {(3 * hidden, hidden)} "
                                    "from config.json hidden_size: the checkpoint does not match its config")
            prefix = name.removesuffix("W_pack.weight")
            return [PlannedTensor(f"{prefix}{part}_proj.weight", (hidden, hidden), out_dtype,
                                  functools.partial(_w_pack_third, source, name, i, hidden),
                                  transform=f"W_pack rows {i * hidden}:{(i + 1) * hidden}", **where)
                    for i, part in enumerate("qkv")]
        if name == "lm_head.weight":
            return [PlannedTensor(name, checkpoint.shape(name), out_dtype,
                                  functools.partial(_normalized_head, source, name, dtype=out_dtype),
                                  transform="NormHead: rows L2-normalized", **where)]
        return [source.copy(name, dtype)]
    return rule


def chat_template(user: str, assistant: str) -> str:
    """Baichuan2's ``build_chat_input`` as Jinja (no truncation): system, then role token + content."""
    return ("{%- for message in messages -%}"
            f"{{%- if message['role'] == 'user' -%}}{user}{{{{ message['content'] }}}}"
            f"{{%- elif message['role'] == 'assistant' -%}}{assistant}{{{{ message['content'] }}}}"
            "{%- else -%}{{ message['content'] }}{%- endif -%}"
            f"{{%- endfor -%}}{{%- if add_generation_prompt -%}}{assistant}{{%- endif -%}}")


def original_encoder(src: Path) -> Callable[[str], list[int]]:
    """How Baichuan2's tokenizer encodes text: ``SentencePieceProcessor(tokenizer.model).encode``."""
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(Path(src) / "tokenizer.model")).encode


def write_tokenizer(src: Path, out: Path, config: dict) -> None:
    """``tokenizer.model`` kept, plus an exact fast-tokenizer twin with Baichuan2's chat template."""
    import sentencepiece

    model_file = Path(src) / "tokenizer.model"
    if not model_file.is_file():
        raise AscendNbError(f"{src} has no tokenizer.model: copy it from the Baichuan2 download")
    tokenizer = tokenizer_from_sentencepiece(model_file)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    generation_path = Path(src) / "generation_config.json"
    generation = json.loads(generation_path.read_text()) if generation_path.is_file() else {}
    role_ids = (generation.get("user_token_id", USER_TOKEN_ID), generation.get("assistant_token_id", ASSISTANT_TOKEN_ID))
    added = tokenizer.get_added_tokens_decoder()
    template = chat_template(*(added[i].content for i in role_ids)) if all(i in added for i in role_ids) else None

    def piece(key: str) -> str | None:
        token_id = config.get(key)
        return processor.id_to_piece(token_id) if token_id is not None and 0 <= token_id < processor.get_piece_size() else None

    shutil.copy2(model_file, out / "tokenizer.model")
    save_tokenizer(tokenizer, out, bos_token=piece("bos_token_id"), eos_token=piece("eos_token_id"),
                   unk_token=processor.id_to_piece(processor.unk_id()), pad_token=piece("pad_token_id"),
                   chat_template=template, model_max_length=config.get("model_max_length"))
    check_same_encoding(original_encoder(src), out)


def convert_baichuan2(src: Path, dst: Path, dtype: str | torch.dtype | None = None, **options) -> Conversion:
    """Convert a Baichuan2-7B directory at ``src`` into a plain Llama directory at ``dst`` (atomically).

    ``dtype`` None keeps the source's (bf16 for the official weights); ``options`` are those of
    :func:`ascend_nb.convert.llama_target.convert_to_llama` (``max_shard_size``, ``force``,
    ``progress``, ``verify``, ``verify_dtype``, ``verify_device``).
    """
    return convert_to_llama(src, dst, "baichuan2", MODEL_NAME, write_tokenizer, rule_for=baichuan2_rule,
                            check_config=check_baichuan2_config, dtype=dtype, **options)
