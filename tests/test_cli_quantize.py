"""One quantization vocabulary everywhere: ``--quantize int8|w8a8|int4`` on every model command (``generate``,
``chat``, ``bench`` and its sweep, ``eval``, ``compare``, ``plan``) with the formats' own summaries as help, the
chat app's picker, ``plan()`` and ``load()`` agreeing on the names, and a backend that cannot quantize refused
in one line (exit 2, no traceback)."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys

import pytest

import ascend_nb
from ascend_nb.bench.guides_csv import read_rows
from ascend_nb.bench.planner import plan
from ascend_nb.cli import build_parser, main
from ascend_nb.errors import AscendNbError
from ascend_nb.quant_formats import QUANT_FORMATS, QUANTIZE_CHOICES

COMMANDS = {  # command -> the arguments it needs besides --quantize
    "generate": ["generate", "hi"], "chat": ["chat"], "eval": ["eval"], "compare": ["compare"], "bench": ["bench"],
    "plan": ["plan", "--model", "smollm2-135m-instruct", "--device", "cpu", "--dtype", "bfloat16"],
}


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_model_command_takes_every_format_with_its_summary_as_help(command, capsys):
    parser = build_parser()
    for name in QUANTIZE_CHOICES:
        assert parser.parse_args([*COMMANDS[command], "--quantize", name]).quantize == name
    assert parser.parse_args([*COMMANDS[command], "--quantize", "none"]).quantize is None  # as load() reads it
    with pytest.raises(SystemExit):
        parser.parse_args([*COMMANDS[command], "--quantize", "int3"])
    assert "argument --quantize: unknown quantize 'int3': use one of none, int8, w8a8, int4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args([*COMMANDS[command], "--help"])
    help_text = flat(capsys.readouterr().out)
    assert "--quantize none|int8|w8a8|int4" in help_text
    for fmt in QUANT_FORMATS.values():
        assert flat(fmt.summary) in help_text


@pytest.mark.parametrize("argv, flags", [
    (["generate", "hi"], ("--backend", "--quantize")),
    (["chat"], ("--backend", "--quantize")),
    (["eval", "--limit", "1"], ("--backend", "--quantize")),
    (["eval", "--perplexity"], ("--backend", "--quantize")),
    (["generate", "hi", "--backend", "openai", "--base-url", "http://127.0.0.1:9"], ("--backend", "--quantize")),
    (["compare", "--b", "transformers"], ("--b", "--quantize")),
])
def test_a_backend_that_cannot_quantize_is_refused_in_one_line(argv, flags, capsys):
    assert main([*argv, "--quantize", "int4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quantize 'int4' needs backend 'accelerated'" in err
    assert f"use {flags[0]} accelerated, or drop {flags[1]}" in err


def test_the_reference_of_compare_is_refused_by_its_own_flag(capsys):
    assert main(["compare", "--quantize-a", "w8a8"]) == 2
    assert "use --a accelerated, or drop --quantize-a" in capsys.readouterr().err


def test_bench_without_the_accelerated_backend_is_refused(capsys):
    assert main(["bench", "--backend", "transformers", "--quantize", "int4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apply to accelerated only: add it to --backend" in err


def test_the_refusal_is_a_real_exit_2_without_traceback():
    done = subprocess.run([sys.executable, "-m", "ascend_nb", "generate", "hi", "--quantize", "w8a8"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert done.stderr.startswith("ascend-nb generate: error: quantize 'w8a8' needs backend 'accelerated'")


def local(model_dir, *extra):
    return ["--model", str(model_dir), "--device", "cpu", "--dtype", "float32", *extra]


def test_generate_runs_each_format_and_names_it(tiny_llama_dir, capsys):
    for name in QUANTIZE_CHOICES:
        argv = ["generate", "hello", "--raw", "--json", "--max-new-tokens", "3", "--backend", "accelerated",
                "--quantize", name, *local(tiny_llama_dir)]
        assert main(argv) == 0
        reply = json.loads(capsys.readouterr().out)
        assert reply["quantize"] == name and reply["backend"] == "accelerated" and reply["tokens"] == 3


def test_chat_loads_the_quantized_engine(tiny_llama_dir):
    argv = [sys.executable, "-m", "ascend_nb", "chat", "--backend", "accelerated", "--quantize", "int4",
            "--max-new-tokens", "3", *local(tiny_llama_dir)]
    done = subprocess.run(argv, input="hello\nexit\n", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "quantize='int4'" in done.stdout and done.stdout.count("TTFT") == 1


def test_eval_scores_a_quantized_engine_and_names_it(tiny_llama_dir, capsys):
    argv = ["eval", "--limit", "1", "--json", "--backend", "accelerated", "--quantize", "w8a8", *local(tiny_llama_dir)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 5 and summary["label"].endswith("(accelerated, cpu, float32, w8a8)")


def test_eval_perplexity_of_a_quantized_engine(tiny_llama_dir, capsys):
    argv = ["eval", "--perplexity", "--max-tokens", "100", "--json", "--backend", "accelerated", "--quantize", "int4",
            *local(tiny_llama_dir)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quantize"] == "int4" and result["tokens"] == 99 and result["perplexity"] > 1
    assert result["text"].endswith("data/heldout/alice_chapters_1_2.txt")
    assert main(["eval", "--perplexity", "--text", "/no/such/file.txt"]) == 2
    assert "text file /no/such/file.txt does not exist" in capsys.readouterr().err


def test_eval_formats_prints_the_side_by_side_table(tiny_llama_dir, capsys):
    argv = ["eval", "--formats", "none,int8,int4", "--limit", "1", "--max-tokens", "80", "--window", "64",
            *local(tiny_llama_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| format | kernels | weights_mib | perplexity | perplexity_change_pct |" in out
    assert "| float32 |" in out and "| int8 |" in out and "| int4 |" in out
    assert "reference float32: perplexity" in out and "int4: perplexity" in out


@pytest.mark.parametrize("argv, message", [
    (["--formats", "none,int8", "--quantize", "int8"], "drop --quantize and --backend"),
    (["--formats", "none,int8", "--perplexity"], "choose one"),
    (["--formats", "int8,none"], "the first format is the reference"),
    (["--formats", "none,int8", "--protocol", "generate"], "drop --subjects, --protocol and --output"),
    (["--max-tokens", "10"], "--max-tokens go with --perplexity or --formats"),
])
def test_eval_perplexity_and_formats_mistakes_are_one_line(argv, message, capsys):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_compare_a_quantized_candidate_with_its_reference(tiny_llama_dir, capsys):
    argv = ["compare", "--a", "accelerated", "--b", "accelerated", "--quantize", "int8", "--prompt", "hello world",
            "--json", "--model", str(tiny_llama_dir), "--device", "cpu", "--dtype", "float32"]
    assert main(argv) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    assert report["reference"].endswith("(accelerated, cpu, float32)")
    assert report["candidate"].endswith("(accelerated, cpu, float32, int8)")
    assert 0.9 < report["tensors"][-1]["Cosine"] < 1


def test_bench_and_its_sweep_run_the_new_formats(tiny_llama_dir, tmp_path, capsys):
    point = ["bench", "--backend", "accelerated", "--quantize", "int4", "--input-len", "4", "--output-len", "2",
             "--repeat", "1", "--warmup", "0", "--json", *local(tiny_llama_dir)]
    assert main(point) == 0
    assert [row["quantize"] for row in json.loads(capsys.readouterr().out)] == ["int4"]
    path = tmp_path / "sweep.csv"
    sweep = ["bench", "--sweep", "--backend", "transformers,accelerated", "--quantize", "w8a8", "--batch-sizes", "1",
             "--input-lens", "4", "--output-lens", "2", "--repeat", "1", "--warmup", "0", "--csv", str(path),
             *local(tiny_llama_dir)]
    assert main(sweep) == 0
    capsys.readouterr()
    assert [(r["backend"], r["quantize"]) for r in read_rows(path)[1]] == [("transformers", "none"), ("accelerated", "w8a8")]


@pytest.mark.parametrize("name", QUANTIZE_CHOICES)
def test_plan_and_load_agree_on_every_format(tiny_llama_dir, name):
    planned = plan(tiny_llama_dir, "cpu", "float32", quantize=name, max_seq_len=64)
    assert planned.quantize == name
    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated", quantize=name,
                            max_seq_len=64)
    assert engine.quantize == name


def test_plan_and_load_refuse_an_unknown_format_alike(tiny_llama_dir):
    with pytest.raises(AscendNbError) as planned:
        plan(tiny_llama_dir, "cpu", "float32", quantize="int3")
    with pytest.raises(AscendNbError) as loaded:
        ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated", quantize="int3")
    assert str(planned.value) == str(loaded.value) == "unknown quantize 'int3': use one of none, int8, w8a8, int4"


def test_the_chat_app_picks_a_format_and_refuses_it_off_the_accelerated_backend(tiny_llama_dir):
    from ascend_nb.ui import ChatApp

    app = ChatApp(tiny_llama_dir, backend="accelerated", device="cpu", dtype="float32", quantize="int8")
    assert [value for _, value in app.quantize.options] == [None, *QUANTIZE_CHOICES]
    assert all(fmt.summary in app.quantize.tooltip for fmt in QUANT_FORMATS.values())
    assert app.chat.engine.quantize == "int8" and "· int8 ·" in app.chat.header.value
    kept = app.chat
    app.backend.value = "transformers"
    assert app.reload() is False and app.chat is kept
    status = html.unescape(app.status.value)
    assert "quantize 'int8' needs backend 'accelerated'" in status and "current chat is kept" in status
    app.backend.value, app.quantize.value = "accelerated", "int4"
    assert app.reload() is True
    app.wait(120)
    assert app.chat.engine.quantize == "int4" and "· int4 ·" in app.chat.header.value
