"""Roofline arithmetic against numbers worked out by hand, and the bandwidth measurement."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ascend_nb.bench import published, roofline_model
from ascend_nb.bench.roofline_model import measure_bandwidth, roofline, roofline_table, with_roofline
from ascend_nb.errors import AscendNbError
from ascend_nb.models.footprint import kv_cache_bytes, weight_bytes

# hidden 64, ffn 128, 2 layers, 4 query heads and 2 KV heads of 16, vocab 100 (a config.json dict).
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100}
# Per layer: q 64x64 = 4096, k and v 32x64 = 2048 each, o 4096, gate/up/down 3 x 64x128 = 24576 -> 36864.
# Two layers 73728 + LM head 100x64 = 6400 -> 80128 linear weights; RMSNorm (2 x 2 + 1) x 64 = 320.
TINY_LINEAR, TINY_NORM = 80128, 320


def test_weight_bytes_by_hand():
    assert weight_bytes(TINY, "bfloat16") == (TINY_LINEAR + TINY_NORM) * 2
    assert weight_bytes(TINY, "float32") == (TINY_LINEAR + TINY_NORM) * 4
    # int8: 1 byte per weight + one float32 scale per output row; rows: per layer 64+32+32+64+128+128+64 = 512,
    # two layers 1024, LM head 100 -> 1124 rows.
    assert weight_bytes(TINY, "bfloat16", "int8") == TINY_LINEAR + 1124 * 4 + TINY_NORM * 2
    # int4 (group 32): half a byte per weight + a float16 scale and minimum per 32 inputs of a row, the LM head
    # (100 x 64) in int8. Groups: rows with 64 inputs have 2, with 128 inputs 4: per layer
    # (64+32+32+64+128+128) x 2 + 64 x 4 = 1152, two layers 2304 groups.
    head = 100 * 64
    assert weight_bytes(TINY, "bfloat16", "int4") == ((TINY_LINEAR - head) // 2 + 2304 * 2 * 2 + head + 100 * 4
                                                      + TINY_NORM * 2)


def test_kv_cache_bytes_by_hand():
    # K and V x 2 layers x 2 KV heads x 16 dims x 2 bytes = 256 bytes per token.
    assert kv_cache_bytes(TINY, "float16", seq_len=10) == 2560
    assert kv_cache_bytes(TINY, "float16", seq_len=10, batch_size=3) == 7680


def test_roofline_by_hand():
    limit = roofline(TINY, device="cpu", dtype="float16", seq_len=10, batch_size=2, bandwidth_gbs=1.0)
    step_bytes = (TINY_LINEAR + TINY_NORM) * 2 + 2 * 2560  # weights once, each sequence's cache
    assert limit.tokens_per_s == pytest.approx(2 * 1e9 / step_bytes)
    assert limit.tpot_ms == pytest.approx(1000 * step_bytes / 1e9)
    assert limit.percent(limit.tokens_per_s / 4) == pytest.approx(25.0)
    assert limit.bandwidth_source == "given"


def test_aquila_on_the_spec_sheets():
    # Aquila-7B: 32 x (4 x 4096^2 + 3 x 4096 x 11008) + 100008 x 4096 linear weights, 65 x 4096 norm weights.
    params = 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 100008 * 4096 + 65 * 4096
    limit = roofline("aquila-7b", device="A100", dtype="float16")
    assert limit.weight_bytes == 2 * params == 13_771_808_768
    assert (limit.bandwidth_gbs, limit.bandwidth_source) == (2039, "spec sheet (A100)")
    assert limit.tokens_per_s == pytest.approx(2039e9 / (2 * params))
    row = with_roofline(published.performance("aquila-7b", "A100")).iloc[0]
    assert row["pct_of_roofline"] == pytest.approx(100 * 88.88888889 / (2039e9 / (2 * params)))


def test_bad_arguments():
    with pytest.raises(AscendNbError, match="unknown quantize"):
        weight_bytes(TINY, "float16", "int3")
    with pytest.raises(AscendNbError, match="unknown dtype"):
        weight_bytes(TINY, "float8")
    with pytest.raises(AscendNbError, match="needs a device and a dtype"):
        roofline(TINY)


def test_one_bandwidth_figure_per_machine_with_its_method(tmp_path, monkeypatch):
    """Every roofline on a machine is drawn against one figure, kept for the machine's boot in
    $ASCEND_NB_HOME, whatever the model's size (it moved 1.6x between two notebooks before)."""
    monkeypatch.setenv("ASCEND_NB_HOME", str(tmp_path))
    roofline_model.machine_bandwidth.cache_clear()
    first = roofline_model.machine_bandwidth("cpu")
    assert 0.1 < first.gbs < 10_000 and first.working_set_mb == 1024 and first.reads == 10 and first.spread_pct >= 0
    assert first.threads == torch.get_num_threads()
    kept = json.loads((tmp_path / "bandwidth.json").read_text())
    assert list(kept.values()) == [dataclasses.asdict(first)] and "boot" in next(iter(kept))
    roofline_model.machine_bandwidth.cache_clear()  # a new process on the same machine: read, not measured
    monkeypatch.setattr(roofline_model, "_measure", lambda *args: pytest.fail("measured again"))
    assert roofline_model.machine_bandwidth("cpu") == first and measure_bandwidth("cpu") == first.gbs
    tiny = roofline(TINY, device="cpu", dtype="float32")
    medium = roofline({**TINY, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 6},
                      device="cpu", dtype="float32")
    assert tiny.bandwidth_gbs == medium.bandwidth_gbs == first.gbs
    assert tiny.bandwidth_source == f"measured on cpu: median of 10 reads of 1024 MB on {first.threads} threads, " \
                                    f"spread {first.spread_pct:.0f} %"
    roofline_model.machine_bandwidth.cache_clear()


def test_a_chosen_working_set_is_measured_by_the_same_method():
    assert 0.1 < measure_bandwidth("cpu", 1) < 10_000  # 1 byte asks for the 64 MiB floor


def test_roofline_table_lists_every_device_and_this_one():
    table = roofline_table("aquila-7b", "float16", this_device="cpu")
    assert list(table["device"]) == list(published.devices()["device"]) + ["cpu"]
    duo = table.set_index("device").loc["Atlas 300I DUO"]
    assert duo["roofline_tokens_per_s"] == pytest.approx(204e9 / 13_771_808_768)
    assert duo["min_tpot_ms"] == pytest.approx(1000 / duo["roofline_tokens_per_s"])
