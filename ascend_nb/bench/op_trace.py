"""Operator-level traces: profile prefill and a few decode steps, rank operators by self time.

torch.profiler on CPU and CUDA, torch_npu.profiler on NPU. torch_npu's profiler has no
``key_averages``, so the table is always built from the exported Chrome trace (which opens in
https://ui.perfetto.dev or chrome://tracing): host operators (``cpu_op`` events) get their self
time by subtracting their direct children on the same thread; device kernels count as they run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ascend_nb.bench.latency_sweep import random_prompts, require_local_model, run_fields
from ascend_nb.models.params import GenerationParams
from ascend_nb.tables import Table

HOST_CATEGORIES = {"cpu_op"}
DEVICE_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}


@dataclass
class OpTrace:
    """Top operators by self time (``ops``) and the Chrome trace file they were read from."""

    ops: pd.DataFrame
    trace_path: Path

    def _repr_html_(self) -> str:
        return f"<p>Chrome trace: <code>{self.trace_path}</code></p>" + Table(self.ops, decimals=3)._repr_html_()


def _profiler(device_type: str, with_stack: bool = False):
    """A started-on-enter profiler context for the device type (``with_stack``: Python calls too)."""
    if device_type == "npu":
        import torch_npu

        activities = [torch_npu.profiler.ProfilerActivity.CPU, torch_npu.profiler.ProfilerActivity.NPU]
        return torch_npu.profiler.profile(activities=activities, with_stack=with_stack)
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])
    return profile(activities=activities, with_stack=with_stack)


@contextlib.contextmanager
def _without_profiler_chatter():
    """Drop the ``USDT: ... profiler_start`` / ``profiler_stop`` lines torch's C++ profiler writes to
    file descriptor 2 (they would land in a notebook's stderr); anything else written there is kept."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith("USDT:")]
            if kept:
                sys.stderr.write("".join(kept))


def profile_to_file(device_type: str, run: Callable[[], object], path: str | Path, with_stack: bool = False) -> Path:
    """Run ``run()`` under the device's profiler and write its Chrome trace to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _without_profiler_chatter(), _profiler(device_type, with_stack) as profiler:
        run()
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        profiler.export_chrome_trace(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def trace_events(trace_path: str | Path) -> list[dict]:
    """The complete (``ph == "X"``) events of a Chrome trace."""
    data = json.loads(Path(trace_path).read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def nested_self_times(events: list[dict]) -> list[tuple[dict, float, tuple[dict, ...]]]:
    """Each host event with its self time (its duration minus that of its direct children on the
    same thread) and its enclosing events, outermost first."""
    by_thread = defaultdict(list)
    for event in events:
        by_thread[(event.get("pid"), event.get("tid"))].append(event)
    result = []
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[list] = []  # [event, end, children's time]

        def finish(item: list) -> None:
            result.append((item[0], float(item[0]["dur"]) - item[2], tuple(entry[0] for entry in stack)))

        for event in thread_events:
            start, duration = float(event["ts"]), float(event["dur"])
            while stack and stack[-1][1] <= start:
                finish(stack.pop())
            if stack:
                stack[-1][2] += duration
            stack.append([event, start + duration, 0.0])
        while stack:
            finish(stack.pop())
    return result


def op_table(trace_path: str | Path, top: int = 20) -> pd.DataFrame:
    """Top ``top`` host operators and top ``top`` device kernels of a Chrome trace by self time:
    ``kind, name, calls, self_ms, total_ms, self_pct`` (share of that kind's self time)."""
    events = trace_events(trace_path)
    host = [e for e in events if e.get("cat") in HOST_CATEGORIES]
    device = [(e, float(e["dur"])) for e in events if str(e.get("cat", "")).lower() in DEVICE_CATEGORIES]
    frames = []
    host_times = [(event, self_time) for event, self_time, _ in nested_self_times(host)]
    for kind, timed in (("device", device), ("host", host_times)):
        if not timed:
            continue
        table = pd.DataFrame({"name": [e["name"] for e, _ in timed], "self_ms": [s / 1000 for _, s in timed],
                              "total_ms": [float(e["dur"]) / 1000 for e, _ in timed]})
        table = table.groupby("name", as_index=False).agg(calls=("self_ms", "size"), self_ms=("self_ms", "sum"),
                                                           total_ms=("total_ms", "sum"))
        table["self_pct"] = 100.0 * table["self_ms"] / table["self_ms"].sum()
        table.insert(0, "kind", kind)
        frames.append(table.sort_values("self_ms", ascending=False).head(top))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["kind", "name", "calls", "self_ms", "total_ms", "self_pct"])


def trace(engine, input_len: int = 128, decode_steps: int = 8, batch_size: int = 1,
          trace_path: str | Path | None = None, top: int = 20, warmup: int = 1, seed: int = 0) -> OpTrace:
    """Profile one prefill of ``input_len`` random tokens and ``decode_steps`` decode steps.

    Writes the Chrome trace to ``trace_path`` (default ``traces/<model>_<backend>_<device>.json``
    under the current directory) and returns it with the top operators by self time.
    """
    require_local_model(engine)
    fields = run_fields(engine)
    path = Path(trace_path or Path("traces") / f"{fields['model']}_{fields['backend']}_{engine.device.type}.json")
    prompts = random_prompts(engine.config.vocab_size, batch_size, input_len, seed)
    params = GenerationParams(max_new_tokens=decode_steps + 1, ignore_eos=True)
    for _ in range(warmup):
        engine.generate(prompts, params)
    profile_to_file(engine.device.type, lambda: engine.generate(prompts, params), path)
    return OpTrace(ops=op_table(path, top), trace_path=path)
