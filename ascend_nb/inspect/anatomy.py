"""Inside one prefill and one decode step: operator time by class, and bytes per token against bandwidth.

:func:`step_anatomy` profiles a real two-token generation (torch.profiler; torch_npu's on Ascend, through
:func:`ascend_nb.bench.op_trace.profile_to_file`) with Python calls recorded, splits the trace at the first
and second token (a marker written from the engine's step observer), and adds up operator self time by class
(:func:`linear_kernels`: the linear layers' time by the kernel that ran). An operator belongs to the innermost
enclosing call that names a class (the model's ``nn.Linear`` / RMSNorm / rotary modules or our kernels'
``rms_norm``, ``rotary``, attention and linear calls, the sampler), else to its own name (``aten::linear``,
...), else to "other" (on the CPU GEMV kernel paths a decode step's rotary runs inside the native attention
op, so it counts as attention there; its decode layer is one operator whose stages are profiler scopes named
``ascend_nb::gemv``, ``ascend_nb::rms_norm`` and ``ascend_nb::decode_attention``). On CPU the time is host
operator self time (Python overhead left out); on a device it is kernel time, each kernel classed by the host
call that launched it.

:func:`decode_memory` puts the bytes one decode step must read (weights + KV cache, from
:mod:`ascend_nb.bench.roofline_model`) over the measured bandwidth next to the measured time per token.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from pathlib import Path

import pandas as pd
import torch

from ascend_nb.bench.roofline_model import roofline
from ascend_nb.bench.latency_sweep import random_prompts
from ascend_nb.bench.op_trace import nested_self_times, profile_to_file, trace_events
from ascend_nb.models.params import GenerationParams
from ascend_nb.errors import AscendNbError
from ascend_nb.inspect.engines import require_local

OP_CLASSES = ("linear", "attention", "norm", "rotary", "sampling", "other")
PHASES = ("prefill", "decode")
MARKER = "ascend_nb::token"
FUNCTION_CLASSES = {
    "rms_norm": "norm", "rotary": "rotary", "rotate_half": "rotary", "apply_rotary_pos_emb": "rotary",
    "prefill_attention": "attention", "decode_attention": "attention", "decode_step_attention": "attention",
    "eager_attention_forward": "attention",
    "sdpa_attention_forward": "attention", "flash_attention_forward": "attention", "gemv": "linear",
    "select_tokens": "sampling",
}
OP_NAME_CLASSES = (  # an operator's own name, when no enclosing call names a class
    (re.compile(r"^aten::(linear|addmm|mm|_int_mm|_weight_int8pack_mm)$|^mkldnn::_linear_pointwise$|gemv|dequant_linear"),
     "linear"),
    (re.compile(r"attention"), "attention"),
    (re.compile(r"rms_norm"), "norm"),
    (re.compile(r"rotary"), "rotary"),
    (re.compile(r"^aten::multinomial$"), "sampling"),
)
_PY_CALL = re.compile(r"^(?P<file>.+)\((?P<line>\d+)\): (?P<func>.+)$")
HOST_CATEGORIES = {"cpu_op", "python_function", "user_annotation", "cuda_runtime", "cuda_driver"}
DEVICE_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}


def _code_key(code) -> tuple[str, int, str]:
    return Path(code.co_filename).name, code.co_firstlineno, code.co_name


def _method_classes(engine) -> dict[tuple[str, int, str], str]:
    """The engine's own module forwards / linear calls, keyed as the profiler names Python calls."""
    classes: dict[tuple[str, int, str], str] = {}

    def add(kind: type, method: str, op_class: str) -> None:
        for base in kind.__mro__[:-1]:  # the class and its parents (super() calls), not object
            function = base.__dict__.get(method)
            if base is not torch.nn.Module and hasattr(function, "__code__"):
                # decorated forwards share their wrapper's code: key the wrapped function
                classes.setdefault(_code_key(inspect.unwrap(function).__code__), op_class)

    if engine.backend == "transformers":
        for module in engine.model.modules():
            name = type(module).__name__
            if isinstance(module, torch.nn.Linear):
                add(type(module), "forward", "linear")
            elif "Norm" in name:
                add(type(module), "forward", "norm")
            elif "Rotary" in name:
                add(type(module), "forward", "rotary")
            elif name.endswith("Attention"):
                add(type(module), "forward", "attention")
    else:
        model = engine.model
        for layer in model.layers:
            for linear in (layer.qkv, layer.o, layer.gate_up, layer.down):
                add(type(linear), "__call__", "linear")
        add(type(model.lm_head), "__call__", "linear")
    return classes


def _event_class(event: dict, methods: dict) -> str | None:
    name = event["name"]
    if event.get("cat") == "python_function":
        call = _PY_CALL.match(name)
        if call is None:
            return None
        key = (Path(call["file"]).name, int(call["line"]), call["func"])
        return methods.get(key) or FUNCTION_CLASSES.get(call["func"])
    for pattern, op_class in OP_NAME_CLASSES:
        if pattern.search(name):
            return op_class
    return None


def _classify(event: dict, ancestors: tuple[dict, ...], methods: dict) -> str:
    for candidate in (event, *reversed(ancestors)):
        op_class = _event_class(candidate, methods)
        if op_class is not None:
            return op_class
    return "other"


def _operator_time(event: dict, ancestors: tuple[dict, ...]) -> bool:
    """Whether an event's self time is operator time: an operator's, or a profiler scope's inside an
    operator (the stages of the native decode layer, which calls its GEMVs without dispatching)."""
    return event.get("cat") == "cpu_op" or (event.get("cat") == "user_annotation"
                                            and any(a.get("cat") == "cpu_op" for a in ancestors))


def _phase(ts: float, marks: list[float]) -> str | None:
    if ts < marks[0]:
        return "prefill"
    return "decode" if len(marks) > 1 and ts < marks[1] else None


def anatomy_table(events: list[dict], methods: dict) -> pd.DataFrame:
    """``phase, op_class, ms, share`` from the events of a trace holding two :data:`MARKER` marks."""
    marks = sorted(float(e["ts"]) for e in events if e["name"] == MARKER)
    if len(marks) < 2:
        raise AscendNbError("the trace holds fewer than two generated tokens: nothing to split into phases")
    host = [e for e in events if e.get("cat") in HOST_CATEGORIES]
    device = [e for e in events if str(e.get("cat", "")).lower() in DEVICE_CATEGORIES]
    totals = {(phase, op_class): 0.0 for phase in PHASES for op_class in OP_CLASSES}
    launches: dict[object, tuple[str | None, str]] = {}
    for event, self_time, ancestors in nested_self_times(host):
        op_class = _classify(event, ancestors, methods)
        phase = _phase(float(event["ts"]), marks)
        correlation = (event.get("args") or {}).get("correlation")
        if correlation is not None:
            launches[correlation] = (phase, op_class)
        if not device and phase is not None and _operator_time(event, ancestors):
            totals[(phase, op_class)] += self_time / 1000
    for kernel in device:  # a kernel runs later than its launch: it counts where it was launched
        phase, op_class = launches.get((kernel.get("args") or {}).get("correlation"), (None, "other"))
        if phase is not None:
            totals[(phase, op_class)] += float(kernel["dur"]) / 1000
    frame = pd.DataFrame([{"phase": p, "op_class": c, "ms": ms} for (p, c), ms in totals.items()])
    frame["share"] = frame["ms"] / frame.groupby("phase")["ms"].transform("sum").where(lambda s: s > 0)
    return frame


def _two_token_events(engine, input_len: int, seed: int, trace_path: str | Path | None) -> list[dict]:
    """The trace events of a profiled two-token generation from ``input_len`` random tokens, with a
    :data:`MARKER` at each token (after a warm-up generation)."""
    require_local(engine)
    prompt = random_prompts(engine.config.vocab_size, 1, input_len, seed)[0]
    params = GenerationParams(max_new_tokens=2, ignore_eos=True)
    if input_len + params.max_new_tokens > engine.max_seq_len:
        raise AscendNbError(f"input_len {input_len} + 2 tokens exceeds max_seq_len {engine.max_seq_len}: "
                            "lower input_len")
    if engine.step_observer is not None:
        raise AscendNbError("this engine's steps are already being watched: finish that generation first")
    engine.generate(prompt, params)  # warm-up: first-call allocations and kernel selection stay out

    def mark(_logits, _tokens) -> None:
        with torch.profiler.record_function(MARKER):
            pass

    engine.step_observer = mark
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = profile_to_file(engine.device.type, lambda: engine.generate(prompt, params),
                                   trace_path or Path(tmp) / "anatomy.json", with_stack=True)
            return trace_events(path)
    finally:
        engine.step_observer = None


@torch.inference_mode()
def step_anatomy(engine, input_len: int = 128, seed: int = 0, trace_path: str | Path | None = None) -> pd.DataFrame:
    """Operator time by class (:data:`OP_CLASSES`) for the prefill of ``input_len`` random tokens and
    for one decode step after it: ``phase, op_class, ms, share`` (share of the phase's operator time).
    ``trace_path`` keeps the Chrome trace (it opens in https://ui.perfetto.dev)."""
    return anatomy_table(_two_token_events(engine, input_len, seed, trace_path), _method_classes(engine))


def linear_kernel_table(events: list[dict], methods: dict) -> pd.DataFrame:
    """``phase, kernel, calls, ms``: the operators (and the native GEMVs' per-format scopes) whose own time is
    linear-layer time, from the events of a trace holding two :data:`MARKER` marks, longest first per phase."""
    marks = sorted(float(e["ts"]) for e in events if e["name"] == MARKER)
    if len(marks) < 2:
        raise AscendNbError("the trace holds fewer than two generated tokens: nothing to split into phases")
    host = [e for e in events if e.get("cat") in HOST_CATEGORIES]
    rows: dict[tuple[str, str], list[float]] = {}
    for event, self_time, ancestors in nested_self_times(host):
        phase = _phase(float(event["ts"]), marks)
        if phase is None or not _operator_time(event, ancestors) or _classify(event, ancestors, methods) != "linear":
            continue
        row = rows.setdefault((phase, event["name"]), [0, 0.0])
        row[0] += 1
        row[1] += self_time / 1000
    frame = pd.DataFrame([{"phase": p, "kernel": k, "calls": n, "ms": ms} for (p, k), (n, ms) in rows.items()],
                         columns=["phase", "kernel", "calls", "ms"])
    return frame.sort_values(["phase", "ms"], ascending=[False, False], ignore_index=True)


@torch.inference_mode()
def linear_kernels(engine, input_len: int = 128, seed: int = 0) -> pd.DataFrame:
    """Which kernels the linear layers really ran in a prefill of ``input_len`` random tokens and one decode
    step (see :func:`linear_kernel_table`): on the CPU GEMV paths each weight format is its own scope
    (``ascend_nb::gemv int4``, ``ascend_nb::dequant_linear int8``, ...), so a quantized model that silently
    fell back to dequantize-then-GEMM shows ``aten::`` conversions and GEMMs here instead."""
    return linear_kernel_table(_two_token_events(engine, input_len, seed, None), _method_classes(engine))


def decode_memory(engine, input_len: int = 128, decode_steps: int = 8, seed: int = 0) -> pd.DataFrame:
    """Why decode is memory bound: per decode step, the bytes of weights and of KV cache (at
    ``input_len`` tokens) read, the time they take at this device's measured bandwidth, and the
    measured time per output token and per prompt token (``item, bytes, ms, bandwidth_gbs, source``)."""
    require_local(engine)
    limit = roofline(engine, seq_len=input_len)
    prompt = random_prompts(engine.config.vocab_size, 1, input_len, seed)[0]
    params = GenerationParams(max_new_tokens=decode_steps + 1, ignore_eos=True)
    engine.generate(prompt, params.replace(max_new_tokens=2))
    timings = engine.generate(prompt, params).timings
    per_byte_ms = 1000.0 / (limit.bandwidth_gbs * 1e9)
    rows = [("weights read per step", limit.weight_bytes, limit.weight_bytes * per_byte_ms),
            (f"KV cache read per step ({input_len} tokens)", limit.kv_bytes, limit.kv_bytes * per_byte_ms),
            ("memory floor per token", limit.bytes_per_step, limit.tpot_ms),
            ("measured decode step (TPOT)", None, timings.tpot_ms),
            ("measured prefill per prompt token (TTFT / input_len)", None, timings.ttft_ms / input_len)]
    frame = pd.DataFrame(rows, columns=["item", "bytes", "ms"])
    frame["bandwidth_gbs"] = limit.bandwidth_gbs
    frame["source"] = limit.bandwidth_source
    return frame
