"""Benchmark tensor parallelism from a notebook: one ``torchrun`` launch of ``ascend-nb bench`` per size."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

import pandas as pd
from ascend_nb.errors import AscendNbError
from ascend_nb.progress import progress_bar


def bench_tensor_parallel(model: str, tp_sizes: Sequence[int] = (1, 2), device: str = "auto", dtype: str = "auto",
                          batch_size: int = 1, input_len: int = 128, output_len: int = 64,
                          repeat: int = 3) -> pd.DataFrame:
    """Run ``ascend-nb bench --backend accelerated --tp N --json`` under ``torchrun --nproc-per-node N``
    for each N and return one row per size (the bench JSON fields, ``tp`` included)."""
    rows = []
    bar = progress_bar(len(tp_sizes), desc="tensor parallel", unit="size")
    for tp in tp_sizes:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(tp), "-m", "ascend_nb",
                   "bench", "--backend", "accelerated", "--tp", str(tp), "--model", str(model), "--device", device,
                   "--dtype", dtype, "--batch-size", str(batch_size), "--input-len", str(input_len),
                   "--output-len", str(output_len), "--repeat", str(repeat), "--json"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            reason = next((line for line in reversed(done.stderr.splitlines()) if "error" in line.lower()),
                          f"exit code {done.returncode}")
            raise AscendNbError(f"tp={tp} benchmark failed: {reason.strip()}")
        rows.extend(json.loads(done.stdout.strip().splitlines()[-1]))
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)
