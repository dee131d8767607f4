"""ascend_nb.inspect on a tiny random Llama, checked against independent computations: transformers'
own hidden states, eager attentions and logits processors, the real sampler replayed with the same
seed, the tokenizer's own decoding, and the roofline byte counts."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
)

import ascend_nb
from ascend_nb import device as devices
from ascend_nb import inspect as ins
from ascend_nb.models.footprint import kv_cache_bytes, weight_bytes
from ascend_nb.bench.op_trace import nested_self_times, trace_events
from ascend_nb.models.params import GenerationParams
from ascend_nb.engine.sampling import kept_tokens, select_tokens
from ascend_nb.errors import AscendNbError
from ascend_nb.inspect.anatomy import OP_CLASSES
from ascend_nb.inspect.next_token import next_token_steps

PROMPT = "The capital of France is Paris, and the capital of Italy is"


@pytest.fixture(scope="module")
def hf_model(tiny_llama_dir):
    """The tiny Llama straight from transformers, eager attention: the independent reference."""
    return LlamaForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.fixture(scope="module", params=["transformers", "accelerated"])
def engine(request, tiny_llama_dir):
    return ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend=request.param)


@pytest.fixture(scope="module")
def bf16_engine(tiny_llama_dir):
    return ascend_nb.load(tiny_llama_dir, device="cpu", dtype="bfloat16", backend="transformers")


def _ids(engine, text=PROMPT):
    return torch.tensor([engine.encode(text)])


# -- logit lens ------------------------------------------------------------------------------------
@torch.inference_mode()
def test_logit_lens_rows_are_hidden_states_through_norm_and_head(engine, hf_model):
    lens = ins.logit_lens(engine, PROMPT)
    out = hf_model(_ids(engine), output_hidden_states=True)
    layers = hf_model.config.num_hidden_layers
    assert sorted(lens["layer"].unique()) == list(range(layers + 1))
    for layer in range(layers + 1):
        # the last row is the model's own output (transformers' last hidden state is already normed)
        if layer == layers:
            logits = out.logits[0]
        else:
            logits = hf_model.lm_head(hf_model.model.norm(out.hidden_states[layer]))[0]
        top = logits.softmax(-1).max(-1)
        rows = lens[lens["layer"] == layer].sort_values("position")
        assert rows["token_id"].tolist() == top.indices.tolist()
        assert rows["prob"].to_numpy() == pytest.approx(top.values.numpy(), rel=1e-5, abs=1e-7)
        final = logits.softmax(-1).gather(-1, out.logits[0].argmax(-1, keepdim=True))[:, 0]
        assert rows["final_prob"].to_numpy() == pytest.approx(final.numpy(), rel=1e-5, abs=1e-7)
    assert set(ins.answer_layers(lens)["first_layer"]) <= set(range(layers + 1))


def test_answer_layers_finds_where_the_final_token_appears_and_stays():
    import pandas as pd

    lens = pd.DataFrame({"layer": [0, 1, 2, 3], "position": 0, "token_id": [5, 7, 5, 5], "token": ["a", "b", "a", "a"],
                         "prob": [0.1, 0.2, 0.3, 0.9], "input_token": "x", "final_prob": 0.0})
    assert ins.answer_layers(lens)["first_layer"].tolist() == [2]  # layer 0 read it too, but lost it at layer 1


# -- attention -------------------------------------------------------------------------------------
@torch.inference_mode()
def test_attention_rows_sum_to_one_and_equal_eager_output_attentions(engine, hf_model):
    frame = ins.attention(engine, PROMPT)
    reference = hf_model(_ids(engine), output_attentions=True).attentions
    t = _ids(engine).shape[1]
    assert len(frame) == len(reference) * reference[0].shape[1] * t * t
    sums = frame.groupby(["layer", "head", "query"])["weight"].sum()
    assert sums.to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert (frame.loc[frame["key"] > frame["query"], "weight"] == 0).all()  # causal
    for layer, expected in enumerate(reference):
        rows = frame[frame["layer"] == layer].sort_values(["head", "query", "key"])
        got = torch.tensor(rows["weight"].to_numpy()).view_as(expected[0])
        torch.testing.assert_close(got, expected[0].float(), atol=1e-6, rtol=1e-5)
    one = ins.attention(engine, PROMPT, layer=1)
    assert set(one["layer"]) == {1} and one["query_token"].iloc[-1] == " is"


def test_attention_leaves_the_transformers_model_as_it_was(tiny_llama_dir):
    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="transformers")
    before = engine.model.config._attn_implementation
    ins.attention(engine, "Hello there", layer=0)
    assert engine.model.config._attn_implementation == before
    with pytest.raises(AscendNbError, match="layers 0..1"):
        ins.attention(engine, "Hello there", layer=2)


def test_accelerated_forward_gives_attentions_without_changing_logits(tiny_llama_dir):
    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated")
    ids = _ids(engine)
    maps: list[torch.Tensor] = []
    with torch.inference_mode():
        plain, _ = engine.model.forward(ids)
        logits, _ = engine.model.forward(ids, attentions=maps)
    assert torch.equal(plain, logits)
    assert len(maps) == 2 and maps[0].shape == (1, 4, ids.shape[1], ids.shape[1]) and maps[0].dtype == torch.float32


# -- next token: the shading is the sampler's own cut -----------------------------------------------
SETTINGS = [dict(temperature=0.7, top_k=5, top_p=1.0, repetition_penalty=1.0),
            dict(temperature=1.3, top_k=0, top_p=0.9, repetition_penalty=1.0),
            dict(temperature=1.0, top_k=50, top_p=0.5, repetition_penalty=1.3),
            dict(temperature=0.5, top_k=3, top_p=0.8, repetition_penalty=1.8)]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_kept_tokens_match_transformers_logits_processors(setting):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 300, generator=generator) * 3
    seen_ids = torch.randint(0, 300, (4, 12), generator=generator)
    seen = torch.zeros(4, 300, dtype=torch.bool).scatter_(1, seen_ids, True)
    params = GenerationParams(do_sample=True, **setting)
    scores = RepetitionPenaltyLogitsProcessor(setting["repetition_penalty"])(seen_ids, logits.clone())
    scores = TemperatureLogitsWarper(setting["temperature"])(seen_ids, scores)
    if setting["top_k"]:
        scores = TopKLogitsWarper(setting["top_k"])(seen_ids, scores)
    if setting["top_p"] < 1:
        scores = TopPLogitsWarper(setting["top_p"])(seen_ids, scores)
    assert torch.equal(kept_tokens(logits, params, seen), torch.isfinite(scores))


def test_greedy_keeps_only_the_argmax_after_the_penalty():
    logits = torch.tensor([[1.0, 3.0, 2.9, -1.0]])
    seen = torch.tensor([[False, True, False, False]])
    kept = kept_tokens(logits, GenerationParams(repetition_penalty=1.2), seen)
    assert kept.tolist() == [[False, False, True, False]]  # 3.0 / 1.2 = 2.5 < 2.9


def test_a_token_whose_probability_underflows_counts_as_dropped():
    logits = torch.tensor([[0.0, -200.0, 5.0]])  # exp(-205 / 0.5) is 0 in float32: multinomial never draws it
    assert kept_tokens(logits, GenerationParams(do_sample=True, temperature=0.5)).tolist() == [[True, False, True]]


def test_shaded_tokens_are_what_the_sampler_excludes_in_a_real_run(tiny_engine):
    params = tiny_engine.params(max_new_tokens=6, do_sample=True, temperature=0.8, top_k=8, top_p=0.9,
                                repetition_penalty=1.3, seed=11, ignore_eos=True)
    steps = list(next_token_steps(tiny_engine, PROMPT, params))
    assert len(steps) == 6
    result = tiny_engine.generate(PROMPT, params)
    assert [s.token_id for s in steps] == result.token_ids  # watching does not change the reply
    generator = torch.Generator().manual_seed(11)
    for step in steps:  # replay the sampler with the same seed on the logits the view holds
        kept = kept_tokens(step.logits[None], params, step.seen_mask())[0]
        assert int(select_tokens(step.logits[None], params, step.seen_mask(), generator)) == step.token_id
        assert kept[step.token_id] and 1 <= int(kept.sum()) <= 8
    first = steps[0]
    draws = torch.Generator().manual_seed(0)
    drawn = {int(select_tokens(first.logits[None], params, first.seen_mask(), draws)) for _ in range(3000)}
    kept = kept_tokens(first.logits[None], params, first.seen_mask())[0]
    assert drawn == set(torch.nonzero(kept).flatten().tolist())  # everything kept is drawn, nothing else

    frame = ins.next_token_probs(tiny_engine, PROMPT, params, top_k=30)
    assert frame.groupby("step")["chosen"].sum().tolist() == [1] * 6
    assert (frame.loc[frame["chosen"], "token_id"].tolist()) == result.token_ids
    for step, rows in frame.groupby("step"):
        mask = kept_tokens(steps[step].logits[None], params, steps[step].seen_mask())[0]
        assert rows["kept"].tolist() == [bool(mask[i]) for i in rows["token_id"]]
        assert rows.loc[~rows["kept"], "sampler_prob"].eq(0).all()
        assert rows["kept_count"].iloc[0] == int(mask.sum())


def test_the_view_shades_exactly_the_dropped_tokens_for_its_slider_settings(tiny_engine):
    from ascend_nb.ui.inspect_views import DROPPED_COLOR, KEPT_COLOR, NextTokenView

    params = tiny_engine.params(max_new_tokens=4, do_sample=True, seed=5, ignore_eos=True)
    view = NextTokenView(tiny_engine, params, top_k=25, widget=False)
    view.run(PROMPT)
    assert view.step_slider.max == 3 and len(view.figure.data[2].y) == 4
    for setting in SETTINGS[:3]:
        view.set_sampler(**setting)
        sampler = GenerationParams(do_sample=True, **setting)
        step = view.steps[view.step_slider.value]
        seen = step.seen_mask() if setting["repetition_penalty"] != 1 else None
        kept = kept_tokens(step.logits[None], sampler, seen)[0]
        ids = view.candidates()["token_id"].tolist()
        assert list(view.figure.data[0].marker.color) == [KEPT_COLOR if kept[i] else DROPPED_COLOR for i in ids]
    view.set_sampler(temperature=0.0)  # greedy: one bar left
    assert list(view.figure.data[0].marker.color).count(KEPT_COLOR) == 1
    before = list(view.figure.data[0].y)
    view.step_slider.value = 0
    assert list(view.figure.data[0].y) != before


def test_watching_refuses_a_second_watcher_and_is_released(tiny_engine):
    steps = next_token_steps(tiny_engine, PROMPT, max_new_tokens=3)
    next(steps)
    with pytest.raises(AscendNbError, match="already being watched"):
        next(next_token_steps(tiny_engine, PROMPT, max_new_tokens=3))
    steps.close()
    assert tiny_engine.step_observer is None


# -- tokens ----------------------------------------------------------------------------------------
TEXTS = {"English": "The capital of France is Paris.", "Chinese": "北京是中国的首都。",
         "mixed": "GPU 与 NPU：显存 64 GB 🚀"}


def test_tokens_round_trip_to_the_text_and_mark_byte_pieces(tiny_engine, tmp_path):
    from ascend_nb.convert.demo_checkpoints import train_sentencepiece
    from ascend_nb.convert.tokenizer_files import save_tokenizer, tokenizer_from_sentencepiece

    model_file = tmp_path / "tokenizer.model"
    model_file.write_bytes(train_sentencepiece(700, baichuan_style=True))
    save_tokenizer(tokenizer_from_sentencepiece(model_file), tmp_path / "sp", bos_token="<s>", eos_token="</s>",
                   unk_token="<unk>")
    sources = {"smollm2": tiny_engine, "sentencepiece": tmp_path / "sp"}
    for text in TEXTS.values():
        frame = ins.tokens(sources, text)
        for name, rows in frame.groupby("tokenizer"):
            assert "".join(rows["text"]) == text, name
            tokenizer = tiny_engine.tokenizer if name == "smollm2" else AutoTokenizer.from_pretrained(tmp_path / "sp")
            assert rows["token_id"].tolist() == tokenizer.encode(text, add_special_tokens=False)
    chinese = ins.tokens(sources, TEXTS["Chinese"])
    sp = chinese[chinese["tokenizer"] == "sentencepiece"]
    assert sp.loc[sp["piece"].str.match(r"^<0x[0-9A-F]{2}>$"), "byte_fallback"].all()
    assert chinese[chinese["tokenizer"] == "smollm2"]["byte_fallback"].any()  # byte-level BPE splits the characters
    assert not ins.tokens(tiny_engine, TEXTS["English"])["byte_fallback"].any()
    stats = ins.token_stats(sources, TEXTS).set_index(["tokenizer", "text"])
    assert stats.loc[("smollm2", "Chinese"), "tokens"] == len(tiny_engine.tokenizer.encode(TEXTS["Chinese"]))
    assert stats.loc[("smollm2", "Chinese"), "tokens_per_char"] == pytest.approx(
        stats.loc[("smollm2", "Chinese"), "tokens"] / len(TEXTS["Chinese"]))


# -- drift -----------------------------------------------------------------------------------------
def test_drift_of_an_engine_against_itself_is_zero_and_bf16_is_not(tiny_engine, bf16_engine):
    same = ins.drift(tiny_engine, tiny_engine, PROMPT)
    t = len(tiny_engine.encode(PROMPT))
    assert len(same) == (2 + 2) * t  # embeddings, layer 1, final normed output, logits
    assert same["tensor"].iloc[-1] == "logits"
    assert (same["max_abs_err"] == 0).all()
    assert same["cosine"].to_numpy() == pytest.approx(1.0, abs=1e-12)
    assert same["reached"].all() and ins.first_departure(same) is None
    drifted = ins.drift(tiny_engine, bf16_engine, PROMPT)
    assert (drifted.groupby("layer")["max_abs_err"].max() > 0).all()
    assert (drifted["cosine"] < 1).any()
    parting = ins.parting_token(tiny_engine, tiny_engine, PROMPT, max_new_tokens=5)
    assert parting["same"].all() and len(parting) >= 1


def test_first_departure_is_the_first_layer_outside_the_thresholds():
    import pandas as pd

    frame = pd.DataFrame({"layer": [0, 0, 1, 1, 2], "position": [0, 1, 0, 1, 0],
                          "reached": [True, True, True, False, False]})
    assert ins.first_departure(frame) == 1


# -- one decode step -------------------------------------------------------------------------------
def test_step_anatomy_opens_the_fused_decode_layer(tiny_llama_dir):
    """bf16 on a GEMV path decodes each layer as one native op; its stages still count by class."""
    fused = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="bfloat16", backend="accelerated")
    if not fused.model.fused_decode:
        pytest.skip(f"kernel path {fused.kernels} has no native decode layer")
    per = ins.step_anatomy(fused, input_len=16).set_index(["phase", "op_class"])["ms"]
    for op_class in ("linear", "attention", "norm"):
        assert per[("decode", op_class)] > 0, op_class


def test_step_anatomy_splits_prefill_and_one_decode_step_by_operator_class(engine, tmp_path):
    path = tmp_path / "anatomy.json"
    table = ins.step_anatomy(engine, input_len=16, trace_path=path)
    assert list(table["phase"].unique()) == ["prefill", "decode"]
    assert list(table["op_class"].unique()) == list(OP_CLASSES)
    per = table.set_index(["phase", "op_class"])["ms"]
    fused = engine.backend == "accelerated" and devices.native_isa(engine.kernels)  # rotary inside the attention op
    for phase in ("prefill", "decode"):
        for op_class in ("linear", "attention", "norm", "rotary", "sampling"):
            if fused and (phase, op_class) == ("decode", "rotary"):
                assert per[(phase, op_class)] == 0
                continue
            assert per[(phase, op_class)] > 0, (phase, op_class)
        assert table[table["phase"] == phase]["share"].sum() == pytest.approx(1.0)
    events = trace_events(path)
    operator_ms = sum(s for e, s, _ in nested_self_times([e for e in events if e.get("cat") in
                                                           {"cpu_op", "python_function", "user_annotation"}])
                      if e.get("cat") == "cpu_op") / 1000
    assert 0 < table["ms"].sum() <= operator_ms + 1e-9  # what follows the second token is left out
    assert sum(e["name"] == "ascend_nb::token" for e in events) == 2
    assert json.loads(path.read_text())["traceEvents"]


def test_decode_memory_counts_the_roofline_bytes(tiny_engine):
    frame = ins.decode_memory(tiny_engine, input_len=16, decode_steps=3).set_index("item")
    assert frame["bytes"].iloc[0] == weight_bytes(tiny_engine, torch.float32)
    assert frame["bytes"].iloc[1] == kv_cache_bytes(tiny_engine, torch.float32, 16)
    assert frame["bytes"].iloc[2] == frame["bytes"].iloc[0] + frame["bytes"].iloc[1]
    assert frame["ms"].iloc[2] == pytest.approx(frame["bytes"].iloc[2] / (frame["bandwidth_gbs"].iloc[0] * 1e9) * 1000)
    assert (frame["ms"].iloc[3:] > 0).all() and frame["source"].iloc[0].startswith("measured")


# -- refusals and figures --------------------------------------------------------------------------
def test_engines_without_a_local_model_are_refused():
    class Served:
        backend = "openai"

    for call in (lambda: ins.logit_lens(Served(), "x"), lambda: ins.attention(Served(), "x"),
                 lambda: ins.step_anatomy(Served()), lambda: list(next_token_steps(Served(), "x"))):
        with pytest.raises(AscendNbError, match="local engine"):
            call()


def test_every_view_renders(tiny_engine, bf16_engine):
    from ascend_nb import ui

    figures = [ui.tokens_figure(ins.tokens(tiny_engine, TEXTS["mixed"])),
               ui.token_stats_figure(ins.token_stats(tiny_engine, TEXTS)),
               ui.attention_figure(ins.attention(tiny_engine, "Hello there friend", layer=1)),
               ui.logit_lens_figure(ins.logit_lens(tiny_engine, "Hello there friend")),
               ui.anatomy_figure(ins.step_anatomy(tiny_engine, 8), ins.decode_memory(tiny_engine, 8, 2)),
               ui.drift_figure(ins.drift(tiny_engine, bf16_engine, "Hello there friend"))]
    for figure in figures:
        assert figure.to_json()
    heads = figures[2].layout.updatemenus[0].buttons
    assert len(heads) == 4 and heads[0].label == "head 0"


def test_the_attention_map_has_one_label_per_position_and_a_head_picker(tiny_engine):
    """Every head's map is positions x positions under labels that are the prompt's tokens, once each
    (the labels were repeated once per head: 45 labels over a 5x5 map)."""
    from ascend_nb import ui

    frame = ins.attention(tiny_engine, "The capital of France", layer=0)
    figure = ui.attention_figure(frame)
    ids = tiny_engine.encode("The capital of France")
    expected = [f"{i}:{ui.inspect_views.label(t)}" for i, t in enumerate(ins.engines.token_texts(tiny_engine.tokenizer, ids))]
    heatmap = figure.data[0]
    assert list(heatmap.x) == list(heatmap.y) == expected
    assert len(heatmap.z) == len(heatmap.z[0]) == len(ids)
    picks = figure.layout.updatemenus[0].buttons
    assert [b.label for b in picks] == [f"head {h}" for h in range(tiny_engine.config.num_attention_heads)]
    assert all(len(b.args[0]["z"][0]) == len(ids) for b in picks)


def test_byte_tokens_read_as_their_bytes_not_mojibake(tiny_engine):
    """A token that is only part of a character reads <0xE5><0x8C> (byte-level BPE) wherever a token is shown."""
    from ascend_nb.inspect.engines import token_texts

    ids = tiny_engine.encode("北京")
    texts = token_texts(tiny_engine.tokenizer, ids)
    assert "".join(texts).replace("<0x", "").count(">") == len("北京".encode())  # every byte, once
    assert texts[0].startswith("<0xE5>") and not any("\ufffd" in t or "å" in t for t in texts)
