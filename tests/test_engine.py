"""The shared generation loop, run through both local backends: streaming, batches, stop event,
sampling, timings and errors behave the same on the transformers reference and the accelerated runtime."""

import inspect
import threading
import time

import pytest
import torch

import ascend_nb
from ascend_nb import GenerationParams
from ascend_nb.engine.base import GenerationEngine
from ascend_nb.engine.openai_backend import OpenAIEngine
from ascend_nb.errors import AscendNbError
from ascend_nb.models.params import Timings

PROMPT = [1, 504, 3458, 282, 4649, 314]


@pytest.fixture(scope="module", params=["transformers", "accelerated"])
def engine_each_backend(request, tiny_llama_dir):
    """The tiny random Llama on each local backend (the conftest `tiny_engine` is the transformers one alone)."""
    return ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend=request.param)


def test_greedy_matches_a_plain_argmax_loop(engine_each_backend):
    result = engine_each_backend.generate(PROMPT, max_new_tokens=8, ignore_eos=True)
    ids = list(PROMPT)
    with torch.inference_mode():
        for _ in range(8):
            ids.append(int(engine_each_backend.forward(torch.tensor([ids]))[0][0, -1].argmax()))
    assert result.token_ids == ids[len(PROMPT):]
    assert result.finish_reason == "length"
    assert result.timings.tokens == 8 and len(result.timings.itl_ms) == 7


def test_timings_are_consistent(engine_each_backend):
    t = engine_each_backend.generate(PROMPT, max_new_tokens=6, ignore_eos=True).timings
    assert 0 < t.ttft_ms <= t.e2e_ms
    assert t.tpot_ms == pytest.approx((t.e2e_ms - t.ttft_ms) / 5)
    assert sum(t.itl_ms) == pytest.approx(t.e2e_ms - t.ttft_ms)
    assert t.prompt_tokens == len(PROMPT) and t.tokens_per_s == pytest.approx(1000 / t.tpot_ms)


def test_timings_from_token_times():
    t = Timings.from_token_times(1.0, [1.5, 1.75, 2.0], prompt_tokens=4, peak_memory_mb=9.0)
    assert (t.ttft_ms, t.itl_ms, t.e2e_ms, t.tokens, t.prompt_tokens, t.peak_memory_mb) == (
        500.0, [250.0, 250.0], 1000.0, 3, 4, 9.0)
    assert Timings.from_token_times(1.0, [1.5, 2.0], tokens=5).tpot_ms == 125.0  # tokens counted by a server
    assert Timings.from_token_times(1.0, []) == Timings()


def test_every_backend_honours_the_engine_protocol(engine_each_backend):
    """The local engines and the served one offer the same members, with the same parameters."""
    served = OpenAIEngine("served-model", base_url="http://127.0.0.1:9/v1")  # constructing it sends nothing
    methods = [name for name, _ in inspect.getmembers(GenerationEngine, inspect.isfunction) if not name.startswith("_")]
    assert methods == ["chat", "forward", "generate", "params", "stream"]
    for engine in (engine_each_backend, served):
        assert isinstance(engine, GenerationEngine)
        for name in methods:
            expected = inspect.signature(getattr(GenerationEngine, name)).parameters
            assert list(inspect.signature(getattr(type(engine), name)).parameters) == list(expected), name


def test_batch_with_different_lengths_equals_each_prompt_alone(engine_each_backend):
    prompts = [PROMPT, [1, 42, 43], [7] * 11, PROMPT[:5]]
    batch = engine_each_backend.generate(prompts, max_new_tokens=6, ignore_eos=True)
    alone = [engine_each_backend.generate(p, max_new_tokens=6, ignore_eos=True) for p in prompts]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]


def test_stream_pieces_join_to_the_generated_text(engine_each_backend):
    stream = engine_each_backend.stream(PROMPT, max_new_tokens=10, ignore_eos=True)
    pieces = list(stream)
    assert "".join(pieces) == stream.result.text == engine_each_backend.generate(PROMPT, max_new_tokens=10, ignore_eos=True).text


def test_stop_event_ends_generation_within_one_token(engine_each_backend):
    stop = threading.Event()
    stream = engine_each_backend.stream(PROMPT, max_new_tokens=50, ignore_eos=True, stop_event=stop)
    for i, _ in enumerate(stream):
        if i == 2:
            stop.set()
    assert stream.result.finish_reason == "cancelled"
    assert len(stream.result.token_ids) <= 4


def test_sampling_is_reproducible_with_a_seed_and_varies_without(engine_each_backend):
    params = GenerationParams(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=50, top_p=0.95,
                              repetition_penalty=1.1, ignore_eos=True)
    first = engine_each_backend.generate(PROMPT, params.replace(seed=7)).token_ids
    assert engine_each_backend.generate(PROMPT, params.replace(seed=7)).token_ids == first
    assert any(engine_each_backend.generate(PROMPT, params.replace(seed=s)).token_ids != first for s in (8, 9, 10))


def test_stop_strings_cut_the_text(engine_each_backend):
    full = engine_each_backend.generate(PROMPT, max_new_tokens=12, ignore_eos=True).text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    result = engine_each_backend.generate(PROMPT, max_new_tokens=12, ignore_eos=True, stop=[stop])
    assert result.finish_reason == "stop" and result.text == full[:full.find(stop)]


def test_prompt_longer_than_max_seq_len_is_refused_before_work(engine_each_backend):
    with pytest.raises(AscendNbError, match="exceeds max_seq_len 256"):
        engine_each_backend.generate([5] * 250, max_new_tokens=10)


@pytest.mark.parametrize("overrides, match", [
    ({"max_new_tokens": 0}, "max_new_tokens must be > 0"),
    ({"top_p": 0.0}, "top_p"),
    ({"do_sample": True, "temperature": 0.0}, "temperature"),
    # non-finite settings: nan slipped through every comparison (a raw torch RuntimeError, or "hihihihi")
    ({"do_sample": True, "temperature": float("nan")}, "temperature must be a finite number, got nan"),
    ({"repetition_penalty": float("nan")}, "repetition_penalty must be a finite number, got nan"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty must be a finite number, got inf"),
    ({"top_p": float("nan")}, "top_p must be a finite number, got nan"),
    ({"temperature": float("-inf")}, "temperature must be a finite number, got -inf"),
    ({"top_k": 2.5}, "top_k must be a finite whole number, got 2.5"),
    ({"max_new_tokens": True}, "max_new_tokens must be a finite whole number, got True"),
    ({"temperature": "hot"}, "temperature must be a finite number, got 'hot'"),
])
def test_bad_generation_parameters(engine_each_backend, overrides, match):
    with pytest.raises(AscendNbError, match=match):
        engine_each_backend.generate(PROMPT, **overrides)


def test_empty_prompt_is_refused(engine_each_backend):
    with pytest.raises(AscendNbError, match="empty"):
        engine_each_backend.generate("")


def test_forward_returns_logits_and_hidden_states(engine_each_backend):
    logits, hidden = engine_each_backend.forward(torch.tensor([PROMPT]), output_hidden_states=True)
    assert logits.shape == (1, len(PROMPT), 49152) and logits.dtype == torch.float32
    assert len(hidden) == engine_each_backend.config.num_hidden_layers + 1


def wait_until(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def in_thread(call):
    """Run ``call`` in a started thread; the thread's ``results`` list gets its return value."""
    results = []
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.results = results
    thread.start()
    return thread


def test_two_threads_at_once_each_get_the_answer_they_get_alone(engine_each_backend):
    prompts = [PROMPT, [7] * 11]
    alone = [engine_each_backend.generate(p, max_new_tokens=24, ignore_eos=True).token_ids for p in prompts]
    threads = [in_thread(lambda p=p: engine_each_backend.generate(p, max_new_tokens=24, ignore_eos=True)) for p in prompts]
    for thread in threads:
        thread.join(120)
    assert [t.results[0].token_ids for t in threads] == alone


@pytest.mark.parametrize("leave", ["close", "drop"])
def test_a_stream_holds_the_engine_from_its_first_piece_until_closed_or_dropped(engine_each_backend, leave):
    alone = engine_each_backend.generate(PROMPT, max_new_tokens=6, ignore_eos=True).token_ids
    unread = engine_each_backend.stream([1, 42, 43], max_new_tokens=6)  # created but never read: holds nothing
    assert engine_each_backend.generate(PROMPT, max_new_tokens=6, ignore_eos=True).token_ids == alone
    stream = engine_each_backend.stream([1, 42, 43], max_new_tokens=50, ignore_eos=True)
    next(stream)
    with pytest.raises(AscendNbError, match="still has a request open on this engine"):
        engine_each_backend.generate(PROMPT, max_new_tokens=6)  # the same thread would wait for itself forever
    other = in_thread(lambda: engine_each_backend.generate(PROMPT, max_new_tokens=6, ignore_eos=True))
    wait_until(lambda: engine_each_backend.requests.waiting == 1)
    assert other.is_alive() and not other.results  # queued behind the open stream
    if leave == "close":
        stream.close()
    else:
        del stream
    other.join(60)
    assert other.results[0].token_ids == alone and not engine_each_backend.requests.busy
    del unread


def test_a_queued_request_stops_before_its_turn(engine_each_backend):
    stop = threading.Event()
    with engine_each_backend.stream(PROMPT, max_new_tokens=50, ignore_eos=True) as holder:
        next(holder)
        queued = in_thread(lambda: engine_each_backend.generate(PROMPT, max_new_tokens=6, stop_event=stop))
        wait_until(lambda: engine_each_backend.requests.waiting == 1)
        stop.set()
        queued.join(60)
        assert queued.results[0].finish_reason == "cancelled" and queued.results[0].token_ids == []
    assert not engine_each_backend.requests.busy and engine_each_backend.requests.waiting == 0


@pytest.mark.slow
def test_embedded_model_answers_paris(embedded_engine):
    result = embedded_engine.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=32)
    assert "Paris" in result.text
    assert result.finish_reason == "stop"


@pytest.mark.slow
def test_embedded_chat_stream_and_context_full(embedded_engine):
    stream = embedded_engine.chat([{"role": "user", "content": "Name a color."}], max_new_tokens=16, stream=True)
    assert "".join(stream) == stream.result.text and stream.result.text
    with pytest.raises(AscendNbError, match="prompt is .* tokens"):
        embedded_engine.chat([{"role": "user", "content": "word " * 9000}], max_new_tokens=16)


def test_a_reply_cut_mid_character_drops_the_half_character(engine_each_backend):
    """The first one-token prompt (from id 100 on) whose greedy next token is the start of a multi-byte
    character: cut there by max_new_tokens, the text must not end in U+FFFD, streamed or not."""
    decode = engine_each_backend.tokenizer.decode
    prompt = next(([i] for i in range(100, 3000)
                   if decode(engine_each_backend.generate([i], max_new_tokens=1).token_ids).endswith("\ufffd")))
    result = engine_each_backend.generate(prompt, max_new_tokens=1)
    assert result.finish_reason == "length" and len(result.token_ids) == 1 and "\ufffd" not in result.text
    stream = engine_each_backend.stream(prompt, max_new_tokens=1)
    assert "".join(stream) == stream.result.text == result.text
