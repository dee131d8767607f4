"""Serving launchers: the exact command lines (and MindIE's config.json) they build.

Only `transformers serve` runs here (tests/test_openai_backend.py and tests/test_serve_bench.py
start it through :func:`ascend_nb.serving.launch`); vLLM, vllm-ascend and MindIE-Service need a GPU
or NPU and are not installed, so their plans are checked as built, not run.
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path

import pytest

from ascend_nb.errors import AscendNbError
from ascend_nb.serving import launch, launch_plan

MODEL = "/data/baichuan2-7b-chat-llama"


def test_transformers_serve_with_continuous_batching():
    plan = launch_plan("transformers", MODEL, port=8100, dtype="float16")
    assert plan.command == (str(Path(sys.executable).with_name("transformers")), "serve", MODEL, "--host", "127.0.0.1",
                            "--port", "8100", "--continuous-batching", "--dtype", "float16")
    assert (plan.base_url, plan.model, dict(plan.env)) == ("http://127.0.0.1:8100/v1", MODEL, {"HF_HUB_OFFLINE": "1"})
    assert "--continuous-batching" not in launch_plan("transformers", MODEL, continuous_batching=False).command
    sized = launch_plan("transformers", MODEL, kv_cache_tokens=4097, max_batch_tokens=512).command
    assert sized[-5:] == ("--continuous-batching", "--cb-num-blocks", "17", "--cb-max-batch-tokens", "512")


def test_vllm_on_cuda():
    plan = launch_plan("vllm", MODEL, host="0.0.0.0", port=8000, tp=2, dtype="float16", max_model_len=4096)
    assert plan.command == ("vllm", "serve", MODEL, "--host", "0.0.0.0", "--port", "8000", "--served-model-name",
                            "baichuan2-7b-chat-llama", "--dtype", "float16", "--max-model-len", "4096",
                            "--tensor-parallel-size", "2")
    assert dict(plan.env) == {"CUDA_VISIBLE_DEVICES": "0,1"} and plan.model == "baichuan2-7b-chat-llama"


def test_vllm_ascend_on_chosen_npus():
    plan = launch_plan("vllm-ascend", MODEL, served_name="baichuan2", devices=[4, 5], dtype="float16",
                       extra_args=["--enforce-eager"])
    assert plan.command == ("vllm", "serve", MODEL, "--host", "127.0.0.1", "--port", "8000", "--served-model-name",
                            "baichuan2", "--dtype", "float16", "--tensor-parallel-size", "2", "--enforce-eager")
    assert dict(plan.env) == {"ASCEND_RT_VISIBLE_DEVICES": "4,5"}
    with pytest.raises(AscendNbError, match="one device per rank"):
        launch_plan("vllm-ascend", MODEL, tp=4, devices=[0, 1])


def test_mindie_service_config_and_daemon(tmp_path):
    config_path = tmp_path / "config.json"
    plan = launch_plan("mindie", MODEL, served_name="baichuan2", port=1025, devices=[0, 1], max_model_len=4096,
                       config_path=config_path, mindie_home="/opt/mindie-service")
    assert plan.command == ("/opt/mindie-service/bin/mindieservice_daemon",)
    assert dict(plan.env) == {"MIES_CONFIG_JSON_PATH": str(config_path), "MIES_INSTALL_PATH": "/opt/mindie-service",
                              "ASCEND_RT_VISIBLE_DEVICES": "0,1"}
    config = plan.files[config_path]
    server, backend = config["ServerConfig"], config["BackendConfig"]
    assert (server["ipAddress"], server["port"], server["httpsEnabled"]) == ("127.0.0.1", 1025, False)
    assert backend["npuDeviceIds"] == [[0, 1]]
    model = backend["ModelDeployConfig"]["ModelConfig"][0]
    assert (model["modelName"], model["modelWeightPath"], model["worldSize"]) == ("baichuan2", MODEL, 2)
    assert backend["ModelDeployConfig"]["maxSeqLen"] == 4096
    assert plan.base_url == "http://127.0.0.1:1025/v1" and json.loads(json.dumps(config)) == config


@pytest.mark.skipif(shutil.which("mindieservice_daemon") is not None, reason="MindIE is installed here")
def test_launching_an_engine_that_is_not_installed_is_a_clear_error(tmp_path):
    plan = launch_plan("mindie", MODEL, config_path=tmp_path / "config.json", mindie_home=tmp_path)
    with pytest.raises(AscendNbError, match="mindieservice_daemon` is not installed"):
        with launch(plan):
            pass
    assert not (tmp_path / "config.json").exists()  # nothing written for a server that cannot start


def test_mindie_config_is_written_private(tmp_path):
    daemon = tmp_path / "bin" / "mindieservice_daemon"
    daemon.parent.mkdir()
    daemon.write_text("#!/bin/sh\nexit 3\n")
    daemon.chmod(0o755)
    plan = launch_plan("mindie", MODEL, config_path=tmp_path / "config.json", mindie_home=tmp_path)
    with pytest.raises(AscendNbError, match="exited with code 3"):
        with launch(plan, startup_timeout=30, log_path=tmp_path / "daemon.log"):
            pass
    written = tmp_path / "config.json"
    assert json.loads(written.read_text()) == plan.files[written]
    assert stat.S_IMODE(written.stat().st_mode) == 0o640


def test_unknown_engine():
    with pytest.raises(AscendNbError, match="unknown serving engine"):
        launch_plan("tgi", MODEL)
