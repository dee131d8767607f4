"""``ascend-nb eval`` and ``ascend-nb compare``: the guides' table shape, JSON, exit codes, clear errors."""

from __future__ import annotations

import json

import pytest

from ascend_nb.cli import main
from ascend_nb.cli import precision as commands
from tests.test_precision_evaluate import ScriptedEngine, make_dataset


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    """The eval command with the scripted test double instead of a loaded model."""
    data_dir = tmp_path / "ceval"
    answers, replies = make_dataset(data_dir)
    loads = []

    def load_from_args(args):
        loads.append(args)
        return ScriptedEngine(answers, replies)

    monkeypatch.setattr(commands, "load_from_args", load_from_args)
    return data_dir, loads


def test_eval_json_has_the_four_categories_and_avg_acc(scripted, capsys):
    data_dir, loads = scripted
    assert main(["eval", "--data", str(data_dir), "--protocol", "generate", "--shots", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["protocol"] == "generate" and summary["shots"] == 1 and summary["split"] == "val"
    assert {name: c["acc"] for name, c in summary["categories"].items()} == {
        "STEM": 1.0, "Social Science": 0.5, "Humanities": 0.25, "Other": 0.0}
    assert summary["avg_acc"] == pytest.approx(7 / 16) and summary["n"] == 16
    assert loads[0].model == "smollm2-135m-instruct" and loads[0].backend == "transformers"


def test_eval_prints_the_guides_table_and_writes_predictions(scripted, tmp_path, capsys):
    data_dir, _ = scripted
    output = tmp_path / "out"
    assert main(["eval", "--data", str(data_dir), "--output", str(output), "--subjects", "logic,physician"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "protocol logits (official C-Eval" in lines[0] and "0-shot" in lines[0]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines[3:8]}
    assert rows == {"STEM": "-", "Social Science": "-", "Humanities": "0.25000", "Other": "0.00000",
                    "Avg acc": "0.12500"}
    assert (output / "predictions.csv").read_text().count("\n") == 9


def test_eval_resume_under_another_max_new_tokens_is_refused_in_one_line(scripted, tmp_path, capsys):
    data_dir, _ = scripted
    run = ["eval", "--data", str(data_dir), "--protocol", "generate", "--output", str(tmp_path / "out")]
    assert main([*run, "--max-new-tokens", "1", "--limit", "1"]) == 0
    capsys.readouterr()
    assert main([*run, "--max-new-tokens", "32"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings (max_new_tokens 1 -> 32)" in err and err.count("\n") == 1
    assert main([*run, "--max-new-tokens", "1"]) == 0  # the same settings resume


@pytest.mark.parametrize("argv, message", [
    (["--data", "/nonexistent/ceval"], "does not exist"),
    (["--shots", "9"], "shots must be between 0 and 5"),
    (["--subjects", "marxism"], "no val file for subject(s) marxism"),
])
def test_eval_errors_are_one_line_before_any_model_load(scripted, capsys, argv, message):
    data_dir, loads = scripted
    assert main(["eval", "--data", str(data_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert loads == []


def test_compare_a_tiny_llama_with_itself_reaches_and_reports_json(tiny_llama_dir, capsys):
    argv = ["compare", "--model", str(tiny_llama_dir), "--a", "transformers", "--b", "transformers",
            "--device", "cpu", "--dtype", "float32", "--prompt", "hello world", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reached"] is True and report["thresholds"]["dtype"] == "float32"
    assert [t["tensor"] for t in report["tensors"]][-1] == "logits"
    assert all(t["Cosine"] == pytest.approx(1.0) for t in report["tensors"])


def test_compare_table_names_its_thresholds(tiny_llama_dir, capsys):
    argv = ["compare", "--model", str(tiny_llama_dir), "--a", "transformers", "--b", "transformers",
            "--device", "cpu", "--dtype-a", "float32", "--dtype-b", "bfloat16", "--prompt", "hello"]
    code = main(argv)
    out = capsys.readouterr().out
    assert "| tensor | Cosine | MaxAbsErr |" in out and "| logits |" in out
    assert "thresholds (bfloat16: Cosine >= 0.99" in out
    assert code == (0 if "verdict: reached" in out else 1)


def test_compare_with_an_unknown_backend_is_a_clear_error(capsys):
    assert main(["compare", "--b", "turbo", "--device", "cpu"]) == 2
    assert "unknown backend 'turbo'" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_on_the_embedded_model_prints_the_guides_table(capsys):
    argv = ["eval", "--device", "cpu", "--dtype", "float32", "--protocol", "generate", "--limit", "1",
            "--subjects", "computer_network,basic_medicine"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "smollm2-135m-instruct (transformers, cpu, float32)" in lines[0] and "2 questions" in lines[0]
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in lines[3:8]}
    assert rows == {"STEM": "1", "Social Science": "0", "Humanities": "0", "Other": "1", "Avg acc": "2"}
