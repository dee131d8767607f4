"""The load benchmark against a real `transformers serve --continuous-batching` on 127.0.0.1 (the
embedded model), plus plain unit tests of the schedule, the metrics and the CLI's checks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ascend_nb.bench.mindie_csv import read_mindie_csv
from ascend_nb.bench.serve_bench import (LoadClient, LoadLevel, arrival_times, build_prompts, load_levels,
                                         run_level, serve_load)
from ascend_nb.bench.serve_metrics import RequestRecord, knee, level_row, parse_slo, percentile_table
from ascend_nb.cli import main
from ascend_nb.errors import AscendNbError
from ascend_nb.serving import transformers_server
from tests.misbehaving_server import DRIP_S, misbehaving_server

TINY = {"num_prompts": 4, "input_len": 8, "output_len": 4}


@pytest.fixture(scope="module")
def served(embedded_model_dir):
    """`transformers serve --continuous-batching` on the embedded model: (base_url, served model name)."""
    with transformers_server(embedded_model_dir, continuous_batching=True) as server:
        yield server.base_url, server.model


def started_client(base_url: str, model: str, num_prompts: int = 4, output_len: int = 4):
    """Prompts and a probed client, as serve_load prepares them."""
    prompts = build_prompts(model, num_prompts, input_len=8)
    client = LoadClient(base_url, model, output_len)
    client.probe(prompts[0])
    return client, prompts


def within(seconds: float, function):
    """``function()``, run on a daemon thread: a test failure, not a hung suite, when it outlasts ``seconds``."""
    outcome = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001  (raised again in the test's thread)
            outcome["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds:g} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between the closest ranks, by hand (numpy.percentile's default)."""
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- against the real server ---------------------------------------------------------------------

@pytest.mark.slow
def test_concurrency_1_and_4_complete_every_request(served, tmp_path):
    base_url, model = served
    rows = list(serve_load(base_url, model, concurrency=[1, 4], **TINY, progress=False))
    assert [row["concurrency"] for row in rows] == [1, 4]
    for row in rows:
        assert (row["completed"], row["failed"]) == (4, 0)
        assert row["prompt_format"] == "text"  # transformers serve refuses token-id prompts (HTTP 400)
        assert 4 <= row["total_output_tokens"] <= 16 and row["total_input_tokens"] > 0
        assert 0 < row["median_ttft_ms"] <= row["p99_ttft_ms"] <= row["p99_e2el_ms"]
        assert row["request_throughput"] == pytest.approx(4 / row["duration_s"])
        assert row["output_throughput"] == pytest.approx(row["total_output_tokens"] / row["duration_s"])
        assert row["Batchsize"] == row["concurrency"] and row["First token time(ms)"] == row["mean_ttft_ms"]


@pytest.mark.slow
def test_percentiles_and_goodput_agree_with_a_hand_computation(served):
    base_url, model = served
    client, prompts = started_client(base_url, model)
    result = run_level(client, prompts, LoadLevel(concurrency=2))
    records = result.records
    assert all(r.ok for r in records)
    for r in records:  # the stream's own clock: E2E = TTFT + every gap
        assert r.e2el_ms == pytest.approx(r.ttft_ms + sum(r.itl_ms))
    values = {"ttft": [r.ttft_ms for r in records], "e2el": [r.e2el_ms for r in records],
              "tpot": [(r.e2el_ms - r.ttft_ms) / (r.output_len - 1) for r in records if r.output_len > 1],
              "itl": [gap for r in records for gap in r.itl_ms]}
    row = result.row()
    for metric, numbers in values.items():
        assert row[f"mean_{metric}_ms"] == pytest.approx(sum(numbers) / len(numbers))
        assert row[f"median_{metric}_ms"] == pytest.approx(percentile(numbers, 50))
        assert row[f"p90_{metric}_ms"] == pytest.approx(percentile(numbers, 90))
        assert row[f"p99_{metric}_ms"] == pytest.approx(percentile(numbers, 99))
    median_ttft = percentile(values["ttft"], 50)
    for slo in ({"ttft_ms": median_ttft}, {"ttft_ms": 1e9, "tpot_ms": percentile(values["tpot"], 50)},
                {"ttft_ms": 1e9, "tpot_ms": 1e9}, {"e2el_ms": 1e-3}):
        good = sum(r.ttft_ms <= slo.get("ttft_ms", math.inf) and (r.tpot_ms or 0) <= slo.get("tpot_ms", math.inf)
                   and r.e2el_ms <= slo.get("e2el_ms", math.inf) for r in records)
        assert result.row(slo)["request_goodput"] * result.duration_s == pytest.approx(good)
    assert result.row({"ttft_ms": 1e9, "tpot_ms": 1e9})["request_goodput"] == row["request_throughput"]
    assert result.row({"e2el_ms": 1e-3})["request_goodput"] == 0
    paced = run_level(client, prompts, LoadLevel(request_rate=8.0), seed=3)  # Poisson arrivals, no concurrency cap
    assert all(r.ok for r in paced.records) and paced.row()["concurrency"] is None
    assert all(r.sent_s >= t for r, t in zip(paced.records, arrival_times(len(prompts), 8.0, seed=3)))


@pytest.mark.slow
def test_resume_skips_finished_levels(served, tmp_path):
    base_url, model = served
    path = tmp_path / "load.csv"
    first = list(serve_load(base_url, model, concurrency=[1], **TINY, csv_path=path, progress=False))
    both = list(serve_load(base_url, model, concurrency=[1, 2], **TINY, csv_path=path, progress=False))
    assert both[0]["duration_s"] == first[0]["duration_s"]  # read back, not measured again
    assert both[0] == {k: v for k, v in first[0].items()}
    again = list(serve_load(base_url, model, concurrency=[1, 2], **TINY, csv_path=path, progress=False,
                            tokenizer="/no/such/tokenizer"))  # nothing left to run: no prompts are built
    assert again == both
    assert len(path.read_text().splitlines()) == 3
    restarted = list(serve_load(base_url, model, concurrency=[2], **TINY, csv_path=path, resume=False, progress=False))
    assert restarted[0]["duration_s"] != both[1]["duration_s"]
    assert len(path.read_text().splitlines()) == 2


@pytest.mark.slow
def test_a_server_killed_mid_run_gives_failed_counts_not_a_crash(embedded_model_dir):
    with transformers_server(embedded_model_dir, continuous_batching=True) as server:
        client, prompts = started_client(server.base_url, server.model, num_prompts=6, output_len=8)

        def kill_after_the_first(record: RequestRecord) -> None:
            if server.process.poll() is None:
                os.killpg(server.process.pid, signal.SIGKILL)  # the process group this test started
                server.process.wait()

        result = run_level(client, prompts, LoadLevel(concurrency=2), on_request=kill_after_the_first)
    row = result.row()
    assert row["completed"] >= 1 and row["failed"] >= 1 and row["completed"] + row["failed"] == 6
    assert all(r.error for r in result.records if not r.ok)
    assert row["total_output_tokens"] == sum(r.output_len for r in result.records if r.ok)


@pytest.mark.slow
def test_cli_writes_our_csv_and_mindie_s(served, tmp_path):
    base_url, model = served
    ours, theirs = tmp_path / "load.csv", tmp_path / "mindie.csv"
    done = subprocess.run([sys.executable, "-m", "ascend_nb", "bench", "--backend", "openai", "--base-url", base_url,
                           "--model", model, "--concurrency", "1,2", "--num-prompts", "2", "--input-len", "8",
                           "--output-len", "3", "--slo", "ttft_ms=60000,tpot_ms=60000", "--csv", str(ours),
                           "--mindie-csv", str(theirs), "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))
    assert {r["request_rate"] for r in rows} == {"inf"}
    assert [(r["concurrency"], r["completed"], r["slo"]) for r in rows] == [(1, 2, "ttft_ms=60000,tpot_ms=60000"),
                                                                            (2, 2, "ttft_ms=60000,tpot_ms=60000")]
    table = read_mindie_csv(theirs)
    assert table["Batchsize"].tolist() == [1, 2] and table["mean_ttft_ms"].tolist() == [r["mean_ttft_ms"] for r in rows]
    assert read_mindie_csv(ours)["output_throughput"].tolist() == [r["output_throughput"] for r in rows]


# -- against a server that answers, then drips one token every DRIP_S (tests/misbehaving_server.py) ------

def test_a_slow_drip_fails_its_requests_at_the_request_timeout_and_the_level_keeps_its_row(tmp_path):
    """The request timeout bounds each whole request, however steadily the server trickles tokens."""
    dataset, path = tmp_path / "sharegpt.json", tmp_path / "load.csv"
    dataset.write_text(json.dumps([{"conversations": [{"from": "human", "value": "Hi there"}]}]))
    load = dict(concurrency=[2], num_prompts=2, output_len=10, dataset=dataset, csv_path=path, progress=False)
    with misbehaving_server() as url:
        started = time.monotonic()  # the probe (2 tokens) fits the timeout; 10 tokens take 9 * DRIP_S
        [row] = within(30, lambda: list(serve_load(url, "drip", **load, request_timeout_s=2.5 * DRIP_S)))
        assert time.monotonic() - started < 6 * DRIP_S
        assert (row["completed"], row["failed"], row["p99_ttft_ms"]) == (0, 2, None)
        assert within(10, lambda: list(serve_load(url, "drip", **load, request_timeout_s=2.5 * DRIP_S))) == [row]
    assert len(path.read_text().splitlines()) == 2  # the failed level's row, read back on resume


def test_a_request_over_its_timeout_says_so():
    from ascend_nb.bench.serve_prompts import LoadPrompt

    with misbehaving_server() as url:
        client = LoadClient(url, "drip", output_len=4, request_timeout_s=0.5 * DRIP_S)
        with pytest.raises(AscendNbError, match=r"no complete reply within the request timeout \(0.5 s\)"):
            within(10, lambda: client.probe(LoadPrompt(text="Hi there", prompt_len=2)))


# -- plain unit tests ----------------------------------------------------------------------------

def test_poisson_schedule_is_seeded_and_bounded():
    times = arrival_times(2000, 5.0, seed=1)
    assert times == arrival_times(2000, 5.0, seed=1) and times != arrival_times(2000, 5.0, seed=2)
    assert len(times) == 2000 and times[0] == 0.0
    assert all(math.isfinite(t) for t in times) and all(b >= a for a, b in zip(times, times[1:]))
    assert times[-1] / 1999 == pytest.approx(1 / 5.0, rel=0.1)  # mean gap 1 / rate
    assert arrival_times(3, math.inf) == [0.0, 0.0, 0.0]
    with pytest.raises(AscendNbError, match="rate must be > 0"):
        arrival_times(3, 0.0)


def test_load_levels_are_every_concurrency_by_every_rate():
    assert load_levels([1, 4]) == [LoadLevel(1, math.inf), LoadLevel(4, math.inf)]
    assert load_levels(None, [2.0]) == [LoadLevel(None, 2.0)]
    assert load_levels([2], [1.0, math.inf]) == [LoadLevel(2, 1.0), LoadLevel(2, math.inf)]
    for bad in (([], []), ([0], None), (None, [-1.0])):
        with pytest.raises(AscendNbError):
            load_levels(*bad)


def test_level_row_counts_failures_single_token_requests_and_goodput():
    records = [RequestRecord(0, 5, ttft_ms=10.0, itl_ms=[5.0, 7.0], e2el_ms=22.0, output_len=3),
               RequestRecord(1, 5, ttft_ms=30.0, itl_ms=[], e2el_ms=30.0, output_len=1),
               RequestRecord(2, 5, error="HTTP 500: boom")]
    row = level_row(records, duration_s=2.0, slo={"ttft_ms": 20.0, "tpot_ms": 10.0})
    assert (row["completed"], row["failed"], row["total_input_tokens"], row["total_output_tokens"]) == (2, 1, 10, 4)
    assert row["mean_tpot_ms"] == 6.0 and row["p99_itl_ms"] == pytest.approx(5.0 + 0.99 * 2.0)
    assert row["request_goodput"] == 0.5  # only request 0: request 1 misses the TTFT SLO
    assert level_row(records, 2.0, {"tpot_ms": 1.0})["request_goodput"] == 0.5  # one token: TPOT counts as 0
    empty = level_row([RequestRecord(0, 5, error="x")], 1.0)
    assert empty["completed"] == 0 and empty["p99_ttft_ms"] is None
    table = percentile_table([{"concurrency": 2, "request_rate": math.inf, **row}])
    assert table.loc[("c=2", "ITL (ms)"), "p99"] == row["p99_itl_ms"] and len(table) == 4


def test_knee_is_the_highest_load_meeting_every_slo_with_nothing_lost():
    rows = [{"concurrency": c, "completed": 4, "failed": f, "request_throughput": c, "p99_ttft_ms": 100 * c,
             "p99_tpot_ms": 10 * c} for c, f in ((1, 0), (2, 0), (4, 1), (8, 0))]
    assert knee(rows, {"ttft_ms": 500, "tpot_ms": 50})["concurrency"] == 2  # 4 lost a request, 8 misses TTFT
    assert knee(rows, {"ttft_ms": 50}) is None


def test_slo_parsing():
    assert parse_slo("ttft_ms=500, tpot_ms=50") == {"ttft_ms": 500.0, "tpot_ms": 50.0}
    assert parse_slo(None) == {} and parse_slo({"e2el_ms": 2}) == {"e2el_ms": 2.0}
    for bad in ("ttft=500", "ttft_ms=fast", "tpot_ms=-1", "ttft_ms"):
        with pytest.raises(AscendNbError):
            parse_slo(bad)


def test_cli_refuses_mixed_or_misplaced_load_options(capsys):
    assert main(["bench", "--backend", "openai,transformers"]) == 2
    assert "on its own" in capsys.readouterr().err
    assert main(["bench", "--backend", "transformers", "--concurrency", "2"]) == 2
    assert "add --backend openai" in capsys.readouterr().err
    assert main(["bench", "--backend", "openai", "--model", "m", "--slo", "ttft=1"]) == 2
    assert "unknown SLO" in capsys.readouterr().err


def test_dataset_prompts_from_sharegpt_and_ceval(tmp_path):
    from ascend_nb.bench.serve_prompts import dataset_prompts
    from ascend_nb.precision.ceval import SAMPLE_DATA_DIR

    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_text(json.dumps([
        {"id": "a", "conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "b", "conversations": [{"from": "gpt", "value": "not a question"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "What is an NPU?"}]}]))
    prompts = dataset_prompts(sharegpt, 5, seed=3)
    assert len(prompts) == 5 and {p.text for p in prompts} == {"Hi there", "What is an NPU?"}
    assert prompts == dataset_prompts(sharegpt, 5, seed=3) and all(p.ids is None for p in prompts)
    ceval = dataset_prompts(SAMPLE_DATA_DIR, 3)
    assert all(p.text.startswith("The following are multiple choice questions") and p.text.endswith("Answer:")
               for p in ceval)
    (tmp_path / "empty.json").write_text("[]")
    for bad in (tmp_path / "empty.json", tmp_path / "missing.json"):
        with pytest.raises(AscendNbError):
            dataset_prompts(bad, 2)


def test_random_prompts_are_seeded_ids_of_the_requested_length(embedded_model_dir):
    prompts = build_prompts(str(embedded_model_dir), 3, input_len=12, seed=5)
    assert prompts == build_prompts(str(embedded_model_dir), 3, input_len=12, seed=5)
    assert all(len(p.ids) == 12 and p.prompt_len == 12 and p.text for p in prompts)
    assert prompts[0].body(as_ids=True) == {"prompt": list(prompts[0].ids)}
    assert prompts[0].body(as_ids=False) == {"prompt": prompts[0].text}
    with pytest.raises(AscendNbError, match="need the served model's tokenizer"):
        build_prompts("served-name", 3, input_len=12)
