"""A sweep's headline: best tok/s, geometric-mean speed-ups over the baseline backend, % of roofline, flags."""

from __future__ import annotations

import pytest

from ascend_nb.bench.comparison import headline
from ascend_nb.errors import AscendNbError


def rows(backend: str, tpot: float, ttft: float, pct: float, flags: str = "") -> list[dict]:
    return [{"backend": backend, "batch_size": 1, "input_len": i, "output_len": 32, "ttft_ms": ttft * i / 32,
             "tpot_ms": tpot * k, "decode_tokens_per_s": 1000 / (tpot * k), "pct_of_roofline": pct, "flags": flags}
            for k, i in ((1, 32), (2, 256))]


def test_headline_of_two_backends():
    text = headline(rows("transformers", 20.0, 100.0, 40.0) + rows("accelerated", 5.0, 50.0, 160.0, "above roofline"))
    lines = text.splitlines()
    assert lines[0] == "best decode: 200.0 tok/s (accelerated, batch 1, in 32, out 32)"
    assert lines[1] == "accelerated vs transformers (geometric mean over 2 points): TTFT 2.00x, TPOT 4.00x faster"
    assert lines[2] == "decode roofline: median 100%, best 160%"
    assert lines[3].startswith("2 flagged point(s)")


def test_headline_of_one_backend_has_no_speedup_line():
    assert "vs" not in headline(rows("transformers", 20.0, 100.0, 40.0))
    with pytest.raises(AscendNbError, match="empty"):
        headline([])
