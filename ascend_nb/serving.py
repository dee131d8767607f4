"""Start and stop OpenAI-compatible servers: ``transformers serve``, vLLM, vllm-ascend, MindIE-Service.

:func:`launch_plan` builds each engine's documented command line (and, for MindIE-Service, its
``config.json``); :func:`launch` runs a plan, waits until ``/v1/models`` answers and stops the
process group it started when the block ends. Only ``transformers serve`` runs here (CPU); the
vLLM / vllm-ascend / MindIE plans are the engines' documented usage, checked for the exact command.
The ``openai`` backend and the load benchmark talk to any of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ascend_nb.errors import AscendNbError

SERVER_ENGINES = ("transformers", "vllm", "vllm-ascend", "mindie")
MINDIE_HOME = "/usr/local/Ascend/mindie/latest/mindie-service"  # the documented default MIES_INSTALL_PATH
CB_BLOCK_TOKENS = 256  # tokens per KV-cache block of transformers' continuous batching (its default page size)


@dataclass(frozen=True)
class LocalServer:
    """A running server: its ``/v1`` base URL, the model name it serves and (when we started it) its process."""

    base_url: str
    model: str
    process: subprocess.Popen | None = field(default=None, compare=False, repr=False)
    log_path: Path | None = None


@dataclass(frozen=True)
class LaunchPlan:
    """What :func:`launch` runs: the command, the variables added to the environment, the config
    files written first (``{path: JSON object}``), and where the server will answer."""

    engine: str
    command: tuple[str, ...]
    base_url: str
    model: str
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[Path, dict] = field(default_factory=dict)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _vllm_command(model_dir: str, host: str, port: int, name: str, tp: int, dtype: str | None,
                  max_model_len: int | None) -> list[str]:
    command = ["vllm", "serve", model_dir, "--host", host, "--port", str(port), "--served-model-name", name]
    if dtype:
        command += ["--dtype", dtype]
    if max_model_len:
        command += ["--max-model-len", str(max_model_len)]
    if tp != 1:
        command += ["--tensor-parallel-size", str(tp)]
    return command


def mindie_config(model_dir: str, name: str, host: str, port: int, devices: Sequence[int],
                  max_seq_len: int = 2560, max_input_len: int = 2048, max_batch_size: int = 200) -> dict:
    """MindIE-Service's ``config.json`` for one model on ``devices`` (plain HTTP on ``host:port``, the
    OpenAI API in vLLM's dialect); fields as in MindIE's documented single-machine example."""
    world_size = len(devices)
    return {
        "Version": "1.0.0",
        "LogConfig": {"logLevel": "Info", "logFileSize": 20, "logFileNum": 20, "logPath": "logs/mindservice.log"},
        "ServerConfig": {
            "ipAddress": host, "managementIpAddress": "127.0.0.2", "port": port, "managementPort": port + 1,
            "metricsPort": port + 2, "allowAllZeroIpListening": False, "maxLinkNum": 1000, "httpsEnabled": False,
            "fullTextEnabled": False, "inferMode": "standard", "interCommTLSEnabled": False, "interCommPort": 1121,
            "openAiSupport": "vllm", "tokenTimeout": 600, "e2eTimeout": 600},
        "BackendConfig": {
            "backendName": "mindieservice_llm_engine", "modelInstanceNumber": 1, "npuDeviceIds": [list(devices)],
            "tokenizerProcessNumber": 8, "multiNodesInferEnabled": False, "multiNodesInferPort": 1120,
            "interNodeTLSEnabled": False,
            "ModelDeployConfig": {
                "maxSeqLen": max_seq_len, "maxInputTokenLen": max_input_len, "truncation": False,
                "ModelConfig": [{"modelInstanceType": "Standard", "modelName": name, "modelWeightPath": model_dir,
                                 "worldSize": world_size, "cpuMemSize": 5, "npuMemSize": -1, "backendType": "atb",
                                 "trustRemoteCode": False}]},
            "ScheduleConfig": {
                "templateType": "Standard", "templateName": "Standard_LLM", "cacheBlockSize": 128,
                "maxPrefillBatchSize": 50, "maxPrefillTokens": 8192, "prefillTimeMsPerReq": 150,
                "prefillPolicyType": 0, "decodeTimeMsPerReq": 50, "decodePolicyType": 0,
                "maxBatchSize": max_batch_size, "maxIterTimes": max_seq_len - max_input_len, "maxPreemptCount": 0,
                "supportSelectBatch": False, "maxQueueDelayMicroseconds": 5000}},
    }


def launch_plan(engine: str, model_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
                served_name: str | None = None, tp: int = 1, devices: Sequence[int] | None = None,
                dtype: str | None = None, max_model_len: int | None = None, continuous_batching: bool = True,
                kv_cache_tokens: int | None = None, max_batch_tokens: int | None = None,
                config_path: str | Path | None = None, mindie_home: str | Path = MINDIE_HOME,
                extra_args: Sequence[str] = ()) -> LaunchPlan:
    """The documented command line of ``engine`` serving ``model_dir`` on ``host:port``.

    - ``transformers``: ``transformers serve DIR --host H --port P [--continuous-batching] [--dtype D]``
      (served under the directory path); with continuous batching, ``kv_cache_tokens`` sizes the paged
      KV cache (``--cb-num-blocks``, 256-token blocks) and ``max_batch_tokens`` the batch
      (``--cb-max-batch-tokens``): left unset, transformers takes 60% of the free RAM on a CPU;
    - ``vllm`` (CUDA): ``vllm serve DIR --host H --port P --served-model-name NAME [--dtype D]
      [--max-model-len N] [--tensor-parallel-size TP]`` with ``CUDA_VISIBLE_DEVICES`` from ``devices``;
    - ``vllm-ascend``: the same ``vllm serve`` line (vllm-ascend is vLLM's NPU plugin) with
      ``ASCEND_RT_VISIBLE_DEVICES``;
    - ``mindie``: ``{mindie_home}/bin/mindieservice_daemon`` reading the ``config.json`` of
      :func:`mindie_config` from ``MIES_CONFIG_JSON_PATH`` (``config_path``, default a file beside
      the model in the system temp dir), one NPU per rank (``worldSize = len(devices)``).
    """
    if engine not in SERVER_ENGINES:
        raise AscendNbError(f"unknown serving engine {engine!r}: use one of {', '.join(SERVER_ENGINES)}")
    if tp < 1 or (devices and tp != 1 and len(devices) != tp):
        raise AscendNbError(f"tensor-parallel size {tp} and devices {list(devices)} disagree: give one device per rank")
    model_dir = str(model_dir)
    base_url = f"http://{host}:{port}/v1"
    if engine == "transformers":
        command = [str(Path(sys.executable).with_name("transformers")), "serve", model_dir, "--host", host,
                   "--port", str(port)]
        if continuous_batching:
            command.append("--continuous-batching")
            if kv_cache_tokens:
                command += ["--cb-num-blocks", str(-(-kv_cache_tokens // CB_BLOCK_TOKENS))]
            if max_batch_tokens:
                command += ["--cb-max-batch-tokens", str(max_batch_tokens)]
        if dtype:
            command += ["--dtype", dtype]
        return LaunchPlan(engine, (*command, *extra_args), base_url, model_dir, env={"HF_HUB_OFFLINE": "1"})
    name = served_name or Path(model_dir).name
    devices = list(devices) if devices else list(range(tp))
    if engine in ("vllm", "vllm-ascend"):
        visible = "CUDA_VISIBLE_DEVICES" if engine == "vllm" else "ASCEND_RT_VISIBLE_DEVICES"
        command = _vllm_command(model_dir, host, port, name, len(devices), dtype, max_model_len)
        return LaunchPlan(engine, (*command, *extra_args), base_url, name,
                          env={visible: ",".join(map(str, devices))})
    config_path = Path(config_path) if config_path else Path(tempfile.gettempdir()) / f"mindie-{name}-{port}.json"
    limits = {"max_seq_len": max_model_len, "max_input_len": max_model_len * 4 // 5} if max_model_len else {}
    config = mindie_config(model_dir, name, host, port, devices, **limits)
    command = (str(Path(mindie_home) / "bin" / "mindieservice_daemon"), *extra_args)
    return LaunchPlan(engine, command, base_url, name,
                      env={"MIES_CONFIG_JSON_PATH": str(config_path), "MIES_INSTALL_PATH": str(mindie_home),
                           "ASCEND_RT_VISIBLE_DEVICES": ",".join(map(str, devices))},
                      files={config_path: config})


def _write_config(path: Path, content: dict) -> None:
    from ascend_nb.files import atomic_write_text

    atomic_write_text(path, json.dumps(content, indent=4) + "\n")
    path.chmod(0o640)  # MindIE refuses a config file readable by others


def _stop(process: subprocess.Popen) -> None:
    """Stop the process group started for ``process`` (the server and any workers it spawned):
    SIGTERM, then SIGKILL after 30 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:  # the whole group is gone already
        process.wait()
        return
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _log_tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return " | ".join(text[-lines:])


@contextmanager
def launch(plan: LaunchPlan, startup_timeout: float = 300.0, log_path: str | Path | None = None
           ) -> Iterator[LocalServer]:
    """Run ``plan`` until the block ends: write its config files, start it in its own process group
    (output to ``log_path``, default a temporary file), wait for ``GET /v1/models``, then stop it."""
    if shutil.which(plan.command[0]) is None:
        raise AscendNbError(f"`{plan.command[0]}` is not installed here: install {plan.engine} "
                            + ("(pip install 'transformers[serving]')" if plan.engine == "transformers" else
                               "on the serving machine, or print the plan's command and run it there"))
    for path, content in plan.files.items():
        _write_config(Path(path), content)
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix=f"ascend-nb-{plan.engine}-", suffix=".log")
        os.close(handle)
        log_path = name
    log_path = Path(log_path)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(plan.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **plan.env})
    try:
        deadline = time.monotonic() + startup_timeout
        while process.poll() is None:
            try:
                if httpx.get(f"{plan.base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AscendNbError(f"{plan.engine} did not answer {plan.base_url}/models within {startup_timeout:g} s: "
                                    f"see {log_path}")
            time.sleep(0.5)
        if process.poll() is not None:
            raise AscendNbError(f"{plan.engine} exited with code {process.returncode} before serving: "
                                f"{_log_tail(log_path)} (full log: {log_path})")
        yield LocalServer(base_url=plan.base_url, model=plan.model, process=process, log_path=log_path)
    finally:
        _stop(process)


@contextmanager
def transformers_server(model_dir: str | Path, port: int | None = None, startup_timeout: float = 180.0,
                        continuous_batching: bool = False, kv_cache_tokens: int | None = 8192,
                        max_batch_tokens: int | None = 1024) -> Iterator[LocalServer]:
    """Run ``transformers serve MODEL_DIR`` on 127.0.0.1 until the block ends (``continuous_batching``:
    paged KV cache of ``kv_cache_tokens``, concurrent requests batched, at most ``max_batch_tokens``
    per step). Needs ``pip install 'transformers[serving]'``. The model name to send is the directory path."""
    plan = launch_plan("transformers", model_dir, port=port or free_port(), continuous_batching=continuous_batching,
                       kv_cache_tokens=kv_cache_tokens, max_batch_tokens=max_batch_tokens)
    with launch(plan, startup_timeout=startup_timeout) as server:
        yield server
