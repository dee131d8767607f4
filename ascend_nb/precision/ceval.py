"""C-Eval / MMLU-format multiple-choice data: layout, subjects and categories, prompts of both protocols.

Layout: ``{data_dir}/{split}/{subject}_{split}.csv`` for split ``dev`` (few-shot examples), ``val`` and
``test``. C-Eval files have a header ``id,question,A,B,C,D,answer[,explanation]`` (``test`` has no
answer column); MMLU files have no header and six columns ``question,A,B,C,D,answer``.

Two prompt protocols (DESIGN.md section 5); a number always names the one that produced it:

- ``logits``, the official C-Eval scoring: the header
  ``以下是中国关于{subject_zh}考试的单项选择题，请选出其中的正确答案。\\n\\n``, each shot
  ``{question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n答案：{answer}\\n\\n``, and the question itself ending in
  ``\\n答案：``; the prediction is the argmax of the last-position logits over the tokens A/B/C/D.
- ``generate``, the Ascend harness (MMLU style): the header
  ``The following are multiple choice questions (with answers) about {subject}.\\n\\n`` where ``{subject}``
  is the subject's words each preceded by a space (MMLU's ``format_subject``, hence two spaces after
  "about"), each shot ``{question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer: {answer}\\n\\n``, the question
  ending in ``\\nAnswer:``; the model generates greedily and the first non-space character is the answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ascend_nb.errors import AscendNbError
from ascend_nb.files import DATA_DIR

CHOICES = ("A", "B", "C", "D")
CATEGORIES = ("STEM", "Social Science", "Humanities", "Other")
SPLITS = ("dev", "val", "test")
PROTOCOLS = ("logits", "generate")
PROTOCOL_DESCRIPTIONS = {
    "logits": "official C-Eval: Chinese prompt, argmax over the A/B/C/D logits",
    "generate": "Ascend harness: English MMLU-style prompt, greedy generation, first letter",
}
SAMPLE_DATA_DIR = DATA_DIR / "ceval_sample"

# The 52 C-Eval subjects: category -> {subject: Chinese name}
_CEVAL = {
    "STEM": {
        "computer_network": "计算机网络", "operating_system": "操作系统", "computer_architecture": "计算机组成",
        "college_programming": "大学编程", "college_physics": "大学物理", "college_chemistry": "大学化学",
        "advanced_mathematics": "高等数学", "probability_and_statistics": "概率统计",
        "discrete_mathematics": "离散数学", "electrical_engineer": "注册电气工程师",
        "metrology_engineer": "注册计量师", "high_school_mathematics": "高中数学",
        "high_school_physics": "高中物理", "high_school_chemistry": "高中化学", "high_school_biology": "高中生物",
        "middle_school_mathematics": "初中数学", "middle_school_biology": "初中生物",
        "middle_school_physics": "初中物理", "middle_school_chemistry": "初中化学", "veterinary_medicine": "兽医学",
    },
    "Social Science": {
        "college_economics": "大学经济学", "business_administration": "工商管理", "marxism": "马克思主义基本原理",
        "mao_zedong_thought": "毛泽东思想和中国特色社会主义理论体系概论", "education_science": "教育学",
        "teacher_qualification": "教师资格", "high_school_politics": "高中政治", "high_school_geography": "高中地理",
        "middle_school_politics": "初中政治", "middle_school_geography": "初中地理",
    },
    "Humanities": {
        "modern_chinese_history": "近代史纲要", "ideological_and_moral_cultivation": "思想道德修养与法律基础",
        "logic": "逻辑学", "law": "法学", "chinese_language_and_literature": "中国语言文学", "art_studies": "艺术学",
        "professional_tour_guide": "导游资格", "legal_professional": "法律职业资格", "high_school_chinese": "高中语文",
        "high_school_history": "高中历史", "middle_school_history": "初中历史",
    },
    "Other": {
        "civil_servant": "公务员", "sports_science": "体育学", "plant_protection": "植物保护",
        "basic_medicine": "基础医学", "clinical_medicine": "临床医学", "urban_and_rural_planner": "注册城乡规划师",
        "accountant": "注册会计师", "fire_engineer": "注册消防工程师",
        "environmental_impact_assessment_engineer": "环境影响评价工程师", "tax_accountant": "税务师",
        "physician": "医师资格",
    },
}

# The 57 MMLU subjects in the same four categories (MMLU's own grouping: STEM, humanities,
# social sciences, other).
_MMLU = {
    "STEM": ("abstract_algebra astronomy college_biology college_chemistry college_computer_science "
             "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
             "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
             "high_school_mathematics high_school_physics high_school_statistics machine_learning"),
    "Social Science": ("econometrics high_school_geography high_school_government_and_politics "
                       "high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality "
                       "professional_psychology public_relations security_studies sociology us_foreign_policy"),
    "Humanities": ("formal_logic high_school_european_history high_school_us_history high_school_world_history "
                   "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy "
                   "prehistory professional_law world_religions"),
    "Other": ("anatomy business_ethics clinical_knowledge college_medicine global_facts human_aging management "
              "marketing medical_genetics miscellaneous nutrition professional_accounting professional_medicine "
              "virology"),
}


@dataclass(frozen=True)
class Subject:
    """A subject's name, its Chinese name (C-Eval only) and its category."""

    name: str
    name_zh: str | None
    category: str


CEVAL_SUBJECTS: dict[str, Subject] = {
    name: Subject(name, zh, category) for category, table in _CEVAL.items() for name, zh in table.items()}
MMLU_SUBJECTS: dict[str, Subject] = {
    name: Subject(name, None, category) for category, names in _MMLU.items() for name in names.split()}


def subject_info(name: str) -> Subject:
    """The subject's category (C-Eval first, then MMLU); unknown subjects count as "Other", with a warning."""
    known = CEVAL_SUBJECTS.get(name) or MMLU_SUBJECTS.get(name)
    if known is not None:
        return known
    warnings.warn(f"unknown subject {name!r}: counted under 'Other'", stacklevel=2)
    return Subject(name, None, "Other")


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``answer`` is None where the split hides it (C-Eval test)."""

    id: str
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str | None = None


def split_files(data_dir: str | Path, split: str) -> dict[str, Path]:
    """``{subject: csv path}`` of one split, with clear errors for a wrong or empty directory."""
    if split not in SPLITS:
        raise AscendNbError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise AscendNbError(f"data directory {data_dir} does not exist: point at a C-Eval or MMLU folder holding "
                            f"dev/, val/ and test/ (a small sample ships in {SAMPLE_DATA_DIR})")
    folder = data_dir / split
    files = sorted(folder.glob(f"*_{split}.csv")) if folder.is_dir() else []
    if not files:
        raise AscendNbError(f"no {{subject}}_{split}.csv files in {folder}: point at a C-Eval or MMLU folder "
                            f"laid out as {split}/{{subject}}_{split}.csv")
    return {path.name[: -len(f"_{split}.csv")]: path for path in files}


def read_questions(path: str | Path, require_answer: bool = True) -> list[Question]:
    """The questions of one C-Eval (header) or MMLU (no header, six columns) CSV file."""
    path = Path(path)
    subject = path.stem.rsplit("_", 1)[0]
    try:
        rows = pd.read_csv(path, header=None, dtype=str, keep_default_na=False).fillna("")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AscendNbError(f"{path} is not a readable C-Eval/MMLU CSV ({reason}): fix or re-download the file") from None
    first = [str(v).strip() for v in rows.iloc[0]]
    if {"question", *CHOICES} <= set(first):
        frame = rows.iloc[1:].set_axis(first, axis=1)
    elif rows.shape[1] == 6:
        frame = rows.set_axis(["question", *CHOICES, "answer"], axis=1)
        frame.insert(0, "id", [str(i) for i in range(len(frame))])
    else:
        raise AscendNbError(f"{path} has neither a C-Eval header (id,question,A,B,C,D,answer) nor the six MMLU "
                            f"columns (question,A,B,C,D,answer): fix the file")
    if "answer" not in frame.columns and require_answer:
        raise AscendNbError(f"{path} has no answer column: only the test split may hide answers; "
                            "use the val or dev split to measure accuracy")
    if frame.empty:
        raise AscendNbError(f"{path} holds no questions: remove it or restore its rows")
    questions = []
    for line, (_, row) in enumerate(frame.iterrows(), start=2):
        answer = row["answer"].strip().upper() if "answer" in frame.columns else None
        if answer is not None and answer not in CHOICES:
            raise AscendNbError(f"{path} row {line}: answer {row['answer']!r} is not one of A, B, C, D: fix the file")
        if not row["question"].strip():
            raise AscendNbError(f"{path} row {line}: the question is empty: fix the file")
        question_id = str(row["id"]).strip() if "id" in frame.columns else str(line - 2)
        questions.append(Question(question_id, subject, row["question"], tuple(row[c] for c in CHOICES), answer))
    return questions


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise AscendNbError(f"unknown protocol {protocol!r}: use 'logits' (official C-Eval) or 'generate' (Ascend harness)")


def prompt_header(subject: str, protocol: str) -> str:
    """The instruction line that opens every prompt of ``subject``."""
    check_protocol(protocol)
    if protocol == "logits":
        name = subject_info(subject).name_zh or subject.replace("_", " ")
        return f"以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\n\n"
    words = "".join(" " + word for word in subject.split("_"))
    return f"The following are multiple choice questions (with answers) about {words}.\n\n"


def format_question(question: Question, protocol: str, with_answer: bool = False) -> str:
    """A question with its four options, ending in the answer cue (and the answer, for a shot)."""
    text = question.question + "".join(f"\n{letter}. {option}" for letter, option in zip(CHOICES, question.choices))
    if protocol == "logits":
        return text + "\n答案：" + (f"{question.answer}\n\n" if with_answer else "")
    return text + "\nAnswer:" + (f" {question.answer}\n\n" if with_answer else "")


def render_prompt(question: Question, shots: Sequence[Question], protocol: str) -> str:
    """Header, the few-shot examples with their answers, then the question."""
    return (prompt_header(question.subject, protocol)
            + "".join(format_question(shot, protocol, with_answer=True) for shot in shots)
            + format_question(question, protocol))


def fit_prompt(question: Question, shots: Sequence[Question], protocol: str,
               encode: Callable[[str], list[int]], max_tokens: int) -> tuple[list[int], int]:
    """Token ids of the prompt with as many shots as fit in ``max_tokens`` (dropped from the end) and
    how many shots were kept."""
    for kept in range(len(shots), -1, -1):
        ids = encode(render_prompt(question, shots[:kept], protocol))
        if len(ids) <= max_tokens:
            return ids, kept
    raise AscendNbError(f"question {question.id} of {question.subject} needs {len(ids)} tokens without any shot, "
                        f"more than the {max_tokens} available: load the model with a larger max_seq_len")
