"""Published numbers: the guides' performance tables and device specs, from ``data/``.

``data/reference/performance_guides.csv`` keeps each figure the way it was published (speeds in
token/s for the Atlas 800I A2 / A100 table, times in ms for the Atlas 300I DUO table, plus the
gpt-fast peer numbers); :func:`performance` derives the missing form so every row has
``ttft_ms``, ``tpot_ms`` and ``decode_tokens_per_s``. The guides do not state a dtype: the Ascend
ports run fp16 (``.half()``), which the table records as ``float16``.
"""

from __future__ import annotations

import pandas as pd

from ascend_nb.errors import AscendNbError
from ascend_nb.files import data_dir

PERFORMANCE_FILE = "reference/performance_guides.csv"
DEVICES_FILE = "devices.csv"


def _read(name: str) -> pd.DataFrame:
    path = data_dir() / name
    if not path.is_file():
        raise AscendNbError(f"reference table {path} is missing: restore it from the repository")
    return pd.read_csv(path)


def _select(table: pd.DataFrame, **filters: str | None) -> pd.DataFrame:
    for column, value in filters.items():
        if value is None:
            continue
        table = table[table[column] == value]
        if table.empty:
            raise AscendNbError(f"no reference row has {column}={value!r}: pick one of the published values")
    return table.reset_index(drop=True)


def performance(model: str | None = None, device: str | None = None) -> pd.DataFrame:
    """The guides' (and peers') published latency figures, optionally filtered by model and device.

    Each row gets ``ttft_ms``, ``tpot_ms`` (from the published time, or 1000 x batch / speed) and
    ``decode_tokens_per_s`` (batch x 1000 / TPOT). Rows without a number (e.g. the Baichuan2 dual
    chip "in development") keep NaN there.
    """
    table = _read(PERFORMANCE_FILE)
    batch = table["batch_size"]
    table["ttft_ms"] = table["forward_first_token_time(ms)"].fillna(
        1000.0 * batch / table["forward_first_token_speed(token/s)"])
    table["tpot_ms"] = table["forward_next_token_time(ms)"].fillna(
        1000.0 * batch / table["forward_next_token_speed(token/s)"])
    table["decode_tokens_per_s"] = 1000.0 * batch / table["tpot_ms"]
    table["quantize"] = table["quantize"].fillna("none")
    return _select(table, model=model, device=device)


def devices(device: str | None = None) -> pd.DataFrame:
    """Device specs: memory, bandwidth range (GB/s), fp16 TFLOPS range and bf16 support."""
    return _select(_read(DEVICES_FILE), device=device)


def device_spec(device: str) -> dict:
    """One device's spec row as a dict (``bandwidth_gbs_max`` is its spec-sheet ceiling)."""
    return devices(device).iloc[0].to_dict()
