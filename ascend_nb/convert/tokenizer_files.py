"""Tokenizers for converted directories: built from a SentencePiece model, saved as a plain fast tokenizer.

Baichuan2's ``BaichuanTokenizer`` is remote code that breaks on transformers >= 4.34; all it does is
``sp_model.encode(text)``. :func:`tokenizer_from_sentencepiece` rebuilds exactly that as a
``tokenizers`` BPE pipeline from the ``tokenizer.model`` proto (normalizer settings, byte fallback,
user-defined pieces, merges in score order). :func:`save_tokenizer` writes it as ``tokenizer.json``
with ``tokenizer_class: PreTrainedTokenizerFast``, which transformers 4.x and 5.x both load verbatim
(a model-specific class such as ``LlamaTokenizer`` would rebuild the pipeline with its own defaults),
and :func:`check_same_encoding` proves the result encodes like the original on sample text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from ascend_nb.errors import AscendNbError

SAMPLE_TEXTS = (
    "The capital of France is Paris.",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "Ascend 910B 上运行 Baichuan2-7B-Chat 和 Aquila-7B，速度是 A100 的 0.76 倍。",
    "  two leading spaces, three   inside,\ta tab\nand a new line  ",
    "def forward(self, x):\n        return x * 3.14159  # 注释",
    "Emoji 😀 and rare characters: ÿ Ω ∑ 龘 — “quotes” 「括号」！",
    "Numbers 1234567890 and 2^10 = 1024; 第3章 第12节",
)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4
_BPE = 2


def read_sentencepiece(model_file: Path):
    """The ``ModelProto`` of a SentencePiece ``tokenizer.model``."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(model_file).read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError subclasses
        raise AscendNbError(f"{model_file} is not a SentencePiece model ({exc}); restore it from the download") from exc
    if not proto.pieces:
        raise AscendNbError(f"{model_file} is not a SentencePiece model (no pieces); restore it from the download")
    return proto


def tokenizer_from_sentencepiece(model_file: Path):
    """A ``tokenizers.Tokenizer`` that encodes exactly like ``SentencePieceProcessor(model_file).encode``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    proto = read_sentencepiece(model_file)
    if proto.trainer_spec.model_type != _BPE:
        raise AscendNbError(f"{model_file} is not a BPE SentencePiece model (type {proto.trainer_spec.model_type}); "
                            "only BPE models (Baichuan2, Llama) convert")
    user_defined = [p.piece for p in proto.pieces if p.type == _USER_DEFINED]
    if user_defined and proto.normalizer_spec.add_dummy_prefix:
        raise AscendNbError(f"{model_file} combines a dummy-prefix space with user-defined pieces, which a fast "
                            "tokenizer cannot reproduce exactly; keep using the original tokenizer for this model")
    vocab = {piece.piece: index for index, piece in enumerate(proto.pieces)}
    merges = []
    for piece in sorted((p for p in proto.pieces if p.type == _NORMAL), key=lambda p: -p.score):
        text = piece.piece
        splits = [(text[:i], text[i:]) for i in range(1, len(text)) if text[:i] in vocab and text[i:] in vocab]
        merges.extend(sorted(splits, key=lambda pair: (vocab[pair[0]], vocab[pair[1]])))
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=proto.trainer_spec.unk_piece, fuse_unk=True,
                              byte_fallback=proto.trainer_spec.byte_fallback))

    spec = proto.normalizer_spec
    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    steps.append(normalizers.Replace(" ", "▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    decode_steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.add_dummy_prefix:
        decode_steps.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(decode_steps)

    # SentencePiece matches user-defined pieces anywhere in the normalized text (so "▁▁▁▁" matches four
    # spaces); control pieces (<s>, </s>) are the tokenizer's special tokens, as in BaichuanTokenizer.
    tokenizer.add_tokens([AddedToken(piece, normalized=True, special=False) for piece in user_defined])
    tokenizer.add_special_tokens([AddedToken(p.piece, normalized=False, special=True)
                                  for p in proto.pieces if p.type in (_UNKNOWN, _CONTROL)])
    return tokenizer


def save_tokenizer(tokenizer, directory: Path, *, bos_token: str | None, eos_token: str | None,
                   unk_token: str | None = None, pad_token: str | None = None, chat_template: str | None = None,
                   model_max_length: int | None = None) -> None:
    """Save a ``tokenizers.Tokenizer`` as a transformers fast tokenizer that adds no BOS/EOS by itself."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos_token, eos_token=eos_token,
                                   unk_token=unk_token, pad_token=pad_token, clean_up_tokenization_spaces=False,
                                   add_bos_token=False, add_eos_token=False,
                                   **({"model_max_length": model_max_length} if model_max_length else {}))
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(directory)
    config_path = Path(directory) / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update(tokenizer_class="PreTrainedTokenizerFast", add_bos_token=False, add_eos_token=False)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _encodings(expected: Callable[[str], list[int]], directory: Path, texts: Iterable[str]):
    """``(text, expected ids, ids of the tokenizer saved in directory)`` per text, without special tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    for text in texts:
        yield text, expected(text), tokenizer.encode(text, add_special_tokens=False)


def encoding_table(expected: Callable[[str], list[int]], directory: Path, texts: Iterable[str] = SAMPLE_TEXTS):
    """``text, tokens, identical ids`` per text: the tokenizer saved in ``directory`` against ``expected``."""
    import pandas as pd

    return pd.DataFrame([{"text": text, "tokens": len(want), "identical ids": got == want}
                         for text, want, got in _encodings(expected, directory, texts)])


def check_same_encoding(expected: Callable[[str], list[int]], directory: Path, texts: Iterable[str] = SAMPLE_TEXTS) -> None:
    """Load the tokenizer saved in ``directory`` and raise unless it encodes every text as ``expected`` does."""
    for text, want, got in _encodings(expected, directory, texts):
        if want != got:
            raise AscendNbError(f"the converted tokenizer encodes {text!r} as {got[:12]}... but the original gives "
                                f"{want[:12]}...: please report this with your tokenizer files")
