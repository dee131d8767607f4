"""The public names the issues and docs use, imported from their package roots and called on the tiny model.

A module named like one of these functions would shadow it (``from ascend_nb.bench import sweep`` would give
the module); these tests fail if that ever comes back.
"""

from __future__ import annotations

import inspect

import pytest

BENCH_FUNCTIONS = ("sweep", "roofline", "compare", "trace", "run_bench", "run_sweep", "plan", "summarize", "headline")
PRECISION_FUNCTIONS = ("evaluate", "compare_models")
UI_CLASSES = ("ChatWidget", "CompareChat", "ChatApp")
UI_FUNCTIONS = ("compare_chat", "fits_heatmap")


@pytest.mark.parametrize("name", BENCH_FUNCTIONS)
def test_bench_names_are_functions_not_modules(name):
    import ascend_nb.bench
    import ascend_nb.bench.latency_sweep, ascend_nb.bench.op_trace  # noqa: E401,F401  (submodules imported first)

    exec(f"from ascend_nb.bench import {name} as value", namespace := {})
    assert inspect.isfunction(namespace["value"]), f"ascend_nb.bench.{name} is {namespace['value']!r}"
    assert getattr(ascend_nb.bench, name) is namespace["value"]


@pytest.mark.parametrize("name", PRECISION_FUNCTIONS)
def test_precision_names_are_functions(name):
    import ascend_nb.precision
    import ascend_nb.precision.accuracy, ascend_nb.precision.engine_compare  # noqa: E401,F401

    assert inspect.isfunction(getattr(ascend_nb.precision, name))


@pytest.mark.parametrize("name", UI_CLASSES)
def test_ui_names_are_classes(name):
    import ascend_nb.ui

    assert inspect.isclass(getattr(ascend_nb.ui, name))


@pytest.mark.parametrize("name", UI_FUNCTIONS)
def test_ui_functions_are_functions_not_modules(name):
    import ascend_nb.ui
    import ascend_nb.ui.chat, ascend_nb.ui.side_by_side  # noqa: E401,F401

    assert inspect.isfunction(getattr(ascend_nb.ui, name))


def test_bench_api_runs_on_the_tiny_model(tiny_engine, tiny_llama_dir, tmp_path):
    from ascend_nb.bench import BenchConfig, compare, roofline, run_bench, sweep, trace

    rows = list(sweep(tiny_engine, input_lens=(8,), output_lens=(4,), repeat=1, warmup=0, progress=False,
                      bandwidth_gbs=10.0))
    assert [(r["input_len"], r["output_len"]) for r in rows] == [(8, 4)] and rows[0]["tpot_ms"] > 0
    assert compare(rows, rows)["points"].tolist() == [1]
    assert roofline(tiny_engine, bandwidth_gbs=10.0).tokens_per_s > 0
    assert trace(tiny_engine, input_len=8, decode_steps=2, trace_path=tmp_path / "t.json").trace_path.exists()
    bench = run_bench(BenchConfig(model=str(tiny_llama_dir), backends=("transformers",), device="cpu",
                                  dtype="float32", input_len=8, output_len=2, repeat=1, warmup=0))
    assert [row["backend"] for row in bench] == ["transformers"]


def test_precision_api_runs_on_the_tiny_model(tiny_engine):
    from ascend_nb.precision import SAMPLE_DATA_DIR, compare_models, evaluate

    result = evaluate(tiny_engine, SAMPLE_DATA_DIR, limit=1)
    assert result.n >= 1 and 0 <= result.avg_acc <= 1
    report = compare_models(tiny_engine, tiny_engine, prompts=["Hello"])
    assert report.reached


def test_chat_widget_from_the_ui_root(tiny_engine):
    from ascend_nb.ui import ChatWidget

    assert ChatWidget(tiny_engine).engine is tiny_engine
