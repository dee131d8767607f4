"""The openai backend against real OpenAI-compatible servers on 127.0.0.1: `transformers serve` (slow) and
a small server that breaks its streams on purpose (tests/misbehaving_server.py)."""

import json
import socket
import subprocess
import sys
import threading

import pytest

import ascend_nb
from ascend_nb.cli import main as cli_main
from ascend_nb.engine.openai_protocol import ReplyReader, SSEDecoder, StreamBroken
from ascend_nb.models.params import GenerationError
from ascend_nb.errors import AscendNbError
from ascend_nb.serving import free_port, transformers_server
from tests.misbehaving_server import misbehaving_server


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


# -- a server that misbehaves (tests/misbehaving_server.py): every fault ends in one clear error ----------
@pytest.fixture(scope="module")
def broken_url():
    with misbehaving_server() as url:
        yield url


def _engine(url, fault, timeout=10.0):
    return ascend_nb.load(fault, backend="openai", base_url=url, timeout=timeout)


@pytest.mark.parametrize("fault", ["good", "odd-but-valid", "finish-without-done"])
def test_well_formed_streams_still_answer(broken_url, fault):
    result = _engine(broken_url, fault).chat(QUESTION)
    assert (result.text, result.finish_reason, result.error) == ("Hello world", "stop", None)


FAULTS = {
    "malformed": "sent a chunk that is not JSON",
    "non-object": "sent a chunk that is not a JSON object",
    "no-done": r"closed the stream after 1 chunk\(s\), before a finish_reason or `data: \[DONE\]`",
    "cut-body": "broke the connection mid-stream",
    "cut-json": "closed the stream in the middle of a chunk",
    "cut-json-socket": "broke the connection mid-stream",
    "error-object": "reported an error mid-stream: CUDA out of memory",
    "bad-choice": "sent a chunk whose choice is malformed",
    "after-done": r"sent data after `data: \[DONE\]`",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_stream_is_an_error_with_the_partial_reply(broken_url, fault):
    with pytest.raises(GenerationError, match=FAULTS[fault]) as caught:
        _engine(broken_url, fault).chat(QUESTION)
    result = caught.value.result
    assert result.finish_reason == "error" and result.text == "Hello" and FAULTS[fault].split()[0] in result.error
    assert "the reply is partial (5 characters kept)" in str(caught.value) and "\n" not in str(caught.value)


def test_streamed_pieces_then_the_error(broken_url):
    stream = _engine(broken_url, "cut-body").chat(QUESTION, stream=True)
    pieces = []
    with pytest.raises(GenerationError):
        for piece in stream:
            pieces.append(piece)
    assert pieces == ["Hello"] and stream.result.finish_reason == "error" and stream.result.text == "Hello"


@pytest.mark.parametrize("fault, match", [("plain-json", "answered the streaming request with one plain JSON reply"),
                                          ("plain-text", "which is not a server-sent event line")])
def test_a_reply_that_is_not_an_event_stream_is_refused(broken_url, fault, match):
    with pytest.raises(GenerationError, match=match) as caught:
        _engine(broken_url, fault).chat(QUESTION)
    assert caught.value.result.text == "" and "no reply text arrived" in str(caught.value)


def test_timeout_is_a_deadline_that_keepalive_lines_do_not_extend(broken_url):
    """The server sends a piece, then a keep-alive comment every 50 ms for 20 s."""
    import time

    started = time.monotonic()
    with pytest.raises(GenerationError, match="did not finish its reply within 1 s") as caught:
        _engine(broken_url, "keepalive", timeout=1.0).chat(QUESTION)
    assert time.monotonic() - started < 8  # the server would have kept it alive for 20 s
    assert caught.value.result.text == "Hello"


def test_reply_cut_mid_character_drops_the_replacement_character(broken_url):
    result = _engine(broken_url, "cut-char").chat(QUESTION)
    assert (result.text, result.finish_reason) == ("Paris ", "length")


def test_sse_decoder_alone():
    """The parser on its own (for load generators): [DONE] ends it, anything after or missing it is refused."""
    lines = ['data: {"choices": [{"text": "a"}]}', "", ": ping", "", "data: [DONE]", ""]
    decoder = SSEDecoder("src")
    assert [chunk for chunk in map(decoder.feed, lines) if chunk is not None] == [{"choices": [{"text": "a"}]}]
    decoder.finish()
    decoder = SSEDecoder("src")
    assert decoder.feed('data: {"choices": []}') is None and decoder.feed("") == {"choices": []}
    with pytest.raises(StreamBroken, match="before a finish_reason or `data: \\[DONE\\]`"):
        decoder.finish()
    with pytest.raises(StreamBroken, match="not a server-sent event line"):
        SSEDecoder("src").feed('{"choices": []}')


def test_reply_reader_keeps_text_arrival_times_usage_and_finish_reason():
    """The reader the engine and the load benchmark both feed, line by line."""
    lines = ['data: {"choices": [{"delta": {"content": "Hel"}}]}', "", ": ping", "",
             'data: {"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]}', "",
             'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}', "", "data: [DONE]", ""]
    reader = ReplyReader("src")
    pieces = [piece for piece in map(reader.feed, lines) if piece]
    reader.finish()
    assert pieces == ["Hel", "lo"] and (reader.text, reader.finish_reason, len(reader.times)) == ("Hello", "stop", 2)
    t = reader.timings()
    assert (t.tokens, t.prompt_tokens, len(t.itl_ms)) == (3, 7, 1)  # tokens from usage, not pieces
    assert 0 < t.ttft_ms <= t.e2e_ms and t.e2e_ms == pytest.approx(t.ttft_ms + sum(t.itl_ms))
    unsized = ReplyReader("src")
    assert unsized.feed(lines[0]) == "" and unsized.feed("") == "Hel"  # the text comes with the event's blank line
    assert unsized.timings().tokens == 1  # no usage: one token per piece
    with pytest.raises(StreamBroken, match="before a finish_reason"):
        unsized.finish()


def test_cli_prints_the_partial_reply_then_one_line_and_exits_2(broken_url, capsys):
    code = cli_main(["generate", "hi", "--backend", "openai", "--model", "cut-body", "--base-url", broken_url])
    out, err = capsys.readouterr()
    assert code == 2 and out == "Hello [partial reply]\n"
    assert err.startswith("ascend-nb generate: error: the server at") and err.count("\n") == 1
    code = cli_main(["generate", "hi", "--json", "--backend", "openai", "--model", "no-done", "--base-url", broken_url])
    out, err = capsys.readouterr()
    reply = json.loads(out)
    assert code == 2 and (reply["text"], reply["finish_reason"]) == ("Hello", "error")
    assert "before a finish_reason" in reply["error"] and err.count("\n") == 1


@pytest.mark.parametrize("options, match", [
    (["--base-url", "ftp://127.0.0.1/v1"], "is not an http:// or https:// URL"),
    (["--base-url", "not a url"], "is not an http:// or https:// URL"),
    (["--timeout", "-1"], "timeout must be a positive number of seconds"),
    (["--timeout", "nan"], "timeout must be a positive number of seconds"),
])
def test_cli_refuses_bad_base_url_and_timeout_in_one_line(options, match, capsys):
    code = cli_main(["generate", "hi", "--backend", "openai", "--model", "m", *options])
    _, err = capsys.readouterr()
    assert code == 2 and match in err and err.count("\n") == 1
