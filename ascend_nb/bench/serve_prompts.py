"""Prompts for a load benchmark: seeded random token ids, a ShareGPT JSON file or C-Eval-format questions.

Random prompts are ``input_len`` token ids (the sweep's :func:`~ascend_nb.bench.latency_sweep.random_prompts`),
sent as ids where the server accepts them and otherwise as their decoded text (which the server
re-tokenizes, so its prompt length can differ a little: the recorded length is the server's count).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ascend_nb.errors import AscendNbError


@dataclass(frozen=True)
class LoadPrompt:
    """One prompt: ``ids`` (random prompts) and/or ``text``; ``prompt_len`` is its length in tokens, if known."""

    text: str | None = None
    ids: tuple[int, ...] | None = None
    prompt_len: int = 0

    def body(self, as_ids: bool) -> dict:
        """The ``/completions`` prompt field: the ids when ``as_ids`` and available, else the text."""
        return {"prompt": list(self.ids)} if as_ids and self.ids is not None else {"prompt": self.text}


def load_tokenizer(name_or_dir: str | Path):
    """The tokenizer of a registry model or a local model directory (for random prompts of N tokens)."""
    from transformers import AutoTokenizer

    from ascend_nb.engine.loading import resolve_model_dir

    return AutoTokenizer.from_pretrained(resolve_model_dir(name_or_dir))


def random_load_prompts(tokenizer, num_prompts: int, input_len: int, seed: int = 0) -> list[LoadPrompt]:
    """``num_prompts`` seeded prompts of ``input_len`` random ids (no special tokens), with their text."""
    from ascend_nb.bench.latency_sweep import random_prompts

    if num_prompts < 1 or input_len < 1:
        raise AscendNbError(f"num_prompts and input_len must be >= 1, got {num_prompts} and {input_len}")
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(len(tokenizer)) if i not in special]
    rows = random_prompts(len(ordinary), num_prompts, input_len, seed)
    prompts = []
    for row in rows:
        ids = tuple(ordinary[i] for i in row)
        prompts.append(LoadPrompt(text=tokenizer.decode(list(ids)), ids=ids, prompt_len=input_len))
    return prompts


def _sharegpt_texts(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AscendNbError(f"{path} is not a readable ShareGPT JSON file ({exc}): fix or re-download it") from None
    texts = []
    for entry in data if isinstance(data, list) else []:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        first = turns[0] if isinstance(turns, list) and turns else None
        if isinstance(first, dict) and first.get("from") == "human" and str(first.get("value", "")).strip():
            texts.append(str(first["value"]))
    if not texts:
        raise AscendNbError(f"{path} holds no ShareGPT conversations: expected a JSON list of "
                            '{"conversations": [{"from": "human", "value": ...}, ...]}')
    return texts


def _ceval_texts(path: Path) -> list[str]:
    from ascend_nb.precision.ceval import format_question, prompt_header, read_questions, split_files

    texts = []
    for subject, csv_path in split_files(path, "val").items():
        header = prompt_header(subject, "generate")
        texts += [header + format_question(q, "generate") for q in read_questions(csv_path)]
    return texts


def dataset_prompts(path: str | Path, num_prompts: int, seed: int = 0) -> list[LoadPrompt]:
    """``num_prompts`` text prompts drawn (seeded shuffle, repeated if the set is smaller) from a
    ShareGPT JSON file (each conversation's first human turn) or a C-Eval-format directory (val split,
    zero-shot in the Ascend harness's prompt)."""
    path = Path(path).expanduser()
    if path.is_dir():
        texts = _ceval_texts(path)
    elif path.is_file():
        texts = _sharegpt_texts(path)
    else:
        raise AscendNbError(f"dataset {path} does not exist: give a ShareGPT .json file or a C-Eval-format directory")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [LoadPrompt(text=texts[order[i % len(order)]]) for i in range(num_prompts)]
