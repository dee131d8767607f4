"""The guides' "compare" row, generalised: one run against another run or a published table.

Each reference row is matched with the results at the same batch size whose input and output
lengths fall in the reference's lengths (a single point for two sweeps; the whole 2^5..2^10 grid
for the Atlas 300I DUO row; every length where the guide does not state them); the matched
results' mean TTFT and TPOT are set against the reference's. Speedups are reference time /
results time, as the guides' compare row (above 1: ``results`` is faster).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ascend_nb.bench.guides_csv import read_csv
from ascend_nb.errors import AscendNbError

IDENTITY = ("source", "model", "device", "backend", "dtype", "quantize")
_RUN_IDENTITY = ("model", "device", "backend", "dtype", "quantize")

Results = pd.DataFrame | Iterable[Mapping] | str | Path


def _frame(data: Results) -> pd.DataFrame:
    """A table with ``<dim>_min`` / ``<dim>_max`` length bounds (equal for measured points, NaN: unstated)."""
    if isinstance(data, (str, Path)):
        frame = read_csv(data)
    else:
        frame = data.copy() if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))
    if frame.empty:
        raise AscendNbError("nothing to compare: a table is empty")
    for dim in ("input_len", "output_len"):
        if dim in frame:
            frame[f"{dim}_min"] = frame[f"{dim}_max"] = frame[dim]
        for bound in ("min", "max"):
            if f"{dim}_{bound}" not in frame:
                frame[f"{dim}_{bound}"] = float("nan")
    return frame


def _lengths(row: pd.Series, dim: str) -> int | str:
    low, high = row[f"{dim}_min"], row[f"{dim}_max"]
    if pd.isna(low):
        return "all"
    return int(low) if low == high else f"{int(low)}-{int(high)}"


def _describe(frame: pd.DataFrame) -> list[str]:
    """Identity columns whose values differ between rows (what tells the rows apart)."""
    return [c for c in IDENTITY if c in frame and frame[c].nunique(dropna=False) > 1]


def summarize(results: Results) -> pd.DataFrame:
    """A sweep in the guides' table form: one row per run and batch size with the length ranges
    covered, mean TTFT and TPOT (and % of roofline when present) and the decode tokens/s of that
    mean TPOT, in the columns of :func:`ascend_nb.bench.published.performance` so the two concatenate."""
    frame = _frame(results)
    keys = [c for c in _RUN_IDENTITY if c in frame] + ["batch_size"]
    metrics = [c for c in ("ttft_ms", "tpot_ms", "pct_of_roofline") if c in frame]
    table = frame.groupby(keys, as_index=False, dropna=False).agg(
        points=("ttft_ms", "size"), input_len_min=("input_len_min", "min"), input_len_max=("input_len_max", "max"),
        output_len_min=("output_len_min", "min"), output_len_max=("output_len_max", "max"),
        **{metric: (metric, "mean") for metric in metrics})
    table["decode_tokens_per_s"] = 1000.0 * table["batch_size"] / table["tpot_ms"]
    table.insert(0, "source", "this run")
    return table


def compare(results: Results, reference: Results, labels: tuple[str, str] = ("results", "reference")) -> pd.DataFrame:
    """Set one run's latencies against a reference (another run, or ``published.performance(...)``).

    ``results`` and ``reference`` are DataFrames, lists of row dicts or CSV paths (ours or the
    guides'). ``results`` must hold a single run (one backend, model, device, dtype, quantize).
    Returns one row per reference row that has matching results: ``batch_size, input_len,
    output_len, points`` (results averaged), ``ttft_ms (<label>)`` x2, ``first_token_speedup``,
    ``tpot_ms (<label>)`` x2, ``next_token_speedup``.
    """
    ours, theirs = _frame(results), _frame(reference)
    mixed = [c for c in _RUN_IDENTITY if c in ours and ours[c].nunique(dropna=False) > 1]
    if mixed:
        raise AscendNbError(f"the results hold several runs (different {', '.join(mixed)}): "
                            "filter them to one, e.g. results[results.backend == 'accelerated']")
    mine, other = labels
    described = _describe(theirs)
    rows = []
    for _, ref in theirs.iterrows():
        if pd.isna(ref["ttft_ms"]) and pd.isna(ref["tpot_ms"]):
            continue
        match = ours[ours["batch_size"] == ref["batch_size"]]
        for dim in ("input_len", "output_len"):
            if not pd.isna(ref[f"{dim}_min"]):
                match = match[(match[f"{dim}_min"] >= ref[f"{dim}_min"]) & (match[f"{dim}_max"] <= ref[f"{dim}_max"])]
        if match.empty:
            continue
        ttft, tpot = match["ttft_ms"].mean(), match["tpot_ms"].mean()
        row = {"reference": " / ".join(str(ref[c]) for c in described)} if described else {}
        row.update({"batch_size": int(ref["batch_size"]), "input_len": _lengths(ref, "input_len"),
                    "output_len": _lengths(ref, "output_len"), "points": len(match),
                    f"ttft_ms ({mine})": ttft, f"ttft_ms ({other})": ref["ttft_ms"],
                    "first_token_speedup": ref["ttft_ms"] / ttft,
                    f"tpot_ms ({mine})": tpot, f"tpot_ms ({other})": ref["tpot_ms"],
                    "next_token_speedup": ref["tpot_ms"] / tpot})
        rows.append(row)
    if not rows:
        raise AscendNbError("results and reference share no batch size and lengths: compare runs of the same grid")
    return pd.DataFrame(rows)


def headline(results: Results, baseline: str | None = None) -> str:
    """A sweep's summary in three lines: the best decode tokens/s (and where), the geometric-mean
    TTFT / TPOT speed-up of every other backend over ``baseline`` on the points both ran, and the
    median and best % of the decode roofline; flagged points are counted."""
    frame = _frame(results)
    best = frame.loc[frame["decode_tokens_per_s"].idxmax()]
    lines = [f"best decode: {best['decode_tokens_per_s']:.1f} tok/s ({best.get('backend', '')}, batch "
             f"{int(best['batch_size'])}, in {int(best['input_len'])}, out {int(best['output_len'])})"]
    if "backend" in frame and frame["backend"].nunique() > 1:
        baseline = baseline or str(frame["backend"].iloc[0])
        points = ["batch_size", "input_len", "output_len"]
        base = frame[frame["backend"] == baseline].set_index(points)
        for backend, group in frame[frame["backend"] != baseline].groupby("backend"):
            joined = group.set_index(points).join(base[["ttft_ms", "tpot_ms"]].add_suffix("_base"), how="inner")
            if joined.empty:
                continue
            speedups = {m: float(np.exp(np.log(joined[f"{m}_base"] / joined[m]).mean())) for m in ("ttft_ms", "tpot_ms")}
            lines.append(f"{backend} vs {baseline} (geometric mean over {len(joined)} points): "
                         f"TTFT {speedups['ttft_ms']:.2f}x, TPOT {speedups['tpot_ms']:.2f}x faster")
    if "pct_of_roofline" in frame and frame["pct_of_roofline"].notna().any():
        pct = frame["pct_of_roofline"].dropna()
        lines.append(f"decode roofline: median {pct.median():.0f}%, best {pct.max():.0f}%")
    flagged = int((frame["flags"].fillna("") != "").sum()) if "flags" in frame else 0
    if flagged:
        lines.append(f"{flagged} flagged point(s) (noisy runs or above the roofline): see the flags column")
    return "\n".join(lines)
