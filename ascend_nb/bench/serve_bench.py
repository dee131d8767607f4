"""Load benchmark of an OpenAI-compatible server, in the manner of ``vllm bench serve``.

Each load level sends the same ``num_prompts`` seeded prompts to ``/completions``, streaming, from
one asyncio event loop (httpx): at most ``concurrency`` requests in flight and/or arrivals at
``request_rate`` requests/s (a seeded Poisson process; ``inf`` sends them all at once). Every
request is timed client-side from its stream (TTFT, the gap between chunks, E2E latency; output
tokens from the server's ``usage``); a request that errors, breaks off, outlives its request timeout
(a deadline for the whole request, however the server trickles) or the level's time limit is counted
as failed, never raised. A level's row (:mod:`ascend_nb.bench.serve_metrics`) lands as soon as it
finishes and is appended to a resumable CSV (ours + MindIE ModelTest's columns).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from ascend_nb.bench.mindie_csv import CASE_COLUMNS, mindie_values
from ascend_nb.bench.results_csv import ResultsCsv
from ascend_nb.bench.serve_metrics import (LATENCY_FIELDS, LEVEL_FIELDS, RequestRecord, format_slo, level_label,
                                           level_row, parse_slo)
from ascend_nb.bench.serve_prompts import LoadPrompt, dataset_prompts, load_tokenizer, random_load_prompts
from ascend_nb.engine.openai_protocol import ReplyReader, Server, auth_headers, request_payload
from ascend_nb.errors import AscendNbError
from ascend_nb.models.params import GenerationParams
from ascend_nb.progress import progress_bar

IDENTITY_FIELDS = ("backend", "base_url", "model", "dataset", "num_prompts", "input_len", "output_len", "seed",
                   "slo", "concurrency", "request_rate")
TEXT_FIELDS = ("backend", "base_url", "model", "dataset", "slo", "prompt_format", "Model")
CSV_COLUMNS = IDENTITY_FIELDS + ("prompt_format",) + LEVEL_FIELDS + CASE_COLUMNS
_INT_FIELDS = {"num_prompts", "input_len", "output_len", "seed", "concurrency", "completed", "failed",
               "total_input_tokens", "total_output_tokens", "Batchsize", "In_seq", "Out_seq"}
# empty in a finished row: no concurrency cap, or no latency where no request completed (or all gave one token)
_OPTIONAL_FIELDS = {"concurrency", "Batchsize", *LATENCY_FIELDS, "First token time(ms)", "Non-first token time(ms)",
                    "Non-first token Throughput(Tokens/s)"}
PROBE_TOKENS = 2  # output tokens of the first, untimed request (warm-up and ids-or-text probe)


@dataclass(frozen=True)
class LoadLevel:
    """At most ``concurrency`` requests in flight (None: no limit), arriving at ``request_rate`` per second."""

    concurrency: int | None = None
    request_rate: float = math.inf


def load_levels(concurrency: Sequence[int] | None = None, request_rates: Sequence[float] | None = None
                ) -> list[LoadLevel]:
    """Every concurrency x every request rate (either alone: the other unbounded), in the order given."""
    concurrency, request_rates = list(concurrency or []), list(request_rates or [])
    if not concurrency and not request_rates:
        raise AscendNbError("give at least one load level: concurrency (e.g. 1,2,4) and/or request rates (e.g. 1,4,inf)")
    if any(int(c) != c or c < 1 for c in concurrency):
        raise AscendNbError(f"concurrency must be whole numbers >= 1, got {concurrency}")
    if any(not r > 0 for r in request_rates):
        raise AscendNbError(f"request rates must be > 0 requests/s (inf: all at once), got {request_rates}")
    return [LoadLevel(int(c) if c is not None else None, float(r))
            for c in (concurrency or [None]) for r in (request_rates or [math.inf])]


def arrival_times(num_prompts: int, request_rate: float, seed: int = 0) -> list[float]:
    """When each request is sent (seconds after the level starts): exactly ``num_prompts`` finite,
    non-decreasing times, the first at 0 and the gaps exponential with mean 1 / ``request_rate``
    (a Poisson process, seeded); all 0 for ``inf``."""
    if num_prompts < 1:
        raise AscendNbError(f"num_prompts must be >= 1, got {num_prompts}")
    if not request_rate > 0:
        raise AscendNbError(f"request rate must be > 0 requests/s, got {request_rate}")
    if math.isinf(request_rate):
        return [0.0] * num_prompts
    gaps = np.random.default_rng(seed).exponential(1.0 / request_rate, size=num_prompts - 1)
    return [0.0, *np.cumsum(gaps).tolist()]


class LoadClient:
    """Sends timed streaming ``/completions`` requests to one served model (an async httpx client), each
    bounded as a whole by ``request_timeout_s``."""

    def __init__(self, base_url: str, model: str, output_len: int, api_key: str | None = None,
                 ignore_eos: bool = False, request_timeout_s: float = 300.0):
        self.model = model
        self.server = Server.resolve(base_url, api_key, request_timeout_s)
        self.params = GenerationParams(max_new_tokens=output_len, do_sample=False, ignore_eos=ignore_eos)
        self.as_ids = True

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/completions"

    def client(self, connections: int) -> httpx.AsyncClient:
        headers = auth_headers(self.server.api_key)
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        # no per-read timeout (a server sending a token a second would never trip it): send() sets the deadline
        return httpx.AsyncClient(headers=headers, limits=limits, timeout=None)

    async def send(self, client: httpx.AsyncClient, prompt: LoadPrompt, record: RequestRecord,
                   params: GenerationParams | None = None) -> None:
        """Stream one request and fill ``record`` (its ``error`` says why it failed): the whole request
        has the request timeout, however the server trickles."""
        payload = request_payload(self.model, prompt.body(self.as_ids), params or self.params)
        try:
            await asyncio.wait_for(self._stream(client, payload, record), self.server.timeout)
        except asyncio.TimeoutError:
            record.error = f"no complete reply within the request timeout ({self.server.timeout:g} s)"
        except AscendNbError as exc:  # a broken stream (StreamBroken), named by the reader
            record.error = str(exc)[:300]
        except (httpx.HTTPError, ValueError) as exc:  # transport errors
            record.error = f"{type(exc).__name__}: {str(exc)[:200] or 'connection lost'}"

    async def _stream(self, client: httpx.AsyncClient, payload: dict, record: RequestRecord) -> None:
        """Stream one request into ``record``; a broken stream or the transport raises."""
        reply = ReplyReader(self.url)  # the openai backend's reader: every stream fault is an error
        async with client.stream("POST", self.url, json=payload) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace").strip()[:200]
                record.error = f"HTTP {response.status_code}: {detail}"
                return
            async for line in response.aiter_lines():
                reply.feed(line)
            reply.finish()
        if not reply.times:
            record.error = "the stream ended without a token"
            return
        timings = reply.timings()
        record.ttft_ms, record.itl_ms, record.e2el_ms = timings.ttft_ms, timings.itl_ms, timings.e2e_ms
        record.output_len = int(timings.tokens)
        record.prompt_len = int(timings.prompt_tokens or record.prompt_len)

    def probe(self, prompt: LoadPrompt) -> None:
        """One untimed short request: warms the server up and picks ids or text for the prompts
        (ids unless the server refuses them with HTTP 400/422). A server that answers neither raises."""
        _run_in_thread(self._probe(prompt))

    async def _probe(self, prompt: LoadPrompt) -> None:
        params = self.params.replace(max_new_tokens=PROBE_TOKENS)
        async with self.client(1) as client:
            for as_ids in ((True, False) if prompt.ids is not None else (False,)):
                self.as_ids = as_ids
                record = RequestRecord(0, prompt.prompt_len)
                await self.send(client, prompt, record, params)
                if record.ok:
                    return
                if not (as_ids and record.error.startswith(("HTTP 400", "HTTP 422"))):
                    break
        raise AscendNbError(f"the server at {self.server.base_url} failed a first request for {self.model!r}: "
                            f"{record.error}")


async def _run_level(load: LoadClient, prompts: Sequence[LoadPrompt], level: LoadLevel, seed: int,
                     level_timeout_s: float | None, on_request: Callable[[RequestRecord], None] | None
                     ) -> tuple[list[RequestRecord], float]:
    arrivals = arrival_times(len(prompts), level.request_rate, seed)
    records = [RequestRecord(i, p.prompt_len) for i, p in enumerate(prompts)]
    slots = asyncio.Semaphore(level.concurrency) if level.concurrency else contextlib.nullcontext()
    async with load.client(min(level.concurrency or len(prompts), len(prompts))) as client:
        start = time.perf_counter()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + arrivals[i] - time.perf_counter()))
            async with slots:
                records[i].sent_s = time.perf_counter() - start
                await load.send(client, prompts[i], records[i])
            if on_request is not None:
                on_request(records[i])

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(prompts))]
        try:
            _, pending = await asyncio.wait(tasks, timeout=level_timeout_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        duration = time.perf_counter() - start
    for record, task in zip(records, tasks):
        if task in pending:
            record.error = f"not finished within the level's time limit ({level_timeout_s:g} s)"
        elif not task.cancelled() and task.exception() is not None:
            record.error = f"{type(task.exception()).__name__}: {task.exception()}"
    return records, duration


def _run_in_thread(coroutine: Coroutine):
    """Run ``coroutine`` on a fresh event loop in a worker thread (a Jupyter kernel already runs a
    loop in this one); an interrupt here cancels it there."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(coroutine)
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = loop.run_until_complete(task)
        except BaseException as exc:  # noqa: BLE001  (handed back to the caller's thread)
            outcome["error"] = exc
        finally:
            loop.close()

    worker = threading.Thread(target=target, name="ascend-nb-load", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except BaseException:
        loop.call_soon_threadsafe(task.cancel)
        worker.join()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@dataclass
class LevelResult:
    """One finished load level: every request's record and the level's wall time."""

    level: LoadLevel
    records: list[RequestRecord]
    duration_s: float

    def row(self, slo: Mapping[str, float] | None = None) -> dict:
        """The level's metrics (:data:`~ascend_nb.bench.serve_metrics.LEVEL_FIELDS`) under ``slo``."""
        return {"concurrency": self.level.concurrency, "request_rate": self.level.request_rate,
                **level_row(self.records, self.duration_s, slo)}


def run_level(load: LoadClient, prompts: Sequence[LoadPrompt], level: LoadLevel, seed: int = 0,
              level_timeout_s: float | None = None,
              on_request: Callable[[RequestRecord], None] | None = None) -> LevelResult:
    """Send ``prompts`` at ``level`` (through a ``load`` client already :meth:`~LoadClient.probe`-d) and
    wait for all of them (or the time limit); ``on_request`` is called (on the worker thread) as each
    request finishes."""
    records, duration = _run_in_thread(_run_level(load, prompts, level, seed, level_timeout_s, on_request))
    return LevelResult(level, records, duration)


def build_prompts(model: str, num_prompts: int, input_len: int, dataset: str | Path | None = None,
                  tokenizer: str | Path | None = None, seed: int = 0) -> list[LoadPrompt]:
    """The prompts of a run: from ``dataset``, or random ids of ``input_len`` tokens from the
    tokenizer of ``tokenizer`` (default: ``model`` when it is a registry name or a local directory)."""
    if dataset is not None:
        return dataset_prompts(dataset, num_prompts, seed)
    source = tokenizer or model
    try:
        loaded = load_tokenizer(source)
    except AscendNbError:
        raise AscendNbError(f"random prompts of {input_len} tokens need the served model's tokenizer and {source!r} is "
                            "not a local model: give tokenizer= (--tokenizer DIR) or a dataset (--dataset PATH)") from None
    return random_load_prompts(loaded, num_prompts, input_len, seed)


def serve_load(base_url: str | None, model: str, concurrency: Sequence[int] | None = (1,),
               request_rates: Sequence[float] | None = None, num_prompts: int = 16, input_len: int = 128,
               output_len: int = 64, dataset: str | Path | None = None, tokenizer: str | Path | None = None,
               slo: str | Mapping[str, float] | None = None, seed: int = 0, ignore_eos: bool = False,
               csv_path: str | Path | None = None, resume: bool = True, api_key: str | None = None,
               request_timeout_s: float = 300.0, level_timeout_s: float | None = 1800.0,
               progress: bool = True) -> Iterator[dict]:
    """Benchmark the model ``model`` served at ``base_url`` (default ``$OPENAI_BASE_URL``) at every
    load level; yield one row per level as it finishes.

    Levels are every ``concurrency`` x every ``request_rates`` (:func:`load_levels`). Each level sends
    ``num_prompts`` prompts (:func:`build_prompts`; the same prompts at every level) asking for
    ``output_len`` tokens (``ignore_eos`` asks vLLM-style servers for exactly that many). Rows carry
    the run's identity (``backend, base_url, model, dataset, num_prompts, input_len, output_len, seed,
    slo, concurrency, request_rate, prompt_format``), the level's metrics in ``vllm bench serve``'s
    names and MindIE ModelTest's case columns. A request not complete within ``request_timeout_s`` (the
    whole request) counts as failed. With ``csv_path`` each row is appended as it lands;
    with ``resume`` (default) levels already in that CSV are yielded from it, not run again.
    """

    levels = load_levels(concurrency, request_rates)
    if output_len < 1 or num_prompts < 1:
        raise AscendNbError(f"num_prompts and output_len must be >= 1, got {num_prompts} and {output_len}")
    slo = parse_slo(slo)
    results = ResultsCsv(csv_path, CSV_COLUMNS, IDENTITY_FIELDS, text_fields=TEXT_FIELDS, int_fields=_INT_FIELDS,
                         optional_fields=_OPTIONAL_FIELDS, resume=resume, kind="serving benchmark")
    load = LoadClient(base_url, model, output_len, api_key=api_key, ignore_eos=ignore_eos,
                      request_timeout_s=request_timeout_s)
    identity = {"backend": "openai", "base_url": load.server.base_url, "model": model,
                "dataset": str(dataset) if dataset is not None else "random", "num_prompts": num_prompts,
                "input_len": input_len, "output_len": output_len, "seed": seed, "slo": format_slo(slo)}
    keys = [{**identity, "concurrency": level.concurrency, "request_rate": level.request_rate} for level in levels]
    prompts = None
    for level, key in zip(levels, keys):
        previous = results.find(key)
        if previous is not None:
            yield previous
            continue
        if prompts is None:  # built, and the server probed, only when a level is left to run
            prompts = build_prompts(model, num_prompts, input_len, dataset, tokenizer, seed)
            load.probe(prompts[0])
        bar = progress_bar(num_prompts, desc=f"load level {level_label(key)}", unit="requests", disable=not progress)
        try:
            result = run_level(load, prompts, level, seed, level_timeout_s, on_request=lambda _: bar.update(1))
        finally:
            bar.close()
        row = {**key, "prompt_format": "ids" if load.as_ids else "text", **result.row(slo)}
        row.update(mindie_values(row))
        results.append(row)
        yield dict(row)
