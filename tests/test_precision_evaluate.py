"""evaluate(): known accuracies per category from a scripted engine, both protocols, resume, errors.

``ScriptedEngine`` is a test double for the model (not for hardware): a real ``Engine`` subclass whose
"model" answers each known question with a scripted letter (logits) or reply (generate), so the whole
evaluation path, including the engine's own generation loop, runs with known answers.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ascend_nb.engine.base import Engine
from ascend_nb.errors import AscendNbError
from ascend_nb.models.registry import GENERIC_LLAMA
from ascend_nb.precision.accuracy import (
    AVG_ACC, PREDICTIONS_FILE, RUN_FILE, SUMMARY_FILE, binomial_interval, choice_token_ids, evaluate,
)

VOCAB = 4096
# subject -> (truths, scripted answers): STEM 4/4, Social Science 2/4, Humanities 1/4, Other 0/4
SCRIPT = {
    "computer_network": ("ABCD", "ABCD"),
    "college_economics": ("AABB", "ABAB"),
    "logic": ("CCCC", "CDAB"),
    "physician": ("DDDA", "ABCB"),
}
EXPECTED = {"STEM": 1.0, "Social Science": 0.5, "Humanities": 0.25, "Other": 0.0, AVG_ACC: 7 / 16}


class CharTokenizer:
    """One token per character: ASCII keeps its code point, other characters get ids on first sight."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    chat_template = None

    def __init__(self):
        self.ids = {chr(i): i for i in (10, *range(32, 127))}
        self.chars = {i: c for c, i in self.ids.items()}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        for char in text:
            if char not in self.ids:
                self.ids[char] = 127 + len(self.ids)
                self.chars[self.ids[char]] = char
        return [self.bos_token_id] * add_special_tokens + [self.ids[c] for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(self.chars.get(i, "") for i in ids)


class ScriptedEngine(Engine):
    """Answers question text -> letter (``forward``) or question text -> reply (``_prefill``/``_decode``)."""

    backend = "scripted"

    def __init__(self, answers: dict[str, str], replies: dict[str, str] | None = None, max_seq_len: int = 4096):
        tokenizer = CharTokenizer()
        super().__init__(model_dir=Path("/nonexistent/scripted"), spec=replace(GENERIC_LLAMA, name="scripted"),
                         tokenizer=tokenizer, config=SimpleNamespace(vocab_size=VOCAB, eos_token_id=2),
                         device=torch.device("cpu"), dtype=torch.float32, max_seq_len=max_seq_len)
        self.answers, self.replies = answers, replies or {}
        self.calls = 0
        self.prompts: list[str] = []
        self._pending: list[str] = []

    def _question(self, input_ids: torch.Tensor) -> str:
        text = self.tokenizer.decode(input_ids[0].tolist())
        self.prompts.append(text)
        return max(self.answers, key=text.rfind)

    def forward(self, input_ids, output_hidden_states=False):
        self.calls += 1
        logits = torch.zeros(1, input_ids.shape[1], VOCAB)
        logits[0, -1, self.tokenizer.encode("的", False)[0]] = 10.0  # a non-letter wins overall: A-D must be picked
        logits[0, -1, ord(self.answers[self._question(input_ids)])] = 5.0
        return logits, None

    def _prefill(self, input_ids, attention_mask):
        self.calls += 1
        self._pending = list(self.replies[self._question(input_ids)])
        return self._decode(None)

    def _decode(self, tokens):
        logits = torch.zeros(1, VOCAB)
        token = self.tokenizer.encode(self._pending.pop(0), False)[0] if self._pending else self.tokenizer.eos_token_id
        logits[0, token] = 1.0
        return logits


def make_dataset(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A C-Eval-format directory from SCRIPT; returns question -> scripted letter and -> scripted reply."""
    answers, replies = {}, {}
    for subject, (truths, picks) in SCRIPT.items():
        for split in ("val", "dev"):
            path = root / split / f"{subject}_{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["id", "question", "A", "B", "C", "D", "answer"])
                for i, truth in enumerate(truths if split == "val" else "ABCDA"):
                    question = f"{subject} {split} 第{i}题：哪一项正确？"
                    writer.writerow([i, question, "甲", "乙", "丙", "丁", truth])
                    if split == "val":
                        answers[question] = picks[i]
                        replies[question] = f" {picks[i]}. 因为……\n"
    return answers, replies


@pytest.fixture
def dataset(tmp_path):
    return (tmp_path / "ceval", *make_dataset(tmp_path / "ceval"))


def accuracies(result) -> dict[str, float]:
    return result.by_category()["acc"].to_dict()


def test_logits_protocol_gives_the_known_accuracy_per_category(dataset):
    data_dir, answers, _ = dataset
    result = evaluate(ScriptedEngine(answers), data_dir)
    assert accuracies(result) == pytest.approx(EXPECTED)
    assert result.avg_acc == pytest.approx(7 / 16) and result.n == 16
    assert list(result.predictions.columns[:6]) == ["id", "subject", "category", "truth", "pred", "shots"]
    by_subject = result.by_subject().set_index("subject")
    assert by_subject.loc["college_economics", "acc"] == 0.5 and by_subject.loc["logic", "category"] == "Humanities"


def test_generate_protocol_takes_the_first_non_space_character(dataset):
    data_dir, answers, replies = dataset
    question = next(q for q in replies if q.startswith("computer_network val 第0题"))
    replies[question] = "答案是A"  # the harness reads "答": wrong although the reply names A
    engine = ScriptedEngine(answers, replies)
    result = evaluate(engine, data_dir, protocol="generate")
    assert accuracies(result)["STEM"] == 0.75
    first = result.predictions.set_index(["subject", "id"]).loc[("computer_network", "0")]
    assert first["pred"] == "答" and first["truth"] == "A"
    assert all(p.endswith("\nAnswer:") and p.startswith("The following are") for p in engine.prompts)


def test_the_summary_has_the_cli_json_shape(dataset):
    data_dir, answers, _ = dataset
    summary = evaluate(ScriptedEngine(answers), data_dir, shots=2).summary()
    assert summary["protocol"] == "logits" and summary["shots"] == 2 and summary["split"] == "val"
    assert summary["categories"]["Social Science"] == {"acc": 0.5, "n": 4}
    assert list(summary["categories"]) == ["STEM", "Social Science", "Humanities", "Other"]
    assert summary["avg_acc"] == pytest.approx(7 / 16) and summary["n"] == 16
    json.dumps(summary)


def test_few_shot_prompts_shrink_to_fit_max_seq_len(dataset):
    data_dir, answers, _ = dataset
    roomy = ScriptedEngine(answers)
    assert set(evaluate(roomy, data_dir, shots=3).predictions["shots"]) == {3}
    assert all("第2题" in p and "答案：C\n\n" in p for p in roomy.prompts)  # dev examples with their answers
    logic_prompt_tokens = 1 + len(next(p for p in roomy.prompts if p.endswith("logic val 第0题：哪一项正确？"
                                                                             "\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：")))
    tight = ScriptedEngine(answers, max_seq_len=logic_prompt_tokens - 1)
    result = evaluate(tight, data_dir, shots=3, subjects=["logic"])
    assert set(result.predictions["shots"]) == {2}
    assert accuracies(result)["Humanities"] == 0.25


def test_subjects_and_limit_restrict_the_run(dataset):
    data_dir, answers, _ = dataset
    engine = ScriptedEngine(answers)
    result = evaluate(engine, data_dir, subjects=["logic", "physician"], limit=2)
    assert engine.calls == 4 and set(result.predictions["subject"]) == {"logic", "physician"}
    assert math.isnan(accuracies(result)["STEM"])
    with pytest.raises(AscendNbError, match="no val file for subject"):
        evaluate(engine, data_dir, subjects=["marxism"])


@pytest.mark.parametrize("options, message", [
    ({"shots": 6}, "shots must be between 0 and 5"),
    ({"limit": 0}, "limit must be a positive"),
    ({"protocol": "mmlu"}, "unknown protocol"),
    ({"split": "test"}, "no {subject}_test.csv"),
])
def test_bad_options_give_one_clear_error(dataset, options, message):
    data_dir, answers, _ = dataset
    with pytest.raises(AscendNbError, match=message):
        evaluate(ScriptedEngine(answers), data_dir, **options)


def test_an_interrupted_run_resumes_where_it_stopped(dataset, tmp_path):
    data_dir, answers, _ = dataset
    output = tmp_path / "run"
    seen = []

    def interrupt_after_five(row, done, total):
        seen.append((done, total))
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(ScriptedEngine(answers), data_dir, output_dir=output, on_result=interrupt_after_five)
    assert seen[-1] == (5, 16)
    lines = (output / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,subject,category,truth,pred,shots" and len(lines) == 6
    assert not (output / SUMMARY_FILE).exists()
    with open(output / PREDICTIONS_FILE, "a", encoding="utf-8") as handle:
        handle.write("5,computer_net")  # a line torn by the interruption

    resumed_engine = ScriptedEngine(answers)
    progress = []
    resumed = evaluate(resumed_engine, data_dir, output_dir=output, on_result=lambda r, d, t: progress.append(d))
    assert resumed_engine.calls == 11 and progress == list(range(1, 17))
    fresh = evaluate(ScriptedEngine(answers), data_dir)
    assert resumed.predictions.equals(fresh.predictions)
    assert len((output / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()) == 17
    assert json.loads((output / SUMMARY_FILE).read_text())["avg_acc"] == pytest.approx(7 / 16)
    assert json.loads((output / RUN_FILE).read_text())["protocol"] == "logits"

    again = ScriptedEngine(answers)
    evaluate(again, data_dir, output_dir=output)
    assert again.calls == 0


def test_an_output_directory_never_mixes_protocols(dataset, tmp_path):
    data_dir, answers, replies = dataset
    evaluate(ScriptedEngine(answers), data_dir, limit=1, output_dir=tmp_path / "run")
    with pytest.raises(AscendNbError, match="protocol 'logits' -> 'generate'"):
        evaluate(ScriptedEngine(answers, replies), data_dir, protocol="generate", output_dir=tmp_path / "run")


def test_a_resume_must_match_every_setting_that_changes_a_prediction(dataset, tmp_path):
    data_dir, answers, replies = dataset
    run = tmp_path / "run"
    evaluate(ScriptedEngine(answers, replies), data_dir, protocol="generate", limit=1, output_dir=run, max_new_tokens=1)
    with pytest.raises(AscendNbError, match="other settings \\(max_new_tokens 1 -> 32\\)"):
        evaluate(ScriptedEngine(answers, replies), data_dir, protocol="generate", output_dir=run, max_new_tokens=32)
    with pytest.raises(AscendNbError, match="other settings \\(max_seq_len 4096 -> 512\\)"):
        evaluate(ScriptedEngine(answers, replies, max_seq_len=512), data_dir, protocol="generate", output_dir=run,
                 max_new_tokens=1)
    quantized = ScriptedEngine(answers, replies)
    quantized.quantize = "int8"
    with pytest.raises(AscendNbError, match="other settings \\(quantize None -> 'int8'\\)"):
        evaluate(quantized, data_dir, protocol="generate", output_dir=run, max_new_tokens=1)
    # max_new_tokens does not touch the logits protocol's predictions: no reason to refuse there
    evaluate(ScriptedEngine(answers), data_dir, limit=1, output_dir=tmp_path / "logits", max_new_tokens=1)
    evaluate(ScriptedEngine(answers), data_dir, limit=1, output_dir=tmp_path / "logits", max_new_tokens=32)


def test_choice_tokens_follow_the_answer_cue():
    tokenizer = CharTokenizer()
    assert choice_token_ids(tokenizer) == [ord(c) for c in "ABCD"]


def test_binomial_interval_is_the_wilson_score_interval():
    assert binomial_interval(7, 16) == pytest.approx((0.2310, 0.6682), abs=1e-4)
    assert binomial_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert binomial_interval(0, 4)[0] == 0.0 and binomial_interval(4, 4)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in binomial_interval(0, 0))


def test_the_test_split_gives_predictions_without_accuracy(dataset):
    data_dir, answers, _ = dataset
    val = (data_dir / "val" / "logic_val.csv").read_text(encoding="utf-8").splitlines()
    hidden = [line.rsplit(",", 1)[0] for line in val]  # drop the answer column
    (data_dir / "test").mkdir()
    (data_dir / "test" / "logic_test.csv").write_text("\n".join(hidden) + "\n", encoding="utf-8")
    result = evaluate(ScriptedEngine(answers), data_dir, split="test")
    assert result.predictions["pred"].tolist() == list("CDAB") and set(result.predictions["truth"]) == {""}
    assert result.n == 0 and math.isnan(result.avg_acc) and result.summary()["avg_acc"] is None


class ServedEngine:
    """Duck-types the openai backend (a test double for a model server): text prompts, streamed replies,
    no tokenizer, no logits, no local length limit."""

    backend = "openai"
    tokenizer = max_seq_len = dtype = None

    def __init__(self, replies: dict[str, str]):
        self.replies = replies
        self.spec, self.device = SimpleNamespace(name="served"), torch.device("cpu")
        self.prompts: list[str] = []

    def stream(self, prompt, params, stop_event=None):
        self.prompts.append(prompt)
        for char in self.replies[max(self.replies, key=prompt.rfind)][: params.max_new_tokens]:
            yield char
            if stop_event.is_set():
                return


def test_a_served_model_answers_the_generate_protocol_from_text_prompts(dataset, tmp_path):
    data_dir, _, replies = dataset
    engine = ServedEngine(replies)
    result = evaluate(engine, data_dir, protocol="generate", shots=2, output_dir=tmp_path / "served")
    assert accuracies(result) == pytest.approx(EXPECTED)
    assert result.label == "served (openai, cpu)" and set(result.predictions["shots"]) == {2}
    assert all(isinstance(p, str) and p.count("\nAnswer: ") == 2 for p in engine.prompts)
    assert json.loads((tmp_path / "served" / RUN_FILE).read_text())["backend"] == "openai"
    with pytest.raises(AscendNbError, match="no tokenizer or logits: use protocol 'generate'"):
        evaluate(engine, data_dir)
