"""The openai backend against a real OpenAI-compatible server started on 127.0.0.1 by the test."""

import json
import socket
import subprocess
import sys
import threading

import pytest

import ascend_nb
from ascend_nb.errors import AscendNbError
from ascend_nb.serving import free_port, transformers_server


@pytest.fixture(scope="module")
def served(embedded_model_dir):
    """`transformers serve` on the embedded model, on loopback: (base_url, served model name)."""
    with transformers_server(embedded_model_dir) as server:
        yield server.base_url, server.model


@pytest.fixture(scope="module")
def served_engine(served):
    base_url, model = served
    return ascend_nb.load(model, backend="openai", base_url=base_url, timeout=120)


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.slow
def test_chat_non_streaming_answers_paris(served_engine):
    result = served_engine.chat(QUESTION, max_new_tokens=24)
    assert "Paris" in result.text and result.finish_reason == "stop"
    assert result.timings.tokens > 1 and result.timings.prompt_tokens > 10


@pytest.mark.slow
def test_chat_streaming_pieces_and_client_side_timings(served_engine):
    stream = served_engine.chat(QUESTION, max_new_tokens=24, stream=True)
    pieces = list(stream)
    assert len(pieces) > 2 and "".join(pieces) == stream.result.text
    t = stream.result.timings
    assert 0 < t.ttft_ms < t.e2e_ms and len(t.itl_ms) == len(pieces) - 1 and t.tpot_ms > 0


@pytest.mark.slow
def test_raw_completion_and_stop_event(served_engine):
    assert served_engine.generate("The capital of France is", max_new_tokens=6).text
    stop = threading.Event()
    stream = served_engine.stream("Count from one to fifty: one, two,", max_new_tokens=60, stop_event=stop)
    for i, _ in enumerate(stream):
        if i == 1:
            stop.set()
    assert stream.result.finish_reason == "cancelled" and stream.result.timings.tokens <= 3


@pytest.mark.slow
def test_server_error_is_a_clear_message(served):
    base_url, _ = served
    engine = ascend_nb.load("not-the-served-model", backend="openai", base_url=base_url)
    with pytest.raises(AscendNbError, match="answered HTTP 4"):
        engine.chat(QUESTION, max_new_tokens=4)


@pytest.mark.slow
def test_cli_generate_against_the_server(served):
    base_url, model = served
    done = subprocess.run([sys.executable, "-m", "ascend_nb", "generate", "What is the capital of France?", "--json",
                           "--backend", "openai", "--model", model, "--base-url", base_url],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Paris" in json.loads(done.stdout)["text"]


def test_server_down_is_a_clear_error():
    engine = ascend_nb.load("m", backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(AscendNbError, match="cannot reach an OpenAI-compatible server"):
        engine.chat(QUESTION)


def test_timeout_is_a_clear_error():
    """A real socket that accepts the connection and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        engine = ascend_nb.load("m", backend="openai", base_url=f"http://127.0.0.1:{port}/v1", timeout=0.5)
        with pytest.raises(AscendNbError, match="did not answer within 0.5 s"):
            engine.chat(QUESTION)


def test_base_url_and_key_from_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    engine = ascend_nb.load("m", backend="openai")
    assert (engine.base_url, engine.api_key) == ("http://127.0.0.1:9/v1", "sk-test")
    with pytest.raises(AscendNbError, match="no logits"):
        engine.forward(None)


@pytest.mark.slow
def test_chat_widget_works_against_a_served_model(served_engine):
    from ascend_nb.ui import ChatWidget

    widget = ChatWidget(served_engine)
    widget.prompt.value = "What is the capital of France?"
    widget.send_button.click()
    widget.wait(timeout=120)
    assert widget.messages[-1]["role"] == "assistant" and "Paris" in widget.messages[-1]["content"]
    assert widget.last_stats["ttft_ms"] > 0 and widget.last_stats["tokens"] > 1
