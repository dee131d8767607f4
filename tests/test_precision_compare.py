"""compare_models(): layer-by-layer metrics of two engines, against the Engine interface only."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import ascend_nb
from ascend_nb.errors import AscendNbError
from ascend_nb.precision.engine_compare import compare_models
from ascend_nb.precision.metrics import THRESHOLDS, compare_tensors


class TensorEngine:
    """Just the Engine interface compare_models uses, returning hand-made tensors: a test double for a model."""

    def __init__(self, hidden: list[torch.Tensor], logits: torch.Tensor, dtype=torch.float32, vocab_offset: int = 0):
        self.hidden, self.logits, self.dtype = hidden, logits, dtype
        self.spec, self.backend, self.device = SimpleNamespace(name="hand-made"), "tensors", torch.device("cpu")
        self.vocab_offset = vocab_offset
        self.seen: list[list[int]] = []

    def encode(self, text: str) -> list[int]:
        return [ord(c) + self.vocab_offset for c in text]

    def forward(self, input_ids, output_hidden_states=False):
        self.seen.append(input_ids[0].tolist())
        length = input_ids.shape[1]
        return self.logits[:, :length], [h[:, :length] for h in self.hidden]


def hand_made(scale_layer: int | None = None, factor: float = 1.0) -> TensorEngine:
    generator = torch.Generator().manual_seed(0)
    hidden = [torch.randn(1, 8, 4, generator=generator) for _ in range(3)]
    logits = torch.randn(1, 8, 10, generator=generator)
    if scale_layer is not None:
        hidden[scale_layer] = hidden[scale_layer] * factor
    return TensorEngine(hidden, logits)


def test_rows_name_every_hidden_state_and_the_logits():
    report = compare_models(hand_made(), hand_made(), prompts=["abc", "defgh"])
    assert report.table["tensor"].tolist() == ["embeddings", "layer 1", "layer 2", "logits"]
    assert report.table["layer"].tolist() == [0, 1, 2, 3]
    assert report.reached and report.failing == [] and report.tokens == 8 and report.prompts == 2
    assert report.table["Cosine"].tolist() == pytest.approx([1.0] * 4) and (report.table["MaxAbsErr"] == 0).all()
    assert report.thresholds is THRESHOLDS["float32"]


def test_a_perturbed_layer_is_not_reached_and_named():
    reference, candidate = hand_made(), hand_made(scale_layer=1, factor=1.1)
    report = compare_models(reference, candidate, prompts=["abcd"])
    assert not report.reached and report.failing == ["layer 1"]
    row = report.table.set_index("tensor").loc["layer 1"]
    expected = compare_tensors(reference.hidden[1][:, :4], candidate.hidden[1][:, :4])
    assert row["MaxAbsErr"] == pytest.approx(expected["MaxAbsErr"]) and row["MaxAbsErr"] > 0
    assert row["MaxRelativeErr"] == pytest.approx(0.1)
    assert math.isnan(row["KL divergence"])
    summary = report.summary()
    assert "NOT reached (layer 1)" in summary and "float32: Cosine >= 0.99" in summary


def test_metrics_accumulate_over_all_prompts_as_one_tensor():
    reference, candidate = hand_made(), hand_made(scale_layer=2, factor=0.9)
    report = compare_models(reference, candidate, prompts=["ab", "abcde"])
    both = lambda engine: torch.cat([engine.hidden[2][:, :2], engine.hidden[2][:, :5]], dim=1)  # noqa: E731
    expected = compare_tensors(both(reference), both(candidate))
    assert report.table.set_index("tensor").loc["layer 2", "MeanAbsErr"] == pytest.approx(expected["MeanAbsErr"])
    assert report.to_dict()["tensors"][3]["tensor"] == "logits"
    assert report.to_dict()["tensors"][0]["KL divergence"] is None


def test_token_ids_are_sent_to_both_engines_unchanged():
    reference, candidate = hand_made(), hand_made()
    compare_models(reference, candidate, prompts=[[5, 6, 7]])
    assert reference.seen == candidate.seen == [[5, 6, 7]]


def test_thresholds_come_from_the_less_precise_engine():
    candidate = hand_made()
    candidate.dtype = torch.bfloat16
    assert compare_models(hand_made(), candidate, prompts=["a"]).thresholds is THRESHOLDS["bfloat16"]


def test_engines_of_different_models_are_refused():
    with pytest.raises(AscendNbError, match="tokenize 'abc' differently"):
        compare_models(hand_made(), TensorEngine(hand_made().hidden, hand_made().logits, vocab_offset=1), ["abc"])
    fewer = hand_made()
    fewer.hidden = fewer.hidden[:2]
    with pytest.raises(AscendNbError, match="return 3 and 2 hidden states"):
        compare_models(hand_made(), fewer, ["abc"])
    with pytest.raises(AscendNbError, match="at least one prompt"):
        compare_models(hand_made(), hand_made(), [])


def test_a_tiny_llama_against_itself_and_in_bfloat16(tiny_llama_dir, tiny_engine):
    same = compare_models(tiny_engine, tiny_engine)
    assert same.reached and (same.table["MaxAbsErr"] == 0).all()
    assert len(same.table) == tiny_engine.config.num_hidden_layers + 2
    bf16 = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="bfloat16")
    report = compare_models(tiny_engine, bf16)
    assert report.thresholds is THRESHOLDS["bfloat16"]
    assert (report.table["Cosine"] > 0.99).all()
    assert (report.table["MaxAbsErr"] > 0).all()
    logits = report.table.iloc[-1]
    assert logits["KL divergence"] >= 0 and 0 <= logits["Top-1 Agreement"] <= 1


@pytest.mark.slow
def test_the_embedded_model_in_bfloat16_reaches_the_bfloat16_thresholds(embedded_engine):
    bf16 = ascend_nb.load("smollm2-135m-instruct", device="cpu", dtype="bfloat16")
    report = compare_models(embedded_engine, bf16)
    print(report.summary())
    assert report.reached, report.table
    logits = report.table.iloc[-1]
    assert logits["Cosine"] > 0.999 and logits["Top-1 Agreement"] >= 0.9 and logits["KL divergence"] < 0.01


def test_headline_names_each_protocol_and_the_verdict():
    import pandas as pd

    from ascend_nb.precision import EvalResult, headline

    predictions = pd.DataFrame({"id": range(4), "subject": "logic", "category": "Humanities",
                                "truth": ["A", "B", "C", ""], "pred": ["A", "B", "D", "A"], "shots": 0,
                                "correct": [True, True, False, False]})
    runs = [EvalResult(predictions, "logits", 0, "val", "m · logits"), EvalResult(predictions, "generate", 5, "val")]
    first, second = headline(runs).splitlines()
    assert first.startswith("m · logits: Avg acc 0.667 (2/3 questions, 95% interval ") and "logits protocol, 0-shot" in first
    assert second.startswith("generate: Avg acc 0.667") and "generate protocol, 5-shot, val split" in second
