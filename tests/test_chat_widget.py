"""The chat widget driven from Python the way a demo script does it: set the prompt, click, wait.

Mechanics run on the tiny random Llama (fast); answers and a real mid-reply stop use the embedded model.
"""

import gc
import json
import time
import weakref

import pytest

import ascend_nb
from ascend_nb import GenerationParams
from ascend_nb.ui import ChatApp, ChatWidget, compare_chat
from ascend_nb.ui.chat import format_stats, render_markdown
from ascend_nb.ui.prompt_box import PromptBox

EXACT = GenerationParams(max_new_tokens=5, ignore_eos=True)  # random weights: fix the reply length


def ask(chat, text, timeout=60):
    chat.prompt.value = text
    chat.send_button.click()
    chat.wait(timeout)


def test_markdown_escapes_html_and_renders_code_and_chinese():
    out = render_markdown("Hi <script>alert(1)</script>\n\n```python\nprint('你好')\n```")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert '<pre><code class="language-python">' in out and "你好" in out


def test_stats_line_names_the_numbers_and_why_a_reply_ended():
    stats = {"ttft_ms": 85.21, "tpot_ms": 31.04, "tokens_per_s": 32.2, "tokens": 24, "finish_reason": "cancelled"}
    assert format_stats(stats) == "TTFT 85.2 ms · TPOT 31.0 ms · 32.2 tokens/s · 24 tokens · stopped"


def test_enter_in_the_prompt_box_sends():
    box, seen = PromptBox(), []
    box.on_submit(lambda b: seen.append(b.value))
    box.value = "hello"
    box._handle_message(box, {"event": "submit"}, [])  # the message the browser sends on Enter
    assert seen == ["hello"]


def test_reply_stats_totals_export_and_non_streaming(tiny_engine):
    chat = ChatWidget(tiny_engine, system_prompt="Be brief.", params=EXACT)
    assert chat.max_new_tokens.value == 5 and chat.temperature.disabled  # seeded from params; greedy
    ask(chat, "first question")
    assert chat.prompt.value == ""
    chat.stream_toggle.value = False
    ask(chat, "second question")
    assert [m["role"] for m in chat.messages] == ["user", "assistant"] * 2
    assert chat.last_stats["tokens"] == 5 and chat.last_stats["ttft_ms"] > 0 and chat.last_stats["tpot_ms"] > 0
    assert "TTFT" in chat.history.children[-1].value and "tokens/s" in chat.history.children[-1].value
    assert "2 replies · 10 tokens" in chat.totals.value
    transcript = chat.export()
    record = json.loads(transcript.json)
    assert record["system"] == "Be brief." and record["messages"][1]["content"] == chat.messages[1]["content"]
    assert record["messages"][1]["stats"]["tokens"] == 5
    assert "**System:** Be brief." in transcript.markdown and "**You:**" in transcript.markdown


def test_second_send_is_refused_while_answering_and_stop_keeps_the_partial_reply(tiny_engine):
    chat = ChatWidget(tiny_engine, params=EXACT.replace(max_new_tokens=200))
    chat.prompt.value = "tell me a long story"
    chat.send_button.click()
    chat.prompt.value = "another question"
    chat.send_button.click()
    assert "Still answering" in chat.notice.value and chat.prompt.value == "another question"
    chat.stop_button.click()
    chat.wait(30)
    assert chat.last_stats["finish_reason"] == "cancelled" and chat.last_stats["tokens"] < 200
    assert [m["role"] for m in chat.messages] == ["user", "assistant"] and "stopped" in chat.history.children[-1].value


def test_regenerate_replaces_the_last_answer_and_clear_forgets(tiny_engine):
    chat = ChatWidget(tiny_engine, params=EXACT)
    ask(chat, "a question")
    first = chat.messages[1]["content"]
    chat.do_sample.value, chat.temperature.value, chat.max_new_tokens.value = True, 2.0, 12
    chat.regenerate_button.click()
    chat.wait(60)
    assert [m["content"] for m in chat.messages[:1]] == ["a question"] and len(chat.messages) == 2
    assert chat.last_stats["tokens"] == 12 and chat.messages[1]["content"] != first
    chat.clear_button.click()
    assert chat.messages == [] and chat.last_stats is None and chat.totals.value == ""
    chat.regenerate_button.click()
    assert "Nothing to regenerate" in chat.notice.value


def test_overlong_prompt_shows_an_error_and_the_chat_keeps_working(tiny_engine):
    chat = ChatWidget(tiny_engine, params=EXACT)
    ask(chat, "word " * 400)
    assert chat.messages == [] and chat.prompt.value == ("word " * 400).strip()
    error = chat.history.children[-1].value
    assert "anb-chat-row error" in error and "shorten the message" in error
    ask(chat, "short one")
    assert [m["role"] for m in chat.messages] == ["user", "assistant"] and chat.last_stats["tokens"] == 5


def test_a_too_long_message_comes_back_above_the_draft_typed_meanwhile(tiny_engine):
    chat = ChatWidget(tiny_engine, params=EXACT)
    with chat._lock:  # the reply cannot fail (and put the message back) before the draft is typed
        chat.prompt.value = "word " * 400
        chat.send_button.click()
        chat.prompt.value = "my next question"
    chat.wait(60)
    assert chat.prompt.value == ("word " * 400).strip() + "\n\nmy next question"
    assert "back in the input box, above the draft" in chat.history.children[-1].value and chat.messages == []


def test_a_reply_waits_visibly_while_another_caller_holds_the_engine(tiny_engine):
    question = [{"role": "user", "content": "a question"}]
    alone = tiny_engine.chat(question, EXACT).text
    chat = ChatWidget(tiny_engine, params=EXACT)
    holder = tiny_engine.stream([1, 42, 43], max_new_tokens=200, ignore_eos=True)
    next(holder)  # a cell's stream holds the engine
    chat.prompt.value = "a question"
    chat.send_button.click()
    deadline = time.monotonic() + 60
    while "waiting for the engine" not in chat.history.children[-1].value:
        assert time.monotonic() < deadline, "the waiting state was never shown"
        time.sleep(0.01)
    assert "waiting for the engine" in chat.notice.value and chat.busy
    holder.close()
    chat.wait(60)
    assert chat.messages[-1]["content"] == alone and chat.notice.value == ""
    assert "waiting" not in chat.history.children[-1].value

    with tiny_engine.stream([1, 42, 43], max_new_tokens=200, ignore_eos=True) as holder:  # Stop while queued
        next(holder)
        chat.prompt.value = "another question"
        chat.send_button.click()
        while tiny_engine.requests.waiting == 0:
            assert time.monotonic() < deadline + 60, "the reply never queued"
            time.sleep(0.01)
        chat.stop_button.click()
        chat.wait(60)
    assert chat.last_stats["finish_reason"] == "cancelled" and chat.last_stats["tokens"] == 0


def test_compare_chat_answers_on_both_sides_one_after_the_other(tiny_engine):
    pair = compare_chat(tiny_engine, tiny_engine, params=EXACT)
    pair.prompt.value = "same question"
    pair.send_button.click()
    pair.wait(60)
    for side in (pair.left, pair.right):
        assert [m["content"] for m in side.messages][:1] == ["same question"] and side.last_stats["tokens"] == 5
    assert pair.left.messages == pair.right.messages  # same greedy model on both sides


@pytest.mark.slow
def test_embedded_model_answers_and_stops_mid_reply(embedded_engine):
    chat = ChatWidget(embedded_engine)
    assert chat.do_sample.value and chat.repetition_penalty.value == 1.1  # the 135M model's chat samples by default
    chat.do_sample.value = False  # greedy, as a user unticks Sample, for an answer that is the same every run
    chat.max_new_tokens.value = 24
    ask(chat, "What is the capital of France?", timeout=240)
    assert "Paris" in chat.messages[-1]["content"]
    assert chat.last_stats["finish_reason"] == "stop" and 0 < chat.last_stats["tokens"] < 24

    chat.max_new_tokens.value = 400
    chat.prompt.value = "Write a long story about a dragon."
    chat.send_button.click()
    deadline = time.monotonic() + 120
    while "TTFT ≈" not in chat.history.children[-1].value:  # the first pieces are on screen
        assert time.monotonic() < deadline, "no streamed text within 120 s"
        time.sleep(0.05)
    chat.stop_button.click()
    chat.wait(30)
    assert chat.last_stats["finish_reason"] == "cancelled" and chat.last_stats["tokens"] < 400
    assert chat.messages[-1]["content"] and len(chat.messages) == 4


QUESTIONS = ("What is the capital of France?", "Name the three primary colors.")


@pytest.fixture(scope="module", params=["transformers", "accelerated"])
def shared_engine(request, embedded_engine):
    if request.param == "transformers":
        return embedded_engine
    return ascend_nb.load("smollm2-135m-instruct", device="cpu", dtype="float32", backend="accelerated")


@pytest.mark.slow
def test_two_widgets_and_a_cell_on_one_engine_each_get_the_answer_they_get_alone(shared_engine):
    first, second = (ChatWidget(shared_engine, params=GenerationParams(max_new_tokens=24)) for _ in range(2))
    params = first.generation_params()
    alone = [shared_engine.chat([{"role": "user", "content": q}], params).text for q in QUESTIONS]
    assert first.ask(QUESTIONS[0]) and second.ask(QUESTIONS[1])  # two widgets at once
    first.wait(240)
    second.wait(240)
    assert [first.messages[-1]["content"], second.messages[-1]["content"]] == alone

    assert first.clear() and first.ask(QUESTIONS[1])  # a widget streaming while a cell generates on the main thread
    cell = shared_engine.chat([{"role": "user", "content": QUESTIONS[0]}], params).text
    first.wait(240)
    assert [cell, first.messages[-1]["content"]] == alone


def test_chat_app_swaps_models_and_frees_the_old_chat(tiny_llama_dir):
    app = ChatApp(tiny_llama_dir, device="cpu", dtype="float32", system_prompt="Be brief.")
    app.chat.system_prompt.value = "Be very brief."
    first_engine = weakref.ref(app.chat.engine)
    kept = weakref.ref(app.chat)
    app.model.value = "/no/such/model"
    assert app.reload() is False  # checked before the old model is freed: the chat stays
    assert app.chat is kept() and app.children[-1] is kept() and first_engine() is not None
    assert 'class="anb-chat-error"' in app.status.value and "/no/such/model" in app.status.value
    assert "current chat is kept" in app.status.value
    app.model.value = str(tiny_llama_dir)
    app.load_button.click()
    app.wait(120)
    gc.collect()
    assert first_engine() is None  # the old model was freed before loading the next one
    assert app.children[-1] is app.chat and kept() is None and app.chat.engine.model_dir == tiny_llama_dir
    assert app.chat.system_prompt.value == "Be very brief." and app.status.value == ""


def test_send_and_stop_show_the_busy_state(tiny_engine):
    chat = ChatWidget(tiny_engine, params=EXACT.replace(max_new_tokens=200))
    assert chat.stop_button.disabled and chat.stop_button.button_style == ""  # grey, not an orange "live" Stop
    chat.ask("tell me a long story")
    assert chat.send_button.disabled and not chat.stop_button.disabled and chat.stop_button.button_style == "warning"
    assert chat.regenerate_button.disabled and chat.clear_button.disabled
    chat.stop()
    chat.wait(30)
    assert not chat.send_button.disabled and chat.stop_button.disabled and chat.stop_button.button_style == ""


def test_greedy_regenerate_says_it_repeats_itself_and_offers_sampling(tiny_engine):
    chat = ChatWidget(tiny_engine, params=EXACT)
    ask(chat, "a question")
    answer = chat.messages[1]["content"]
    assert not chat.do_sample.value and chat.settings.selected_index is None
    chat.regenerate_button.click()
    chat.wait(60)
    assert chat.messages[1]["content"] == answer
    assert "Greedy decoding" in chat.notice.value and chat.settings.selected_index == 0  # Sample is in view
    chat.do_sample.value = True
    chat.regenerate_button.click()
    chat.wait(60)
    assert "Greedy" not in chat.notice.value


def test_a_cut_served_stream_keeps_its_partial_reply_marked_as_partial():
    """A served model whose stream breaks mid-reply (real socket, tests/misbehaving_server.py): the
    text that came stays in the chat, followed by one line saying it is partial and why."""
    from tests.misbehaving_server import misbehaving_server

    with misbehaving_server() as url:
        chat = ChatWidget(ascend_nb.load("cut-body", backend="openai", base_url=url, timeout=10.0))
        ask(chat, "What is the capital of France?")
    assert chat.messages[-1] == {"role": "assistant", "content": "Hello"}
    assert chat.last_stats["finish_reason"] == "error"
    error = chat.history.children[-1].value
    assert "anb-chat-row error" in error and "The reply above is partial" in error
    assert "broke the connection mid-stream" in error and "5 characters kept" in error


def test_a_looping_reply_is_flagged_live_stopped_in_one_click_and_dropped_from_the_history():
    """A served model (real socket) that falls into a greedy loop: the chat says so while it streams, its
    Stop-the-loop button ends the reply, and Drop takes the looped reply out of what the model is sent."""
    import time

    from tests.misbehaving_server import misbehaving_server

    with misbehaving_server() as url:
        chat = ChatWidget(ascend_nb.load("loop", backend="openai", base_url=url, timeout=30.0))
        assert chat.loop_bar.layout.display == "none"
        assert chat.ask("Write a long story")
        deadline = time.monotonic() + 20
        while chat.loop_bar.layout.display == "none":
            assert time.monotonic() < deadline and chat.busy, "the loop was never flagged"
            time.sleep(0.02)
        assert "is repeating itself (“Lighthouse keeper:” again and again)" in chat.loop_notice.value
        assert chat.loop_stop_button.layout.display is None and chat.drop_button.layout.display == "none"
        chat.loop_stop_button.click()
        chat.wait(20)
    assert chat.last_stats["finish_reason"] == "cancelled"
    assert "repeated itself" in chat.loop_notice.value and chat.drop_button.layout.display is None
    assert chat.messages[-1]["content"].count("Lighthouse keeper:") >= 3
    chat.drop_button.click()
    assert chat.messages == [{"role": "user", "content": "Write a long story"}]
    assert chat.loop_bar.layout.display == "none"


def test_a_reply_that_does_not_loop_shows_no_loop_bar(tiny_engine):
    chat = ChatWidget(tiny_engine, params=EXACT)
    ask(chat, "Hello")
    assert chat.loop_bar.layout.display == "none" and not chat.drop_looped_reply()


def test_chat_defaults_sample_with_a_mild_repetition_penalty_unless_the_model_says_otherwise(tiny_llama_dir, tmp_path):
    """Greedy decoding with no repetition penalty makes small models loop: a chat samples by default,
    with the model's own generation_config.json settings where it has them."""
    import json
    import shutil

    from ascend_nb.models.registry import CHAT_SAMPLING, MODELS, chat_defaults

    spec = MODELS["smollm2-135m-instruct"]
    chosen = chat_defaults(spec, tiny_llama_dir)  # its generation_config.json has no sampling fields
    assert (chosen.do_sample, chosen.temperature, chosen.repetition_penalty) == (True, 0.7, 1.1) == (
        CHAT_SAMPLING.do_sample, CHAT_SAMPLING.temperature, CHAT_SAMPLING.repetition_penalty)
    own = shutil.copytree(tiny_llama_dir, tmp_path / "own")
    config = json.loads((own / "generation_config.json").read_text())
    (own / "generation_config.json").write_text(json.dumps({**config, "do_sample": True, "temperature": 0.3, "top_p": 0.8}))
    chosen = chat_defaults(spec, own)
    assert (chosen.do_sample, chosen.temperature, chosen.top_p, chosen.repetition_penalty) == (True, 0.3, 0.8, 1.0)
    baichuan = MODELS["baichuan2-7b-chat"]
    assert chat_defaults(baichuan, tmp_path / "nothing-here") == baichuan.defaults  # the registry's own sampling
    assert chat_defaults(spec, None) == spec.defaults  # a served model: the server's own settings apply


def test_a_loop_is_named_by_the_phrase_it_repeats():
    from ascend_nb.engine.repetition import repeated_unit

    assert repeated_unit("Once upon a time. " + "Lighthouse keeper: " * 6) == "Lighthouse keeper:"
    assert repeated_unit("Lighthouse keeper:\n" * 5 + "Light") == "Lighthouse keeper:"  # cut mid-phrase
    assert repeated_unit("好的" * 12) == "好的"
    for fine in ("The capital of France is Paris.", "ha ha ha", "......", "| a | b |\n|---|---|\n| 1 | 2 |"):
        assert repeated_unit(fine) is None
