"""Chat templates render the exact token sequences of each family's own rules."""

import pytest

from ascend_nb.errors import AscendNbError
from ascend_nb.models import templates
from ascend_nb.models.templates import AQUILA_SYSTEM, encode_chat


class CharTokenizer:
    """One id per character (its code point): makes expected sequences readable by hand."""

    def encode(self, text, add_special_tokens=True):
        return [ord(c) for c in text]


def ids(text):
    return [ord(c) for c in text]


TOK = CharTokenizer()
U, A = templates.BAICHUAN2_USER_ID, templates.BAICHUAN2_ASSISTANT_ID


def test_aquila_single_turn_matches_the_guide_template():
    got = encode_chat("aquila", TOK, [{"role": "user", "content": "你好"}], 10_000)
    assert got == ids(f"{AQUILA_SYSTEM}###Human: 你好###Assistant:")


def test_aquila_multi_turn_and_custom_system():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    assert encode_chat("aquila", TOK, messages, 10_000) == ids("S###Human: q1###Assistant: a1###Human: q2###Assistant:")


def test_aquila_drops_oldest_rounds_to_fit():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    expected = ids("S###Human: q2###Assistant:")
    assert encode_chat("aquila", TOK, messages, len(expected)) == expected
    with pytest.raises(AscendNbError, match="prompt is .* tokens"):
        encode_chat("aquila", TOK, messages, len(expected) - 1)


def test_baichuan2_build_chat_input_layout():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "ab"},
                {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    assert encode_chat("baichuan2", TOK, messages, 4096) == [ord("S"), U, 97, 98, A, 99, U, 100, A]


def test_baichuan2_no_assistant_id_appended_after_assistant_turn():
    messages = [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "c"}]
    assert encode_chat("baichuan2", TOK, messages, 4096) == [U, 97, 98, A, 99]


def test_baichuan2_history_is_added_newest_first_within_budget():
    messages = [{"role": "user", "content": "aaaa"}, {"role": "assistant", "content": "bbbb"},
                {"role": "user", "content": "cc"}]
    # budget 6: the newest round [U c c] (3) fits, the older round (10) does not -> dropped whole.
    assert encode_chat("baichuan2", TOK, messages, 6) == [U, 99, 99, A]


def test_baichuan2_left_truncates_a_single_round_that_is_too_long():
    messages = [{"role": "user", "content": "abcdef"}]
    # The newest round is always kept, then the whole input is cut from the left.
    assert encode_chat("baichuan2", TOK, messages, 4) == [100, 101, 102, A]


def test_chatml_uses_the_models_own_template(embedded_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    got = encode_chat("chatml", tokenizer, [{"role": "user", "content": "Hi"}], 1000)
    text = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert got == tokenizer.encode(text, add_special_tokens=False)
    assert got[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    long_history = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "Hi"}]
    assert encode_chat("chatml", tokenizer, long_history, len(got)) == got  # oldest round dropped


@pytest.mark.parametrize("messages, match", [
    ([], "empty"),
    ([{"role": "robot", "content": "x"}], "role"),
    ([{"role": "user", "content": "x"}, {"role": "system", "content": "s"}], "system message must come first"),
])
def test_malformed_messages_are_clear_errors(messages, match):
    with pytest.raises(AscendNbError, match=match):
        encode_chat("aquila", TOK, messages, 100)


def test_unknown_template():
    with pytest.raises(AscendNbError, match="unknown chat template"):
        encode_chat("vicuna", TOK, [{"role": "user", "content": "x"}], 100)
