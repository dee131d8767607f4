"""``perplexity()``: the same number as a direct computation with transformers (one window, and the sliding
windows of Hugging Face's recipe), on either backend, with one-line errors; and the bundled held-out text."""

from __future__ import annotations

import math
import re

import pytest
import torch

import ascend_nb
from ascend_nb.errors import AscendNbError
from ascend_nb.precision import HELDOUT_TEXT, perplexity, read_text


def transformers_nll(model_dir, ids: list[int], window: int, stride: int) -> tuple[float, int]:
    """Hugging Face's sliding-window recipe, written against the transformers model itself: labels of the
    tokens a window has already scored are -100, the model's own loss is the mean over the rest."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, count, previous_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            input_ids = torch.tensor([ids[begin:end]])
            labels = input_ids.clone()
            labels[:, : -(end - previous_end)] = -100
            valid = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one
            total += float(model(input_ids, labels=labels).loss) * valid
            count += valid
            previous_end = end
            if end == len(ids):
                break
    return total / count, count


@pytest.fixture(scope="module")
def text() -> str:
    return read_text()[:3000]


def test_one_window_is_the_models_own_loss(tiny_engine, tiny_llama_dir, text):
    ids = tiny_engine.encode(text)[:200]
    result = perplexity(tiny_engine, ids, window=200)
    nll, count = transformers_nll(tiny_llama_dir, ids, window=200, stride=200)
    assert result.windows == 1 and result.tokens == count == 199
    assert result.nll == pytest.approx(nll, rel=1e-5) and result.perplexity == pytest.approx(math.exp(nll), rel=1e-5)


@pytest.mark.parametrize("backend", ["transformers", "accelerated"])
def test_sliding_windows_match_the_recipe_on_both_backends(tiny_llama_dir, text, backend):
    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend=backend)
    ids = engine.encode(text)
    result = perplexity(engine, text, window=64, stride=24)
    nll, count = transformers_nll(tiny_llama_dir, ids, window=64, stride=24)
    assert result.tokens == count == len(ids) - 1  # every token but the first, once
    assert result.windows == math.ceil((len(ids) - 64) / 24) + 1
    assert result.nll == pytest.approx(nll, rel=1e-4)
    assert result.label.endswith(f"({backend}, cpu, float32)") and "windows of up to 64 tokens, stride 24" in result.describe()


def test_defaults_and_max_tokens(tiny_engine, text):
    full = perplexity(tiny_engine, text)
    assert full.window == min(tiny_engine.max_seq_len, 1024) and full.stride == full.window // 2
    short = perplexity(tiny_engine, text, max_tokens=50)
    assert short.tokens == 49 and short.windows == 1


def test_quantized_engines_score_the_same_tokens(tiny_llama_dir, text):
    base = perplexity(ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated"), text,
                      max_tokens=120)
    for quantize in ("int8", "w8a8", "int4"):
        engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated", quantize=quantize)
        result = perplexity(engine, text, max_tokens=120)
        assert result.tokens == base.tokens and math.isfinite(result.perplexity) and result.label.endswith(f"{quantize})")
        assert result.perplexity == pytest.approx(base.perplexity, rel=0.2)  # random weights: noise, not a cliff


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 1}, "window must be in 2..256"),
    ({"window": 4096}, "window must be in 2..256"),
    ({"window": 16, "stride": 17}, "stride must be in 1..16"),
    ({"stride": 0}, "stride must be in 1..256 (the window)"),
    ({"max_tokens": 1}, "max_tokens must be >= 2"),
])
def test_bad_settings_are_one_line(tiny_engine, text, kwargs, message):
    with pytest.raises(AscendNbError, match=re.escape(message)):
        perplexity(tiny_engine, text, **kwargs)


def test_a_served_model_or_a_one_token_text_is_refused(tiny_engine):
    class Served:
        backend, tokenizer = "openai", None

    with pytest.raises(AscendNbError, match="needs a local engine"):
        perplexity(Served(), "some text")
    with pytest.raises(AscendNbError, match="at least two tokens"):
        perplexity(tiny_engine, [5])


def test_the_held_out_text_is_two_whole_chapters_with_its_source():
    text = HELDOUT_TEXT.read_text(encoding="utf-8")
    assert text.startswith("CHAPTER I.\nDown the Rabbit-Hole\n") and "CHAPTER II.\nThe Pool of Tears" in text
    assert text.rstrip().endswith("and the whole party swam to the shore.") and "CHAPTER III" not in text
    assert 4000 < len(text.split()) < 5000 and "\r" not in text
    readme = (HELDOUT_TEXT.parent / "README.md").read_text()
    assert HELDOUT_TEXT.name in readme and "public domain" in readme and "eBook #11" in readme
