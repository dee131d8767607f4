"""scripts/bench_7b.py, rehearsed at a tiny size: every step (write the original formats, convert, plan,
load and decode bf16 and int8) runs in its own process and lands in the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_7b.py"
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "vocab_size": 1000}


@pytest.mark.slow
def test_the_7b_run_rehearses_at_a_tiny_size(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--sizes", json.dumps(TINY), "--workdir", str(tmp_path),
                           "--input-len", "16", "--output-len", "4"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| baichuan2") or
            line.startswith("| aquila")]
    steps = [(row[0].strip("| "), row[1]) for row in rows[-8:]]
    assert steps == [(kind, step) for kind in ("baichuan2", "aquila") for step in (
        "write original (random, bf16)", "convert", "load + decode bf16", "load + decode int8")]
    assert all(float(row[8]) > 0 for row in rows[-8:] if "decode" in row[1])  # a TTFT for every decode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aquila-7b-llama", "baichuan2-7b-llama"]  # originals removed
