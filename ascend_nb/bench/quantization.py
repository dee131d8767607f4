"""What does quantization cost? Each format of :mod:`ascend_nb.quant_formats` beside the unquantized model.

:func:`quantization_report` loads the model once per format on the accelerated backend (the
unquantized one first: it is the reference and stays loaded; each quantized engine is freed before
the next loads) and measures, on that same engine:

- perplexity on a held-out text (:func:`~ascend_nb.precision.perplexity.perplexity`; every format
  scores the same token ids, tokenized once),
- C-Eval accuracy under the official ``logits`` protocol (:func:`~ascend_nb.precision.evaluate`),
- agreement with the reference layer by layer (:func:`~ascend_nb.precision.compare_models`: Cosine of
  every hidden state and of the logits),
- TTFT and TPOT at one point (:func:`ascend_nb.bench.latency_sweep.measure_point`: random input ids, EOS off),
- the weight bytes the planner counts for the format (:func:`ascend_nb.models.footprint.model_weights_bytes`).

The result's :attr:`QuantizationReport.table` is a DataFrame (one row per format);
:meth:`QuantizationReport.as_table` shows it, :func:`ascend_nb.ui.precision_plots.quantization_figure`
draws it.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ascend_nb.dtypes import dtype_name
from ascend_nb.errors import AscendNbError
from ascend_nb.precision.accuracy import evaluate
from ascend_nb.precision.ceval import SAMPLE_DATA_DIR
from ascend_nb.precision.engine_compare import DEFAULT_PROMPTS, compare_models
from ascend_nb.precision.perplexity import DEFAULT_WINDOW, perplexity, read_text, text_ids
from ascend_nb.quant_formats import QUANT_FORMATS, check_quantize
from ascend_nb.tables import Table

FORMATS = (None, *QUANT_FORMATS)  # None: the unquantized reference
COLUMNS = ("format", "kernels", "weights_mib", "perplexity", "perplexity_change_pct", "ceval_acc", "ceval_n",
           "logits_cosine", "min_layer_cosine", "ttft_ms", "tpot_ms", "decode_tokens_per_s")
LAYER_COLUMNS = ("format", "layer", "tensor", "Cosine", "MaxAbsErr")


@dataclass
class QuantizationReport:
    """One row per format (:data:`COLUMNS`; the reference's row is named after its dtype and has Cosine 1),
    the per-layer agreement of each quantized format with the reference (:data:`LAYER_COLUMNS`), and what
    was measured on what."""

    table: pd.DataFrame
    layers: pd.DataFrame
    reference: str
    settings: dict = field(default_factory=dict)

    def as_table(self) -> Table:
        """The rows for a notebook or a report: perplexity to 3 decimals, its change in %, accuracy, Cosine."""
        s = self.settings
        note = (f"{s['model']} on {s['device']}, accelerated backend; perplexity over {s['text_tokens']} tokens "
                f"(window {s['window']}, stride {s['stride']}); C-Eval: {s['ceval_n']} questions, logits protocol; "
                f"Cosine against {self.reference} over {s['prompts']} prompts; TTFT/TPOT: batch 1, "
                f"{s['input_len']} in / {s['output_len']} out, median of {s['repeat']}")
        return Table(self.table, decimals={"perplexity": 3, "perplexity_change_pct": 2}, note=note)

    def summary(self) -> str:
        """One line per quantized format: its perplexity change, logits Cosine and TPOT against the reference."""
        base = self.table.iloc[0]
        lines = [f"reference {self.reference}: perplexity {base['perplexity']:.3f}, C-Eval {base['ceval_acc']:.3f}, "
                 f"TPOT {base['tpot_ms']:.2f} ms"]
        for _, row in self.table.iloc[1:].iterrows():
            lines.append(f"{row['format']}: perplexity {row['perplexity']:.3f} ({row['perplexity_change_pct']:+.2f}%), "
                         f"C-Eval {row['ceval_acc']:.3f}, logits Cosine {row['logits_cosine']:.5f}, "
                         f"TPOT {row['tpot_ms']:.2f} ms ({row['tpot_ms'] / base['tpot_ms']:.2f}x)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready: the settings, the rows and the per-layer Cosine (NaN as null)."""
        def records(frame: pd.DataFrame) -> list[dict]:
            return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return {"reference": self.reference, "settings": self.settings, "formats": records(self.table),
                "layers": records(self.layers)}


def _check_formats(formats: Sequence[str | None]) -> list[str | None]:
    names = [check_quantize(f) for f in formats]
    if not names or names[0] is not None:
        raise AscendNbError("the first format is the reference: start formats with None (unquantized), "
                            f"e.g. {tuple(FORMATS)}")
    if len(set(names)) != len(names):
        raise AscendNbError(f"a format is named twice in {formats}")
    return names


def quantization_report(model: str | Path | None = None, formats: Sequence[str | None] = FORMATS, device: str = "auto",
                        dtype: str = "auto", text: str | None = None, max_tokens: int | None = None,
                        window: int | None = None, stride: int | None = None, ceval_data: str | Path = SAMPLE_DATA_DIR,
                        ceval_split: str = "val", ceval_limit: int | None = None, ceval_shots: int = 0,
                        prompts: Sequence[str] = DEFAULT_PROMPTS, input_len: int = 128, output_len: int = 32,
                        repeat: int = 3, warmup: int = 1, max_seq_len: int | None = None, kernels: str | None = None,
                        on_progress: Callable[[str], None] | None = None) -> QuantizationReport:
    """Perplexity, C-Eval accuracy, per-layer Cosine and TTFT/TPOT of ``model`` in each of ``formats``
    (``None`` first: the unquantized reference in ``dtype``; then names of :data:`ascend_nb.quant_formats.QUANT_FORMATS`),
    all on the accelerated backend on ``device``.

    ``text`` (default: the bundled held-out text, :data:`~ascend_nb.precision.perplexity.HELDOUT_TEXT`),
    ``max_tokens``, ``window`` and ``stride`` go to :func:`~ascend_nb.precision.perplexity.perplexity`;
    ``ceval_*`` to :func:`~ascend_nb.precision.evaluate` (logits protocol); ``prompts`` to
    :func:`~ascend_nb.precision.compare_models`; ``input_len``, ``output_len``, ``repeat`` and ``warmup``
    make the timed point. ``max_seq_len`` (default: the longest of the window, input + output and
    :data:`~ascend_nb.precision.perplexity.DEFAULT_WINDOW`, within the model's limit; C-Eval prompts need
    room too) is every engine's static budget. ``on_progress(line)`` hears each finished step.
    """
    from ascend_nb.bench.latency_sweep import SweepPoint, measure_point
    from ascend_nb.engine.loading import DEFAULT_MODEL, load, resolve_model_dir
    from ascend_nb.models.footprint import model_weights_bytes
    from ascend_nb.models.validation import read_config

    names = _check_formats(formats)
    model = DEFAULT_MODEL if model is None else model
    say = on_progress or (lambda line: None)
    if max_seq_len is None:
        limit = int(read_config(resolve_model_dir(model)).get("max_position_embeddings") or DEFAULT_WINDOW)
        max_seq_len = min(limit, max(DEFAULT_WINDOW, window or 0, input_len + output_len))

    def load_format(quantize: str | None):
        return load(model, device=device, dtype=dtype, backend="accelerated", max_seq_len=max_seq_len, kernels=kernels,
                    quantize=quantize)

    reference = load_format(None)
    reference_name = dtype_name(reference.dtype)
    ids = text_ids(reference, read_text() if text is None else text, max_tokens)
    rows, layers, measured = [], [], {}
    for quantize in names:
        engine = reference if quantize is None else load_format(quantize)
        name = quantize or reference_name
        ppl = perplexity(engine, ids, window=window, stride=stride)
        say(f"{name}: {ppl.describe()}")
        accuracy = evaluate(engine, ceval_data, split=ceval_split, shots=ceval_shots, protocol="logits", limit=ceval_limit)
        say(f"{name}: C-Eval {accuracy.describe()}")
        if quantize is None:
            logits_cosine = min_layer_cosine = 1.0
        else:
            report = compare_models(reference, engine, list(prompts))
            frame = report.table
            layers.append(frame.assign(format=name)[list(LAYER_COLUMNS)])
            logits_cosine = float(frame["Cosine"].iloc[-1])
            min_layer_cosine = float(frame["Cosine"].iloc[:-1].min())
            say(f"{name}: logits Cosine {logits_cosine:.6f}, lowest hidden-state Cosine {min_layer_cosine:.6f}")
        speed = measure_point(engine, SweepPoint(1, input_len, output_len), repeat=repeat, warmup=warmup)
        say(f"{name}: TTFT {speed['ttft_ms']:.1f} ms, TPOT {speed['tpot_ms']:.2f} ms")
        rows.append({"format": name, "kernels": engine.kernels,
                     "weights_mib": model_weights_bytes(engine.config, engine.dtype, quantize) / 2 ** 20,
                     "perplexity": ppl.perplexity, "ceval_acc": accuracy.avg_acc, "ceval_n": accuracy.n,
                     "logits_cosine": logits_cosine, "min_layer_cosine": min_layer_cosine,
                     "ttft_ms": speed["ttft_ms"], "tpot_ms": speed["tpot_ms"],
                     "decode_tokens_per_s": speed["decode_tokens_per_s"]})
        measured = {"model": engine.spec.name, "device": str(engine.device), "text_tokens": len(ids),
                    "window": ppl.window, "stride": ppl.stride, "ceval_n": accuracy.n}
        if engine is not reference:
            del engine
            gc.collect()
    table = pd.DataFrame(rows)
    base = table["perplexity"].iloc[0]
    table["perplexity_change_pct"] = 100.0 * (table["perplexity"] / base - 1.0) if math.isfinite(base) else math.nan
    layer_frame = (pd.concat(layers, ignore_index=True) if layers
                   else pd.DataFrame(columns=list(LAYER_COLUMNS)))
    settings = {**measured, "dtype": reference_name, "max_seq_len": max_seq_len, "prompts": len(prompts),
                "input_len": input_len, "output_len": output_len, "repeat": repeat, "ceval_data": str(ceval_data)}
    return QuantizationReport(table=table[list(COLUMNS)], layers=layer_frame, reference=reference_name, settings=settings)
