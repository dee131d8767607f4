"""Speculative decoding in the accelerated backend (batch 1).

The bits first: the native GEMV gives each row the same result whatever the row count, and a verify pass
of k + 1 positions gives each position exactly the logits of a plain decode step, on every kernel path this
machine runs, in float32 and bf16, weight-only int8 too, with tiny random models and the embedded SmolLM2.
Then what rests on it: greedy output with speculation equals plain greedy output token for token, rollback
is a mask and index update, the sampling rule keeps the target's distribution (a chi-square test on a
five-token vocabulary), the adaptive controller turns speculation off when it does not pay, and refusals.
"""

import json

import pytest
import torch

import ascend_nb
from ascend_nb import GenerationParams, native
from ascend_nb import device as devices
from ascend_nb.engine import speculative as S
from ascend_nb.errors import AscendNbError
from ascend_nb.models.params import check_speculative
from ascend_nb.quant_formats import QUANTIZE_CHOICES
from tests.heavy import heavy_after_first

CPU_PATHS = [path for path in devices.runnable_kernel_paths("cpu") if path.startswith("cpu-")]
ALL_PATHS = [*CPU_PATHS, "torch"]
GEMV_ISAS = sorted({devices.native_isa(path) for path in CPU_PATHS if devices.native_isa(path)})
PROMPT = [1, 504, 3458, 282, 4649, 314, 77, 12, 90]
FOLLOW = [12, 90, 33, 4000, 5, 17, 99, 1000, 41, 7]  # tokens appended after the prompt


def load(model, path, dtype, quantize=None, max_seq_len=64):
    return ascend_nb.load(model, device="cpu", dtype=dtype, backend="accelerated", kernels=path, quantize=quantize,
                          max_seq_len=max_seq_len)


def plain_logits(engine, prompt, tokens):
    """Logits after each of ``tokens``, one plain decode step at a time."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        engine._prefill(ids, torch.ones_like(ids))
        return torch.stack([engine._decode(torch.tensor([t]))[0].clone() for t in tokens])


def verified_logits(engine, prompt, tokens, splits):
    """The same logits through verify passes of ``splits`` positions in turn, each followed by a rollback of its
    last position (as after a rejected draft; a pass of one position is rolled back whole) that the next pass
    writes again."""
    ids = torch.tensor([prompt])
    out, at, passes = [], 0, 0
    with torch.inference_mode():
        engine._prefill(ids, torch.ones_like(ids))
        while at < len(tokens):
            size = min(splits[passes % len(splits)], len(tokens) - at)
            passes += 1
            logits = engine._verify(torch.tensor(tokens[at:at + size]))
            keep = size if at + size >= len(tokens) else size - 1
            engine._rollback(size - keep)
            out.append(logits[:keep].clone())
            at += keep
    return torch.cat(out)[:len(tokens)]


# -- the bits ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("isa", GEMV_ISAS)
@pytest.mark.parametrize("xdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("wdtype", [torch.bfloat16, torch.int8])
def test_gemv_row_result_does_not_depend_on_the_row_count(isa, xdtype, wdtype):
    """Each output is one chain of float32 sums over k whatever M is (M only changes how many chains run
    side by side), so a row's bits are the same in a pass of 1 to 8 rows."""
    assert native.load_native(isa)
    g = torch.Generator().manual_seed(0)
    n, k = 203, 576  # each thread's share of n not a multiple of the weight rows a pass takes: the tail rows run too
    if wdtype == torch.int8:
        weight, scales = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8), torch.rand(n, generator=g) / 50
    else:
        weight, scales = torch.randn(n, k, generator=g).to(wdtype), None
    x = torch.randn(native.MAX_ROWS, k, generator=g).to(xdtype)
    alone = torch.cat([native.gemv(x[m:m + 1], weight, scales, isa) for m in range(native.MAX_ROWS)])
    for rows in range(2, native.MAX_ROWS + 1):
        assert torch.equal(native.gemv(x[:rows], weight, scales, isa), alone[:rows]), rows


@pytest.mark.parametrize("path", [*heavy_after_first(CPU_PATHS), "torch"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("quantize", [None, *QUANTIZE_CHOICES])
def test_verify_logits_are_plain_decode_logits_bit_for_bit(tiny_llama_dir, path, dtype, quantize):
    engine = load(tiny_llama_dir, path, dtype, quantize)
    expected = plain_logits(engine, PROMPT, FOLLOW)
    assert torch.equal(verified_logits(engine, PROMPT, FOLLOW, [3, 8, 1, 5]), expected)


@pytest.mark.slow
@pytest.mark.parametrize("path, dtype", [(CPU_PATHS[0], "bfloat16"), (CPU_PATHS[0], "float32"),
                                         *[pytest.param(path, "bfloat16", marks=pytest.mark.heavy) for path in ALL_PATHS[1:]]])
def test_verify_logits_are_plain_decode_logits_on_smollm2(embedded_model_dir, path, dtype):
    engine = load(embedded_model_dir, path, dtype, max_seq_len=48)
    expected = plain_logits(engine, PROMPT, FOLLOW)
    assert torch.equal(verified_logits(engine, PROMPT, FOLLOW, [8, 5]), expected)


def test_rollback_is_a_mask_and_index_update(tiny_llama_dir):
    engine = load(tiny_llama_dir, CPU_PATHS[0], "bfloat16")
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        engine._prefill(ids, torch.ones_like(ids))
        step, cache = engine._step, engine.model.k_cache[0]
        pointer, before = cache.data_ptr(), cache.clone()
        engine._verify(torch.tensor(FOLLOW[:6]))
        assert step.length == len(PROMPT) + 6 and step.key_valid[0, :step.length].all()
        engine._rollback(4)
    n = len(PROMPT) + 2
    assert step.length == n and int(step.index) == n and int(step.positions) == n
    assert step.key_valid[0, :n].all() and not step.key_valid[0, n:].any()
    assert cache.data_ptr() == pointer and not torch.equal(cache[:, :, n:n + 4], before[:, :, n:n + 4])  # left in place
    with pytest.raises(ValueError):
        step.rollback(n + 1)


def test_verify_refuses_a_full_cache(tiny_llama_dir):
    engine = load(tiny_llama_dir, CPU_PATHS[0], "float32", max_seq_len=12)
    ids = torch.tensor([PROMPT])
    with torch.inference_mode():
        engine._prefill(ids, torch.ones_like(ids))
        with pytest.raises(AscendNbError, match="cache is full"):
            engine._verify(torch.tensor(FOLLOW[:4]))


# -- greedy output equality --------------------------------------------------------------------------------
REPEAT = [1, 504, 3458, 282, 4649, 314, 77, 12, 90, 504, 3458, 282, 4649, 314, 77, 12, 90, 504, 3458]


class Oracle(S.Drafter):
    """Knows the plain greedy reply; drafts its next tokens right for a varying number of places, then wrong
    (all kept, some kept, none kept, in turn), so every path through acceptance and rollback runs."""

    name = "oracle"

    def __init__(self, prompt, reply):
        self.prompt, self.reply, self.calls = prompt, reply, 0

    def propose(self, context, k, params=None, generator=None):
        done = len(context) - len(self.prompt)
        right = self.calls % (k + 2)  # 0 .. k + 1 right tokens
        self.calls += 1
        drafts = self.reply[done:done + k]
        return [t if i < right else (t + 1) % 49152 for i, t in enumerate(drafts)], None


def force_drafts(monkeypatch, drafter):
    """Draft every step with k cycling 1..7 (the controller's choice is tested apart)."""
    steps = iter(range(10**6))
    monkeypatch.setattr(S, "drafter_for", lambda engine, method: drafter)
    monkeypatch.setattr(S.Controller, "choose", lambda self, limit: min(1 + next(steps) % S.MAX_DRAFT, limit))


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_speculative_greedy_output_is_plain_greedy_output(tiny_llama_dir, path, dtype, monkeypatch):
    engine = load(tiny_llama_dir, path, dtype, max_seq_len=96)
    params = GenerationParams(max_new_tokens=40, ignore_eos=True)
    plain = engine.generate(REPEAT, params)
    force_drafts(monkeypatch, Oracle(REPEAT, plain.token_ids))
    fast = engine.generate(REPEAT, params.replace(speculative="prompt-lookup"))
    assert fast.token_ids == plain.token_ids and fast.text == plain.text
    stats = fast.speculative
    assert plain.speculative is None and stats.method == "prompt-lookup"
    assert stats.accepted + len(stats.steps) == len(fast.token_ids) - 1  # every decoded token is accounted for
    assert 0 < stats.accepted < stats.drafted and stats.tokens_per_step > 1
    assert {len(s.accepted) for s in stats.steps} >= {0, 1, 2}
    rebuilt = [fast.token_ids[0]]
    for step in stats.steps:
        rebuilt += [*step.accepted, step.token]
        assert not step.rejected or step.rejected[0] != step.token
    assert rebuilt == fast.token_ids


def test_prompt_lookup_greedy_output_is_plain_greedy_output(tiny_llama_dir):
    engine = load(tiny_llama_dir, CPU_PATHS[0], "bfloat16", max_seq_len=96)
    params = GenerationParams(max_new_tokens=40, ignore_eos=True)
    plain = engine.generate(REPEAT, params)
    prompt = [*REPEAT, *plain.token_ids[:30]]  # the reply so far in the prompt: lookup finds what follows
    plain = engine.generate(prompt, params)
    fast = engine.generate(prompt, params.replace(speculative="prompt-lookup"))
    assert fast.token_ids == plain.token_ids


def test_greedy_equality_holds_with_repetition_penalty_stop_and_eos(tiny_llama_dir):
    engine = load(tiny_llama_dir, CPU_PATHS[0], "bfloat16", max_seq_len=96)
    for params in (GenerationParams(max_new_tokens=30, repetition_penalty=1.3, ignore_eos=True),
                   GenerationParams(max_new_tokens=30)):
        plain = engine.generate(REPEAT, params)
        assert engine.generate(REPEAT, params.replace(speculative="prompt-lookup")).token_ids == plain.token_ids
    # an EOS or a stop string inside a step's accepted drafts ends the reply there
    plain = engine.generate(REPEAT, max_new_tokens=30, ignore_eos=True)
    engine.eos_token_ids.append(plain.token_ids[12])
    try:
        cut = engine.generate(REPEAT, max_new_tokens=30)
        fast = engine.generate(REPEAT, max_new_tokens=30, speculative="prompt-lookup")
    finally:
        engine.eos_token_ids.pop()
    assert fast.token_ids == cut.token_ids and fast.finish_reason == cut.finish_reason == "stop"


def test_streaming_with_speculation_gives_the_plain_text(tiny_llama_dir):
    engine = load(tiny_llama_dir, CPU_PATHS[0], "bfloat16", max_seq_len=96)
    params = GenerationParams(max_new_tokens=24, ignore_eos=True)
    stream = engine.stream(REPEAT, params.replace(speculative="prompt-lookup"))
    text = "".join(stream)
    assert text == stream.result.text == engine.generate(REPEAT, params).text
    assert stream.result.speculative is not None


def test_draft_model_self_int8_greedy_output_is_plain_greedy_output(tiny_llama_dir):
    engine = load(tiny_llama_dir, CPU_PATHS[0], "bfloat16", max_seq_len=96)
    params = GenerationParams(max_new_tokens=30, ignore_eos=True)
    plain = engine.generate(PROMPT, params)
    fast = engine.generate(PROMPT, params.replace(speculative="draft:self@int8"))
    assert fast.token_ids == plain.token_ids
    assert fast.speculative.drafted > 0 and fast.speculative.acceptance_rate > 0.5  # int8 of the same weights agrees
    draft = engine._draft_engines["draft:self@int8"]
    assert draft.quantize == "int8" and draft.kernels == engine.kernels
    assert engine.generate(PROMPT, params.replace(speculative="draft:self@int8")).token_ids == plain.token_ids  # reused


def test_draft_model_with_another_tokenizer_is_refused(tiny_llama_dir, tmp_path):
    from ascend_nb.convert.demo_checkpoints import make_tiny_llama

    other = make_tiny_llama(tmp_path / "other")  # a SentencePiece tokenizer, not SmolLM2's
    engine = load(tiny_llama_dir, CPU_PATHS[0], "float32")
    with pytest.raises(AscendNbError, match="does not share") as error:
        engine.generate(PROMPT, max_new_tokens=4, speculative=f"draft:{other}")
    assert "\n" not in str(error.value)


# -- drafters, controller, refusals ------------------------------------------------------------------------
def test_prompt_lookup_proposes_the_latest_continuation_longest_ngram_first():
    lookup = S.PromptLookup()
    assert lookup.propose([1, 2, 3, 4, 5, 9, 2, 3], 3) == ([4, 5, 9], None)  # "2 3" -> 4 5 9
    assert lookup.propose([1, 2, 3, 4, 5, 9, 2, 3, 4, 8, 3, 4], 2) == ([8, 3], None)  # latest "3 4" wins
    assert lookup.propose([7, 8, 9], 4) == ([], None)  # a new context: nothing repeats
    assert lookup.propose([5, 6, 7, 5, 6], 4) == ([7, 5, 6], None)  # cut at the end of the context
    assert lookup.propose([5, 6, 7, 8, 9, 1, 5], 7) == ([6, 7], None)  # a one-token match drafts two tokens
    assert lookup.propose([5, 6, 7, 8, 9, 1, 5, 6], 7) == ([7, 8, 9, 1, 5, 6], None)  # two: up to k
    assert lookup.propose([5, 6, 7, 8, 9, 1, 5, 6, 7], 3) == ([8, 9, 1], None)  # three: k of them


def test_controller_turns_speculation_off_when_it_does_not_pay_and_on_when_it_does():
    c = S.Controller()
    c.record(1, 10.0, 0, 0, 0.0)
    for _ in range(8):
        c.record(8, 14.0, 7, 7, 0.0)
    assert c.choose(100) == S.MAX_DRAFT and c.choose(3) == 3  # everything accepted, 8 rows cost 1.4 steps
    for _ in range(12):
        c.record(2, 13.0, 1, 0, 0.0)
    assert c.choose(100) == 0 and c.choose(0) == 0  # nothing accepted: plain steps
    off = sum(1 for _ in range(200) if (c.record(1, 10.0, 0, 0, 0.0) or c.choose(100)) == 0)
    assert 0 < 200 - off < 200  # it tries again as its acceptance estimate recovers
    slow_draft = S.Controller(draft_step_ms=20.0)
    slow_draft.record(1, 10.0, 0, 0, 0.0)
    assert slow_draft.choose(100) == 0  # a draft step dearer than what it saves


def test_controller_drafts_long_when_accepted_drafts_run_on():
    # half the drafts fail at their first token, the other half are accepted whole (text copied from the prompt):
    # 3.9 tokens a step at k = 7 for 1.4 steps' cost; a single per-token rate (about 0.5) would pick k = 1 or 2
    c = S.Controller()
    c.record(1, 10.0, 0, 0, 0.0)
    for _ in range(10):
        c.record(8, 14.0, 7, 0, 0.0)
        c.record(8, 14.0, 7, 7, 0.0)
    assert 0.4 < c.first < 0.8 and c.then == 0.98
    assert c.choose(100) == S.MAX_DRAFT
    assert c.expected_tokens(0) == 1.0 and c.expected_tokens(2) == pytest.approx(1 + c.first * (1 + c.then))


def test_speculative_setting_is_checked_in_one_line():
    assert check_speculative("off") is None and check_speculative("prompt-lookup") == "prompt-lookup"
    assert GenerationParams(speculative="draft:smollm2-135m-instruct@int8").speculative == "draft:smollm2-135m-instruct@int8"
    for bad in ("ngram", "draft:", 3):
        with pytest.raises(AscendNbError, match="unknown speculative method") as error:
            GenerationParams(speculative=bad)
        assert "\n" not in str(error.value)


def test_other_backends_and_batches_are_refused(tiny_engine, tiny_llama_dir):
    with pytest.raises(AscendNbError, match="accelerated backend, not 'transformers'"):
        tiny_engine.generate(PROMPT, max_new_tokens=4, speculative="prompt-lookup")
    from ascend_nb.engine.openai_backend import OpenAIEngine

    served = OpenAIEngine("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(AscendNbError, match="not 'openai'"):
        served.generate("hi", max_new_tokens=4, speculative="prompt-lookup")
    engine = load(tiny_llama_dir, CPU_PATHS[0], "float32")
    with pytest.raises(AscendNbError, match="one prompt at a time"):
        engine.generate([PROMPT, PROMPT[:4]], max_new_tokens=4, speculative="prompt-lookup")


# -- sampling keeps the target's distribution ---------------------------------------------------------------
def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0  # nothing the target gives probability 0
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


@pytest.mark.parametrize("drafter", ["one-hot", "sampled"])
def test_rejection_sampling_keeps_the_target_distribution(drafter):
    """Two steps of a five-token Markov chain: the target p(x1) p(x2 | x1), a different draft chain q; the
    first two output tokens' joint frequency over 6000 draws against p (chi-square, 24 degrees of freedom:
    the bound 60 is beyond the 99.99th percentile, about 55.5). A biased rule fails it by far."""
    g = torch.Generator().manual_seed(1)
    v = 5
    p1 = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05])
    p2 = torch.softmax(torch.randn(v, v, generator=g) * 1.5, -1)  # p(x2 | x1)
    q1 = torch.tensor([0.1, 0.1, 0.5, 0.2, 0.1])
    q2 = torch.softmax(torch.randn(v, v, generator=g), -1)
    params = GenerationParams(do_sample=True, temperature=1.0, max_new_tokens=8)
    counts = torch.zeros(v, v)
    for _ in range(6000):
        if drafter == "one-hot":  # a deterministic drafter (prompt lookup): its guesses, q one-hot
            d1 = int(torch.randint(v, (), generator=g))
            d2 = (d1 + 1) % v
            probs = None
        else:
            d1 = int(torch.multinomial(q1, 1, generator=g))
            d2 = int(torch.multinomial(q2[d1], 1, generator=g))
            probs = torch.stack([q1, q2[d1]])
        target = torch.stack([p1, p2[d1], torch.full((v,), 1.0 / v)]).log()
        kept, token = S.accept(target, [d1, d2], probs, params, None, g)
        out = [d1, d2][:kept] + [token]
        if len(out) == 1:  # the next step samples x2 from the target after x1
            out.append(int(torch.multinomial(p2[out[0]], 1, generator=g)))
        counts[out[0], out[1]] += 1
    joint = p1[:, None] * p2
    assert chi_square(counts.flatten(), joint.flatten()) < 60


def test_sampled_generation_with_speculation_runs_and_is_reproducible(tiny_llama_dir, monkeypatch):
    """A seed gives the same sample for the same k schedule; the adaptive k follows measured wall-clock costs
    (another run on a busy machine may draft differently), so k is pinned here."""
    monkeypatch.setattr(S.Controller, "choose", lambda self, limit: min(3, limit))
    engine = load(tiny_llama_dir, CPU_PATHS[0], "float32", max_seq_len=96)
    params = GenerationParams(max_new_tokens=20, do_sample=True, top_k=20, seed=3, ignore_eos=True,
                              speculative="prompt-lookup")
    first, again = engine.generate(REPEAT, params), engine.generate(REPEAT, params)
    assert first.token_ids == again.token_ids and len(first.token_ids) == 20
    drafted = params.replace(speculative="draft:self@int8")  # q from the draft model's own sampling
    first, again = engine.generate(REPEAT, drafted), engine.generate(REPEAT, drafted)
    assert first.token_ids == again.token_ids and len(first.token_ids) == 20 and first.speculative.drafted > 0


# -- the command line --------------------------------------------------------------------------------------
def test_generate_command_speculative(tiny_llama_dir, capsys):
    from ascend_nb.cli import main

    args = ["generate", "one two three one two three one two", "--model", str(tiny_llama_dir), "--backend", "accelerated",
            "--dtype", "float32", "--raw", "--max-new-tokens", "12", "--json"]
    assert main([*args, "--speculative", "prompt-lookup"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"acceptance_rate", "tokens_per_step", "draft_ms", "verify_ms"} <= set(out["speculative"])
    assert main([*args, "--speculative", "ngram"]) == 2
    assert "unknown speculative method" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_prompt_lookup_on_smollm2_grounded_prompt_is_plain_greedy_and_drafts(embedded_model_dir, quantize):
    """The embedded chat model copying from its prompt: lookup drafts most of the reply, greedy output unchanged."""
    from ascend_nb.bench.run import speculative_prompts

    engine = load(embedded_model_dir, CPU_PATHS[0], "bfloat16", quantize, max_seq_len=512)
    prompt = next(p["prompt"] for p in speculative_prompts("grounded") if p["task"] == "quote")
    ids = engine.encode_chat([{"role": "user", "content": prompt}], 48)
    params = GenerationParams(max_new_tokens=48, ignore_eos=True)
    plain = engine.generate(ids, params)
    fast = engine.generate(ids, params.replace(speculative="prompt-lookup"))
    assert fast.token_ids == plain.token_ids
    assert fast.speculative.accepted > 10 and fast.speculative.tokens_per_step > 1.5


def test_bench_speculative_rows(tiny_llama_dir, monkeypatch):
    from ascend_nb.bench.run import BenchConfig, run_speculative_bench, speculative_summary
    from ascend_nb.cli.bench import format_speculative_rows

    config = BenchConfig(model=str(tiny_llama_dir), backends=("accelerated",), device="cpu", dtype="float32",
                         output_len=6, repeat=1, warmup=0, speculative="prompt-lookup", dataset="open")
    rows = run_speculative_bench(config, limit=2)
    assert [r["label"] for r in rows] == ["plain", "speculative"] * 2
    for row in rows:
        assert {"ttft_ms", "tpot_ms", "decode_tokens_per_s", "acceptance_rate", "tokens_per_step", "draft_ms",
                "verify_ms"} <= set(row)
    assert all(r["same_tokens"] for r in rows if r["label"] == "speculative")
    assert speculative_summary(rows)["prompts"] == 2 and "median over 2 prompts" in format_speculative_rows(rows)
    for bad, message in ((dict(dataset="wiki"), "unknown dataset"), (dict(batch_size=2), "batch 1"),
                         (dict(speculative="ngram"), "unknown speculative method")):
        with pytest.raises(AscendNbError, match=message):
            BenchConfig(**{**dict(backends=("accelerated",), speculative="prompt-lookup"), **bad})


def test_watch_reports_every_step_for_a_live_view(tiny_llama_dir, monkeypatch):
    engine = load(tiny_llama_dir, CPU_PATHS[0], "bfloat16", max_seq_len=96)
    params = GenerationParams(max_new_tokens=20, ignore_eos=True)
    plain = engine.generate(REPEAT, params)
    force_drafts(monkeypatch, Oracle(REPEAT, plain.token_ids))
    live = list(S.watch(engine, REPEAT, params, speculative="prompt-lookup"))
    assert live[0].step is None and [s.step for s in live[1:]] == live[-1].stats.steps
    assert live[-1].text == plain.text and all(a.elapsed_ms <= b.elapsed_ms for a, b in zip(live, live[1:]))
    with pytest.raises(AscendNbError, match="watch"):
        next(S.watch(engine, REPEAT, params))


def test_graph_mode_decode_steps_after_rollback_see_only_accepted_slots(tiny_llama_dir, monkeypatch):
    """With graphs on, plain steps attend the whole static cache under the key mask: rejected drafts' stale K/V
    must be masked out by the rollback. The compiler is replaced by the identity, so the static step itself runs."""
    monkeypatch.setattr(torch, "compile", lambda step, **options: step)
    eager = load(tiny_llama_dir, CPU_PATHS[0], "float32", max_seq_len=96)
    graphs = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated", kernels=CPU_PATHS[0],
                            max_seq_len=96, graphs=True)
    params = GenerationParams(max_new_tokens=30, ignore_eos=True)
    plain = eager.generate(REPEAT, params)
    force_drafts(monkeypatch, Oracle(REPEAT, plain.token_ids))
    monkeypatch.setattr(S.Controller, "choose", lambda self, limit, steps=iter(range(10**6)):
                        min(next(steps) % 3 * 3, limit))  # k = 0, 3, 6: plain (graph) steps between verify passes
    fast = graphs.generate(REPEAT, params.replace(speculative="prompt-lookup"))
    assert graphs.graphs == "torch.compile" and fast.token_ids == plain.token_ids
    assert 0 < fast.speculative.accepted < fast.speculative.drafted  # some drafts were rolled back
