"""Multiple-choice accuracy of an engine on a C-Eval / MMLU-format directory, by subject and category.

Each question is scored under one protocol (see :mod:`ascend_nb.precision.ceval`). With an
``output_dir`` every answer is appended to ``predictions.csv`` as it is produced, so an interrupted
run resumes where it stopped; ``run.json`` pins every setting that changes a prediction (see
:func:`run_settings`) so one directory never mixes runs, and ``summary.json`` is written at the end.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ascend_nb.files import atomic_write_text
from ascend_nb.dtypes import dtype_name
from ascend_nb.models.params import GenerationParams
from ascend_nb.errors import AscendNbError
from ascend_nb.precision.ceval import (
    CATEGORIES, CHOICES, PROTOCOL_DESCRIPTIONS, Question, check_protocol, fit_prompt, read_questions, render_prompt,
    split_files, subject_info,
)

GENERATE_MAX_NEW_TOKENS = 32  # the Ascend harness generates up to 32 tokens
MAX_SHOTS = 5  # C-Eval and MMLU dev files hold 5 examples per subject
AVG_ACC = "Avg acc"
PREDICTION_COLUMNS = ("id", "subject", "category", "truth", "pred", "shots")
PREDICTIONS_FILE = "predictions.csv"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"

OnResult = Callable[[dict, int, int], None]


def binomial_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of an accuracy ``correct / n`` (95% by default); NaNs when ``n == 0``."""
    if n == 0:
        return math.nan, math.nan
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EvalResult:
    """Per-question predictions of one run and the accuracy tables derived from them."""

    predictions: pd.DataFrame  # id, subject, category, truth, pred, shots, correct
    protocol: str
    shots: int
    split: str
    label: str = ""

    @property
    def scored(self) -> pd.DataFrame:
        """The predictions whose truth is known (the C-Eval test split hides it)."""
        return self.predictions[self.predictions["truth"] != ""]

    @property
    def n(self) -> int:
        return len(self.scored)

    @property
    def avg_acc(self) -> float:
        """Micro average over all scored questions (the guides' "Avg acc")."""
        return float(self.scored["correct"].mean()) if self.n else math.nan

    def by_subject(self) -> pd.DataFrame:
        """Accuracy per subject: ``subject, category, correct, n, acc``."""
        grouped = self.scored.groupby(["subject", "category"], sort=False)["correct"]
        table = grouped.agg(correct="sum", n="count").reset_index()
        table["acc"] = table["correct"] / table["n"]
        return table

    def by_category(self) -> pd.DataFrame:
        """The guides' table: STEM, Social Science, Humanities, Other and Avg acc, with ``acc, correct, n``
        and the 95% Wilson interval ``ci_low, ci_high``."""
        scored = self.scored
        rows = {}
        for name in (*CATEGORIES, AVG_ACC):
            part = scored if name == AVG_ACC else scored[scored["category"] == name]
            correct, n = int(part["correct"].sum()), len(part)
            low, high = binomial_interval(correct, n)
            rows[name] = {"acc": correct / n if n else math.nan, "correct": correct, "n": n,
                          "ci_low": low, "ci_high": high}
        return pd.DataFrame.from_dict(rows, orient="index")

    def summary(self) -> dict:
        """``{"protocol", "shots", "split", "categories": {name: {"acc", "n"}}, "avg_acc", "n"}`` (JSON-ready)."""
        table = self.by_category()
        categories = {name: {"acc": _json_float(table.at[name, "acc"]), "n": int(table.at[name, "n"])}
                      for name in CATEGORIES}
        return {"protocol": self.protocol, "shots": self.shots, "split": self.split, "label": self.label,
                "categories": categories, "avg_acc": _json_float(self.avg_acc), "n": self.n}

    def describe(self) -> str:
        """One line naming what produced these numbers."""
        return (f"{self.label} · {self.split} split · protocol {self.protocol} ({PROTOCOL_DESCRIPTIONS[self.protocol]})"
                f" · {self.shots}-shot · {self.n} questions")


def _json_float(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def engine_label(engine) -> str:
    """``model (backend, device, dtype[, quantize])``: how a run is named in tables (a served model has no dtype here)."""
    details = [engine.backend, engine.device.type] + ([dtype_name(engine.dtype)] if engine.dtype else [])
    details += [engine.quantize] if getattr(engine, "quantize", None) else []
    return f"{engine.spec.name} ({', '.join(details)})"


def choice_token_ids(tokenizer, context: str = "\n答案：") -> list[int]:
    """Token ids of A/B/C/D as they follow ``context`` (the answer cue), falling back to the bare letter."""
    base = tokenizer.encode(context, add_special_tokens=False)
    ids = []
    for letter in CHOICES:
        full = tokenizer.encode(context + letter, add_special_tokens=False)
        ids.append(full[-1] if full[:-1] == base else tokenizer.encode(letter, add_special_tokens=False)[-1])
    if len(set(ids)) != len(CHOICES):
        raise AscendNbError("this tokenizer has no distinct tokens for A/B/C/D: use protocol 'generate'")
    return ids


def predict_logits(engine, prompt_ids: list[int], letter_ids: Sequence[int]) -> str:
    """The letter whose token has the highest last-position logit."""
    logits, _ = engine.forward(torch.tensor([prompt_ids], dtype=torch.long, device=engine.device))
    return CHOICES[int(logits[0, -1, list(letter_ids)].argmax())]


def predict_generate(engine, prompt: str | list[int], max_new_tokens: int = GENERATE_MAX_NEW_TOKENS) -> str:
    """The first non-space character of the greedy reply ("" if there is none).

    Generation stops as soon as that character exists: with greedy decoding the rest of the
    ``max_new_tokens`` cannot change it.
    """
    stop = threading.Event()
    text = ""
    for piece in engine.stream(prompt, GenerationParams(max_new_tokens=max_new_tokens), stop_event=stop):
        text += piece
        if text.strip():
            stop.set()
    return text.lstrip()[:1]


def build_prompt(engine, question: Question, examples: list[Question], protocol: str,
                 reserve: int) -> tuple[str | list[int], int]:
    """The prompt (token ids fitted to ``max_seq_len - reserve``) and the shots kept; an engine without a
    local length limit (a served model) gets the text with every shot, the server enforcing its own."""
    if engine.max_seq_len is None:
        return render_prompt(question, examples, protocol), len(examples)
    return fit_prompt(question, examples, protocol, engine.encode, engine.max_seq_len - reserve)


def load_questions(data_dir: str | Path, split: str, subjects: Sequence[str] | None, limit: int | None,
                   shots: int) -> list[tuple[Question, list[Question]]]:
    """The questions to ask (the first ``limit`` of each subject) with each subject's dev examples."""
    if not 0 <= shots <= MAX_SHOTS:
        raise AscendNbError(f"shots must be between 0 and {MAX_SHOTS} (the dev examples per subject), got {shots}")
    if limit is not None and limit <= 0:
        raise AscendNbError(f"limit must be a positive number of questions per subject, got {limit}")
    files = split_files(data_dir, split)
    if subjects:
        missing = sorted(set(subjects) - set(files))
        if missing:
            raise AscendNbError(f"no {split} file for subject(s) {', '.join(missing)} in {Path(data_dir) / split}: "
                                f"available are {', '.join(files)}")
        files = {name: files[name] for name in subjects}
    dev_files = split_files(data_dir, "dev") if shots else {}
    tasks = []
    for subject, path in files.items():
        examples = []
        if shots:
            if subject not in dev_files:
                raise AscendNbError(f"no dev/{subject}_dev.csv for few-shot examples: add it or use shots=0")
            examples = read_questions(dev_files[subject])[:shots]
        questions = read_questions(path, require_answer=split != "test")
        tasks.extend((question, examples) for question in questions[:limit])
    return tasks


class PredictionLog:
    """``predictions.csv`` written one line per answer (a torn last line is dropped on resume) beside
    ``run.json``, which must match for a resume."""

    def __init__(self, output_dir: str | Path, settings: dict):
        self.dir = Path(output_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / PREDICTIONS_FILE
        run_file = self.dir / RUN_FILE
        if run_file.exists():
            previous = json.loads(run_file.read_text())
            changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
            if changed:
                detail = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
                raise AscendNbError(f"{self.dir} holds a run with other settings ({detail}): "
                                    "choose another output directory or delete it to start over")
        else:
            atomic_write_text(run_file, json.dumps(settings, indent=2, ensure_ascii=False) + "\n")

    def read(self) -> dict[tuple[str, str], dict]:
        """The answers already written, by ``(subject, id)``."""
        if not self.path.exists():
            return {}
        text = self.path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # interrupted mid-line: drop the torn line
            text = text[: text.rfind("\n") + 1]
            atomic_write_text(self.path, text)
        rows = list(csv.DictReader(io.StringIO(text)))
        return {(row["subject"], row["id"]): {**row, "shots": int(row["shots"])} for row in rows}

    def append(self, row: dict) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=PREDICTION_COLUMNS, extrasaction="ignore", lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())


def run_settings(engine, data_dir: str | Path, split: str, shots: int, protocol: str, max_new_tokens: int) -> dict:
    """Everything that can change a prediction, pinned in ``run.json``: a resume under other values is refused.

    ``max_seq_len`` decides how many shots fit; ``max_new_tokens`` only matters to the generate protocol;
    ``quantize`` and ``tp`` change the accelerated backend's numerics.
    """
    return {"protocol": protocol, "shots": shots, "split": split,
            "data_dir": str(Path(data_dir).expanduser().resolve()), "model": engine.spec.name,
            "source": str(getattr(engine, "model_dir", None) or repr(engine)), "backend": engine.backend,
            "dtype": dtype_name(engine.dtype), "device": engine.device.type, "max_seq_len": engine.max_seq_len,
            "max_new_tokens": max_new_tokens if protocol == "generate" else None,
            "quantize": getattr(engine, "quantize", None),
            "tp": getattr(getattr(engine, "tp", None), "world_size", 1)}


def evaluate(engine, data_dir: str | Path, split: str = "val", shots: int = 0, protocol: str = "logits",
             subjects: Sequence[str] | None = None, limit: int | None = None, output_dir: str | Path | None = None,
             on_result: OnResult | None = None, max_new_tokens: int = GENERATE_MAX_NEW_TOKENS) -> EvalResult:
    """Ask every question of ``split`` under ``protocol`` and score the answers.

    ``shots`` (0-5) dev examples open each prompt, dropped from the end until the prompt fits the
    engine's ``max_seq_len``. ``subjects`` restricts the run (default: every file of the split);
    ``limit`` keeps the first N questions of each subject. ``output_dir`` makes the run resumable
    (see the module docstring). ``on_result(row, done, total)`` is called once per question in order,
    including those read back from ``output_dir``. ``max_new_tokens`` bounds the ``generate`` protocol.
    """
    check_protocol(protocol)
    tasks = load_questions(data_dir, split, subjects, limit, shots)
    letter_ids = None
    if protocol == "logits":
        if engine.tokenizer is None:
            raise AscendNbError(f"the {engine.backend} backend exposes no tokenizer or logits: use protocol 'generate'")
        letter_ids = choice_token_ids(engine.tokenizer)
    label = engine_label(engine)
    log = None
    done: dict[tuple[str, str], dict] = {}
    if output_dir is not None:
        log = PredictionLog(output_dir, run_settings(engine, data_dir, split, shots, protocol, max_new_tokens))
        done = log.read()
    reserve = max_new_tokens if protocol == "generate" else 0
    rows = []
    for index, (question, examples) in enumerate(tasks, start=1):
        row = done.get((question.subject, question.id))
        if row is None:
            prompt, kept = build_prompt(engine, question, examples, protocol, reserve)
            if protocol == "logits":
                pred = predict_logits(engine, prompt, letter_ids)
            else:
                pred = predict_generate(engine, prompt, max_new_tokens)
            row = {"id": question.id, "subject": question.subject, "category": subject_info(question.subject).category,
                   "truth": question.answer or "", "pred": pred, "shots": kept}
            if log is not None:
                log.append(row)
        rows.append(row)
        if on_result is not None:
            on_result(row, index, len(tasks))
    predictions = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    predictions["shots"] = predictions["shots"].astype(int)
    predictions["correct"] = (predictions["pred"] == predictions["truth"]) & (predictions["truth"] != "")
    result = EvalResult(predictions, protocol=protocol, shots=shots, split=split, label=label)
    if log is not None:
        atomic_write_text(log.dir / SUMMARY_FILE, json.dumps(result.summary(), indent=2, ensure_ascii=False) + "\n")
    return result
