"""Show a streamed reply live in a notebook, and timings as a table."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ascend_nb.models.params import GenerationResult


def show_stream(stream) -> GenerationResult:
    """Render a :class:`TextStream` as Markdown that grows piece by piece; return its result."""
    from IPython.display import Markdown, display

    handle = display(Markdown("…"), display_id=True)
    text = ""
    with stream:  # an interrupted display frees the engine at once
        for piece in stream:
            text += piece
            handle.update(Markdown(text))
    handle.update(Markdown(stream.result.text))
    return stream.result


def timings_frame(results: Mapping[str, GenerationResult]) -> pd.DataFrame:
    """One row per named result: prompt/output tokens, TTFT, TPOT, E2E (ms) and decode tokens/s."""
    rows = {name: {"prompt_tokens": r.timings.prompt_tokens, "output_tokens": r.timings.tokens,
                   "TTFT (ms)": r.timings.ttft_ms, "TPOT (ms)": r.timings.tpot_ms, "E2E (ms)": r.timings.e2e_ms,
                   "tokens/s": r.timings.tokens_per_s, "finish": r.finish_reason}
            for name, r in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(1)
