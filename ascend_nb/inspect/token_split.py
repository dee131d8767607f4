"""A text split into tokens by one or more tokenizers side by side, and tokens per character.

``tokens(source, text)`` gives one row per token: ``tokenizer, index, token_id, piece`` (the
vocabulary entry), ``text`` (the characters this token completes, so the column joins back to the
text) and ``byte_fallback`` (a piece that is only part of a character: SentencePiece's ``<0xE4>``
byte tokens, or a byte-level BPE token that decodes to no whole character). A ``source`` is an
engine, a tokenizer, a registry name or model directory, or a list / dict of them. :func:`byte_notation`
writes a piece that is only part of a character as its bytes, ``<0xE5><0x8C>``, wherever a token is shown.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ascend_nb.errors import AscendNbError

COLUMNS = ["tokenizer", "index", "token_id", "piece", "text", "byte_fallback"]


def _load_tokenizer(model: str | Path):
    from transformers import AutoTokenizer

    from ascend_nb.engine.loading import resolve_model_dir

    return AutoTokenizer.from_pretrained(resolve_model_dir(model), local_files_only=True)


def _named(source) -> tuple[str, object]:
    if hasattr(source, "tokenizer") and hasattr(source, "spec"):  # an engine
        return source.spec.name, source.tokenizer
    if isinstance(source, (str, Path)):
        return Path(source).name if Path(source).exists() else str(source), _load_tokenizer(source)
    if hasattr(source, "encode") and hasattr(source, "decode"):
        return getattr(source, "name_or_path", "") or type(source).__name__, source
    raise AscendNbError(f"cannot take a tokenizer from {type(source).__name__}: give an engine, a tokenizer, "
                        "a model name or a model directory")


def tokenizers(sources) -> dict[str, object]:
    """``{label: tokenizer}`` from one source, a list of them or a ``{label: source}`` dict."""
    if isinstance(sources, Mapping):
        return {str(label): _named(source)[1] for label, source in sources.items()}
    if isinstance(sources, (list, tuple)):
        named = [_named(source) for source in sources]
        return dict(named)
    return dict([_named(sources)])


def _split(tokenizer, text: str) -> list[dict]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    rows, decoded = [], ""
    for index, (token_id, piece) in enumerate(zip(ids, pieces)):
        upto = tokenizer.decode(ids[:index + 1], clean_up_tokenization_spaces=False)
        # characters still waiting for their last bytes are not text yet (a byte-fallback decoder may
        # even turn the characters before them into '\ufffd' until they are complete)
        complete = upto.rstrip("\ufffd")
        text = ""
        if complete.startswith(decoded) and len(complete) > len(decoded):
            text, decoded = complete[len(decoded):], complete
        own = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
        rows.append({"index": index, "token_id": int(token_id), "piece": str(piece), "text": text,
                     "byte_fallback": is_byte_piece(str(piece)) or "\ufffd" in own})
    return rows


def tokens(engine_or_tokenizers, text: str) -> pd.DataFrame:
    """One row per token of ``text`` for each tokenizer (no special tokens added)."""
    rows = []
    for label, tokenizer in tokenizers(engine_or_tokenizers).items():
        rows.extend({"tokenizer": label, **row} for row in _split(tokenizer, text))
    return pd.DataFrame(rows, columns=COLUMNS)


def token_stats(engine_or_tokenizers, texts: Mapping[str, str]) -> pd.DataFrame:
    """Per tokenizer and named text (e.g. ``{"English": ..., "Chinese": ...}``): characters, tokens,
    tokens per character and how many tokens are byte pieces."""
    rows = []
    for label, tokenizer in tokenizers(engine_or_tokenizers).items():
        for name, text in texts.items():
            split = _split(tokenizer, text)
            rows.append({"tokenizer": label, "text": name, "characters": len(text), "tokens": len(split),
                         "tokens_per_char": len(split) / max(len(text), 1),
                         "byte_tokens": sum(r["byte_fallback"] for r in split)})
    return pd.DataFrame(rows)


def byte_notation(piece: str) -> str | None:
    """A byte piece written as its bytes, ``<0xE5><0x8C>``; None for a piece that is not one."""
    raw = piece_bytes(piece)
    return None if raw is None else "".join(f"<0x{b:02X}>" for b in raw)


def is_byte_piece(piece: str) -> bool:
    """SentencePiece's byte-fallback piece for one byte, ``<0xE4>``."""
    return re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece) is not None


def piece_bytes(piece: str) -> bytes | None:
    """The bytes a vocabulary piece stands for: SentencePiece's ``<0xE4>``, or a byte-level BPE piece
    (GPT-2's printable stand-ins for bytes); None for a piece that is neither."""
    if is_byte_piece(piece):
        return bytes([int(piece[3:5], 16)])
    table = _byte_level_table()
    return bytes(table[c] for c in piece) if piece and all(c in table for c in piece) else None


@functools.cache
def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet, read backwards: printable byte values stand for themselves, the
    others for the code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}
