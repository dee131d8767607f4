"""Benchmark tensor parallelism from a notebook: one ``torchrun`` launch of :mod:`ascend_nb.bench.tp_rank` per size."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

import pandas as pd

from ascend_nb.bench import tp_rank
from ascend_nb.bench.run import BenchConfig
from ascend_nb.errors import AscendNbError
from ascend_nb.progress import progress_bar


def bench_tensor_parallel(model: str, tp_sizes: Sequence[int] = (1, 2), device: str = "auto", dtype: str = "auto",
                          batch_size: int = 1, input_len: int = 128, output_len: int = 64,
                          repeat: int = 3) -> pd.DataFrame:
    """Benchmark the accelerated backend at each tensor-parallel size N (``torchrun --nproc-per-node N``)
    and return one row per size (the bench row fields, ``tp`` included). Every config is checked
    before the first launch."""
    configs = [BenchConfig(model=str(model), backends=("accelerated",), device=device, dtype=dtype, tp=tp,
                           batch_size=batch_size, input_len=input_len, output_len=output_len, repeat=repeat)
               for tp in tp_sizes]
    rows = []
    bar = progress_bar(len(configs), desc="tensor parallel", unit="size")
    for config in configs:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(config.tp),
                   "-m", tp_rank.__name__, config.to_json()]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            reason = next((line.removeprefix(tp_rank.ERROR_PREFIX) for line in done.stderr.splitlines()
                           if line.startswith(tp_rank.ERROR_PREFIX)), f"exit code {done.returncode}")
            raise AscendNbError(f"tp={config.tp} benchmark failed: {reason.strip()}")
        rows.extend(json.loads(done.stdout.strip().splitlines()[-1]))
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)
