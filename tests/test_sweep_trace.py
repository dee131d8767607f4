"""Operator traces of prefill + decode steps on a tiny Llama (CPU profiler)."""

from __future__ import annotations

import json

import pytest

from ascend_nb.bench.op_trace import op_table, trace


def test_trace_ranks_operators_and_writes_a_chrome_trace(tiny_engine, tmp_path, capfd):
    result = trace(tiny_engine, input_len=16, decode_steps=3, trace_path=tmp_path / "trace.json", top=1000)
    assert "profiler_start" not in capfd.readouterr().err  # torch's C++ profiler chatter stays out of notebooks
    events = json.loads(result.trace_path.read_text())["traceEvents"]
    assert any(event.get("cat") == "cpu_op" for event in events)
    ops = result.ops.set_index("name")  # every operator (top=1000): a busy machine reorders the cheap ones
    assert (ops["kind"] == "host").all()  # CPU only: no device kernels
    # One prefill + 3 decode steps, each through 2 layers x 7 projections + the LM head.
    assert ops.loc["aten::linear", "calls"] == 4 * (2 * 7 + 1)
    assert (ops["self_ms"] <= ops["total_ms"] + 1e-9).all()
    assert list(result.ops["self_ms"]) == sorted(result.ops["self_ms"], reverse=True)
    assert "Chrome trace" in result._repr_html_()


def test_op_table_subtracts_children_and_limits_rows(tmp_path):
    events = [  # a parent of 10 us holding two children of 3 and 4 us, then a sibling on another thread
        {"ph": "X", "cat": "cpu_op", "name": "aten::linear", "pid": 1, "tid": 1, "ts": 0.0, "dur": 10.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::t", "pid": 1, "tid": 1, "ts": 1.0, "dur": 3.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 5.0, "dur": 4.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 2, "ts": 2.0, "dur": 6.0},
        {"ph": "X", "cat": "kernel", "name": "gemv", "pid": 0, "tid": 7, "ts": 5.0, "dur": 2.0},
    ]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": events}))
    table = op_table(path).set_index(["kind", "name"])
    assert table.loc[("host", "aten::mm"), ["calls", "self_ms"]].tolist() == [2, pytest.approx(0.010)]
    assert table.loc[("host", "aten::linear"), "self_ms"] == pytest.approx(0.003)
    assert table.loc[("device", "gemv"), "self_pct"] == pytest.approx(100.0)
    assert len(op_table(path, top=1)) == 2  # the top host operator and the top device kernel
