"""C-Eval layout reading, the subject table, prompt rendering of both protocols and few-shot truncation."""

from __future__ import annotations

import re

import pytest

from ascend_nb.errors import AscendNbError
from ascend_nb.precision.ceval import (
    CATEGORIES, CEVAL_SUBJECTS, MMLU_SUBJECTS, SAMPLE_DATA_DIR, Question, fit_prompt, read_questions, render_prompt,
    split_files, subject_info,
)

CJK = re.compile(r"[\u4e00-\u9fff]")
SHOT = Question("0", "computer_network", "DNS 的作用是____。", ("传输文件", "解析域名", "发送邮件", "远程登录"), "B")
TARGET = Question("7", "computer_network", "IPv4 地址有____位。", ("16", "32", "64", "128"), "B")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_52_ceval_subjects_map_to_the_four_categories_with_chinese_names():
    assert len(CEVAL_SUBJECTS) == 52
    counts = {category: sum(s.category == category for s in CEVAL_SUBJECTS.values()) for category in CATEGORIES}
    assert counts == {"STEM": 20, "Social Science": 10, "Humanities": 11, "Other": 11}
    assert all(CJK.search(s.name_zh) for s in CEVAL_SUBJECTS.values())
    assert subject_info("computer_network").name_zh == "计算机网络"
    assert subject_info("mao_zedong_thought").category == "Social Science"
    assert subject_info("logic").category == "Humanities"
    assert subject_info("environmental_impact_assessment_engineer").name_zh == "环境影响评价工程师"


def test_mmlu_subjects_have_categories_too():
    assert len(MMLU_SUBJECTS) == 57
    assert subject_info("abstract_algebra").category == "STEM"
    assert subject_info("jurisprudence").category == "Humanities"
    assert subject_info("econometrics").category == "Social Science"
    assert subject_info("virology").category == "Other"


def test_an_unknown_subject_counts_as_other_with_a_warning():
    with pytest.warns(UserWarning, match="unknown subject 'klingon_poetry'"):
        assert subject_info("klingon_poetry").category == "Other"


def test_logits_protocol_renders_the_official_ceval_prompt():
    expected = ("以下是中国关于计算机网络考试的单项选择题，请选出其中的正确答案。\n\n"
                "DNS 的作用是____。\nA. 传输文件\nB. 解析域名\nC. 发送邮件\nD. 远程登录\n答案：B\n\n"
                "IPv4 地址有____位。\nA. 16\nB. 32\nC. 64\nD. 128\n答案：")
    assert render_prompt(TARGET, [SHOT], "logits") == expected


def test_generate_protocol_renders_the_ascend_harness_prompt():
    expected = ("The following are multiple choice questions (with answers) about  computer network.\n\n"
                "DNS 的作用是____。\nA. 传输文件\nB. 解析域名\nC. 发送邮件\nD. 远程登录\nAnswer: B\n\n"
                "IPv4 地址有____位。\nA. 16\nB. 32\nC. 64\nD. 128\nAnswer:")
    assert render_prompt(TARGET, [SHOT], "generate") == expected


def test_zero_shot_prompts_hold_only_the_header_and_the_question():
    assert render_prompt(TARGET, [], "logits") == (
        "以下是中国关于计算机网络考试的单项选择题，请选出其中的正确答案。\n\n"
        "IPv4 地址有____位。\nA. 16\nB. 32\nC. 64\nD. 128\n答案：")
    with pytest.raises(AscendNbError, match="unknown protocol 'mmlu'"):
        render_prompt(TARGET, [], "mmlu")


def test_few_shot_examples_are_dropped_from_the_end_until_the_prompt_fits():
    shots = [SHOT, Question("1", "computer_network", "一个很长的问题" * 10, ("a", "b", "c", "d"), "C")]
    encode = list  # one token per character
    two = len(render_prompt(TARGET, shots, "logits"))
    one = len(render_prompt(TARGET, shots[:1], "logits"))
    ids, kept = fit_prompt(TARGET, shots, "logits", encode, max_tokens=two)
    assert kept == 2 and len(ids) == two
    ids, kept = fit_prompt(TARGET, shots, "logits", encode, max_tokens=two - 1)
    assert kept == 1 and "".join(ids) == render_prompt(TARGET, shots[:1], "logits")
    ids, kept = fit_prompt(TARGET, shots, "logits", encode, max_tokens=one - 1)
    assert kept == 0 and "".join(ids) == render_prompt(TARGET, [], "logits")
    with pytest.raises(AscendNbError, match="larger max_seq_len"):
        fit_prompt(TARGET, shots, "logits", encode, max_tokens=10)


def test_reads_ceval_and_headerless_mmlu_files(tmp_path):
    ceval = write(tmp_path / "val" / "logic_val.csv",
                  "id,question,A,B,C,D,answer\n3,\"所有的 S 都是 P, 所以____\",甲,乙,丙,NA, c \n")
    (question,) = read_questions(ceval)
    assert question == Question("3", "logic", "所有的 S 都是 P, 所以____", ("甲", "乙", "丙", "NA"), "C")
    mmlu = write(tmp_path / "val" / "virology_val.csv", "What is a virus?,a,b,c,d,D\nSecond?,1,2,3,4,A\n")
    questions = read_questions(mmlu)
    assert [(q.id, q.subject, q.answer) for q in questions] == [("0", "virology", "D"), ("1", "virology", "A")]


def test_the_test_split_may_hide_answers_but_val_may_not(tmp_path):
    text = "id,question,A,B,C,D\n0,问题,1,2,3,4\n"
    (question,) = read_questions(write(tmp_path / "test" / "law_test.csv", text), require_answer=False)
    assert question.answer is None
    with pytest.raises(AscendNbError, match="has no answer column"):
        read_questions(write(tmp_path / "val" / "law_val.csv", text))


@pytest.mark.parametrize("text, message", [
    ("id,question,A,B,C,D,answer\n0,q,1,2,3,4,A\n1,q,1,2,3,4,A,extra,more\n", "not a readable C-Eval/MMLU CSV"),
    ("", "not a readable C-Eval/MMLU CSV"),
    ("id,question,A,B,C,D,answer\n", "holds no questions"),
    ("id,question,A,B,C,D,answer\n0,q,1,2,3,4,E\n", "answer 'E' is not one of A, B, C, D"),
    ("id,question,A,B,C,D,answer\n0,,1,2,3,4,A\n", "the question is empty"),
    ("a,b,c\n1,2,3\n", "neither a C-Eval header"),
])
def test_malformed_files_give_one_clear_error(tmp_path, text, message):
    with pytest.raises(AscendNbError, match=message):
        read_questions(write(tmp_path / "val" / "law_val.csv", text))


def test_missing_or_empty_directories_give_one_clear_error(tmp_path):
    with pytest.raises(AscendNbError, match="does not exist"):
        split_files(tmp_path / "nowhere", "val")
    with pytest.raises(AscendNbError, match="no {subject}_val.csv files"):
        split_files(tmp_path, "val")
    (tmp_path / "val").mkdir()
    write(tmp_path / "val" / "notes.txt", "not a csv")
    with pytest.raises(AscendNbError, match="no {subject}_val.csv files"):
        split_files(tmp_path, "val")
    with pytest.raises(AscendNbError, match="unknown split 'train'"):
        split_files(tmp_path, "train")


def test_the_bundled_sample_covers_all_four_categories_in_ceval_format():
    val = split_files(SAMPLE_DATA_DIR, "val")
    assert {subject_info(s).category for s in val} == set(CATEGORIES)
    assert set(split_files(SAMPLE_DATA_DIR, "dev")) == set(val) == set(split_files(SAMPLE_DATA_DIR, "test"))
    for subject, path in val.items():
        questions = read_questions(path)
        assert len(questions) >= 5 and all(CJK.search(q.question) for q in questions)
        assert len({q.answer for q in questions}) >= 3  # answers are not all one letter
        dev_header = (SAMPLE_DATA_DIR / "dev" / f"{subject}_dev.csv").read_text(encoding="utf-8").splitlines()[0]
        assert dev_header == "id,question,A,B,C,D,answer,explanation"
        assert len(read_questions(SAMPLE_DATA_DIR / "dev" / f"{subject}_dev.csv")) == 5
        test = read_questions(SAMPLE_DATA_DIR / "test" / f"{subject}_test.csv", require_answer=False)
        assert test and all(q.answer is None for q in test)
