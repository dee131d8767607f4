"""SentencePiece -> fast tokenizer: encodes exactly as ``sentencepiece`` does, checked against it directly."""

import io

import pytest
import sentencepiece
from transformers import AutoTokenizer

from ascend_nb.convert.demo_checkpoints import CORPUS, train_sentencepiece
from ascend_nb.convert.tokenizer_files import (
    SAMPLE_TEXTS, check_same_encoding, save_tokenizer, tokenizer_from_sentencepiece,
)
from ascend_nb.errors import AscendNbError

MIXED = SAMPLE_TEXTS + (
    "混合 mixed 文本 with   multiple    spaces，全角标点！and half-width punctuation!",
    "\n\n换行开头 and trailing newline\n",
    "<reserved_195>user turn<reserved_196>assistant turn",
    "",
)


def _train(tmp_path, name, **options):
    model = io.BytesIO()
    settings = dict(sentence_iterator=iter(CORPUS * 10), model_writer=model, vocab_size=500, model_type="bpe",
                    character_coverage=1.0, byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2,
                    pad_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2, allow_whitespace_only_pieces=True)
    sentencepiece.SentencePieceTrainer.train(**{**settings, **options})
    path = tmp_path / name
    path.write_bytes(model.getvalue())
    return path


def _saved(tmp_path, model_file):
    out = tmp_path / "tok"
    save_tokenizer(tokenizer_from_sentencepiece(model_file), out, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return AutoTokenizer.from_pretrained(out), out


@pytest.mark.parametrize("style", ["baichuan2", "llama"])
def test_saved_tokenizer_encodes_like_sentencepiece(tmp_path, style):
    model_file = tmp_path / "tokenizer.model"
    model_file.write_bytes(train_sentencepiece(700, baichuan_style=style == "baichuan2"))
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    tokenizer, out = _saved(tmp_path, model_file)
    for text in MIXED:
        assert tokenizer.encode(text, add_special_tokens=False) == processor.encode(text), text
        assert tokenizer(text).input_ids == processor.encode(text), "no automatic BOS/EOS"
    check_same_encoding(processor.encode, out, MIXED)


def test_baichuan_style_reserved_pieces_are_single_tokens(tmp_path):
    model_file = tmp_path / "tokenizer.model"
    model_file.write_bytes(train_sentencepiece(700, baichuan_style=True))
    tokenizer, _ = _saved(tmp_path, model_file)
    assert tokenizer.convert_ids_to_tokens([195, 196]) == ["<reserved_195>", "<reserved_196>"]
    ids = tokenizer.encode("<reserved_195>hi<reserved_196>", add_special_tokens=False)
    assert ids[0] == 195 and ids[-1] == 196 and len(ids) > 2
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (1, 2, 0)


def test_whitespace_removal_and_nfkc_normalization_match(tmp_path):
    model_file = _train(tmp_path, "nfkc.model", normalization_rule_name="nmt_nfkc", remove_extra_whitespaces=True,
                        add_dummy_prefix=True)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    tokenizer, _ = _saved(tmp_path, model_file)
    for text in MIXED + ("ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ　１２３",):
        assert tokenizer.encode(text, add_special_tokens=False) == processor.encode(text), text


def test_a_different_tokenizer_is_caught(tmp_path):
    first = _train(tmp_path, "a.model", add_dummy_prefix=False)
    second = _train(tmp_path, "b.model", add_dummy_prefix=True)
    _, out = _saved(tmp_path, first)
    other = sentencepiece.SentencePieceProcessor(model_file=str(second))
    with pytest.raises(AscendNbError, match="converted tokenizer encodes"):
        check_same_encoding(other.encode, out)


def test_unsupported_models_are_refused(tmp_path):
    unigram = _train(tmp_path, "unigram.model", model_type="unigram")
    with pytest.raises(AscendNbError, match="not a BPE SentencePiece model"):
        tokenizer_from_sentencepiece(unigram)
    prefixed_user_pieces = _train(tmp_path, "mixed.model", add_dummy_prefix=True, user_defined_symbols=["<x>"])
    with pytest.raises(AscendNbError, match="dummy-prefix space with user-defined pieces"):
        tokenizer_from_sentencepiece(prefixed_user_pieces)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"\x00not a proto")
    with pytest.raises(AscendNbError, match="not a SentencePiece model"):
        tokenizer_from_sentencepiece(garbage)
