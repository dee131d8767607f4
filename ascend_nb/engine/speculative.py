"""Speculative decoding in the accelerated backend, batch 1: a drafter proposes k tokens, the target checks
them and the token after them in one pass of its weights, and keeps the longest prefix it agrees with.

Why it pays: at batch 1 a decode step streams every weight once for one row; the native GEMV takes up to
``native.MAX_ROWS`` (8) rows per pass of each weight, so k + 1 positions cost about one step's bytes.

- The verify pass is :meth:`CompactLlama.verify` (through :meth:`DecodeStep.verify`): the k + 1 positions
  through the same kernels as a decode step, attention once per position over the cache plus the new
  positions before it. Each position's logits are bit for bit a plain step's, so greedy output with
  speculation is token for token the plain greedy output on the same kernel path.
- Rejected positions are rolled back by :meth:`DecodeStep.rollback`: their slots leave the key mask and
  the cache index steps back; their K/V are overwritten by the next tokens, never copied.
- Drafters (:class:`Drafter`): :class:`PromptLookup` (``"prompt-lookup"``: the continuation of the latest
  earlier occurrence of the last 4, 3, 2 or 1 tokens in the prompt and the reply so far) and
  :class:`DraftModel` (``"draft:MODEL[@QUANT]"``: a second accelerated engine, e.g. ``draft:self@int8``,
  the target's own weights in int8; it must share the target's tokenizer).
- Acceptance: greedy keeps drafted tokens while each equals the target's own choice; sampling uses the
  standard rejection rule (:func:`accept`), so the output follows the target's distribution.
- Adaptive (:class:`Controller`): k is chosen each step to maximise expected tokens per millisecond from
  the recent acceptance and the measured cost of plain and verify passes; k = 0 is a plain decode step,
  so speculation switches itself off while it does not pay and probes again as its estimate recovers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ascend_nb import device as devices
from ascend_nb import native
from ascend_nb.engine.sampling import sampling_logits, select_tokens
from ascend_nb.errors import AscendNbError
from ascend_nb.models.params import GenerationParams, SpeculativeStats, SpeculativeStep

# ascend_nb.engine.loading.load, registered by that module (it sits above the backends, which call this one)
_LOADER: list[Callable[..., object]] = []


def register_loader(load: Callable[..., object]) -> None:
    """Where ``draft:MODEL`` engines come from: :func:`ascend_nb.engine.loading.load` registers itself on import."""
    _LOADER[:] = [load]


MAX_DRAFT = native.MAX_ROWS - 1  # k drafted tokens + the last accepted one fill one GEMV pass


# -- drafters ------------------------------------------------------------------------------------------
class Drafter:
    """Proposes tokens to follow a context. ``propose`` returns the drafted tokens (at most ``k``) and, for a
    drafter that samples, their distributions ``[len, V]`` (None: deterministic proposals, a one-hot q).
    ``shadow``: proposing costs next to nothing, so plain steps may score a one-token guess for free."""

    name = ""
    shadow = False

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> None:
        """A new request with this prompt."""

    def propose(self, context: Sequence[int], k: int, params: GenerationParams,
                generator: torch.Generator | None) -> tuple[list[int], torch.Tensor | None]:
        raise NotImplementedError


class PromptLookup(Drafter):
    """n-gram lookup in the text so far (prompt + reply): the tokens that followed the latest earlier
    occurrence of the context's last ``n`` tokens, longest ``n`` first (``max_ngram`` down to ``min_ngram``).
    Cheap enough to run on plain steps too, where its guess is scored against the token the step produced
    (``shadow``), so the controller learns when lookup would pay without paying for a verify pass."""

    name = "prompt-lookup"
    shadow = True

    # most tokens drafted after a match of n tokens: a one-token match guesses right far less often. Measured on
    # SmolLM2's replies to the built-in prompt sets with verify passes of one native call a layer: a cap of 2
    # after a one-token match, none after longer ones, gave grounded prompts 1.55x plain decoding (caps 1 / 4,
    # chosen when a verify pass cost 1.4-1.7x a plain step: 1.47x; caps 3 / none and no caps: 1.51x) and
    # open-ended ones 1.08x; replayed offline with the two-rate Controller below, a cap of 2 still beat none, and
    # again once passes of several weight rows made a verify pass cheaper (int8 2-6 rows 1.05x-1.35x a step;
    # predicted int8 / bf16: cap 2 1.72x / 1.66x, none 1.67x / 1.61x, cap 3 1.68x / 1.64x)
    NGRAM_DRAFTS = {1: 2}

    def __init__(self, max_ngram: int = 4, min_ngram: int = 1):
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> position just after its latest occurrence
        self._indexed = 0
        self._context: list[int] = []

    def start(self, prompt_ids: Sequence[int], params: GenerationParams | None = None) -> None:
        self._index, self._indexed, self._context = {}, 0, []

    def _index_upto(self, context: Sequence[int], end: int) -> None:
        """Record every n-gram ending at positions ``indexed + 1 .. end``."""
        for i in range(self._indexed + 1, end + 1):
            for n in range(self.min_ngram, self.max_ngram + 1):
                if i >= n:
                    self._index[tuple(context[i - n:i])] = i
        self._indexed = max(self._indexed, end)

    def propose(self, context: Sequence[int], k: int, params: GenerationParams | None = None,
                generator: torch.Generator | None = None) -> tuple[list[int], torch.Tensor | None]:
        context = list(context)
        if context[:self._indexed] != self._context[:self._indexed]:  # not a continuation: start over
            self.start(context)
        self._context = context
        end = len(context)
        self._index_upto(context, end - 1)  # every occurrence before the one ending the context
        drafts: list[int] = []
        for n in range(min(self.max_ngram, end), self.min_ngram - 1, -1):
            at = self._index.get(tuple(context[end - n:]))
            if at is not None:
                drafts = context[at:at + min(k, self.NGRAM_DRAFTS.get(n, k))]
                break
        self._index_upto(context, end)
        return drafts, None


class DraftModel(Drafter):
    """A second accelerated engine drafting greedily (or sampling, under the same parameters) from its own
    static cache, kept in step with the accepted text by the same rollback as the target's."""

    def __init__(self, engine, name: str):
        self.engine, self.name = engine, name
        self._cached: list[int] = []  # the tokens whose K/V the draft's cache holds

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> None:
        ids = torch.tensor([list(prompt_ids)], device=self.engine.device)
        self.engine._prefill(ids, torch.ones_like(ids))
        self._cached = list(prompt_ids)

    def _feed(self, tokens: list[int]) -> torch.Tensor:
        """Append ``tokens`` to the draft's cache; the logits after the last one."""
        self._cached.extend(tokens)
        ids = torch.tensor(tokens, device=self.engine.device)
        if len(tokens) == 1:
            return self.engine._decode(ids)[0]
        return self.engine._verify(ids)[-1]

    def propose(self, context: Sequence[int], k: int, params: GenerationParams,
                generator: torch.Generator | None) -> tuple[list[int], torch.Tensor | None]:
        common = 0
        for a, b in zip(self._cached, context):
            if a != b:
                break
            common += 1
        common = min(common, len(context) - 1)  # always feed at least the last token: its logits are needed
        self.engine._rollback(len(self._cached) - common)
        del self._cached[common:]
        pending = list(context[common:])
        logits = None
        while pending:  # through verify passes of up to MAX_ROWS rows
            logits, pending = self._feed(pending[:native.MAX_ROWS]), pending[native.MAX_ROWS:]
        drafts: list[int] = []
        probs: list[torch.Tensor] = []
        for i in range(k):
            shaped = sampling_logits(logits.float()[None], params, None)
            if params.do_sample:
                q = shaped.softmax(-1)[0]
                token = int(torch.multinomial(q, 1, generator=generator))
                probs.append(q)
            else:
                token = int(shaped.argmax(-1))
            drafts.append(token)
            if i + 1 < k:
                logits = self._feed([token])
        return drafts, (torch.stack(probs) if params.do_sample else None)


def _same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab() and a.all_special_ids == b.all_special_ids


def drafter_for(engine, method: str) -> Drafter:
    """The drafter ``method`` names, for the accelerated ``engine`` (draft engines are loaded once and kept)."""
    if method == "prompt-lookup":
        return PromptLookup()
    if not method.startswith("draft:"):
        raise AscendNbError(f"unknown speculative method {method!r}: use prompt-lookup or draft:MODEL[@QUANT]")
    drafts = engine.__dict__.setdefault("_draft_engines", {})
    if method not in drafts:
        from ascend_nb.dtypes import dtype_name

        name, _, quantize = method[len("draft:"):].partition("@")
        model = engine.model_dir if name == "self" else name
        draft = _LOADER[0](model, device=engine.device.type, dtype=dtype_name(engine.dtype), backend="accelerated",
                           max_seq_len=engine.max_seq_len, quantize=quantize or None, kernels=engine.kernels)
        if not _same_tokenizer(draft.tokenizer, engine.tokenizer):
            raise AscendNbError(f"the draft model {name!r} does not share {engine.spec.name!r}'s tokenizer: a draft must "
                                "use the same vocabulary (pick a smaller model of the same family, or draft:self@int8)")
        drafts[method] = draft
    return DraftModel(drafts[method], method)


# -- acceptance ----------------------------------------------------------------------------------------
def accept(target_logits: torch.Tensor, drafts: list[int], draft_probs: torch.Tensor | None, params: GenerationParams,
           seen: torch.Tensor | None, generator: torch.Generator | None) -> tuple[int, int]:
    """How many of ``drafts`` the target keeps, and the token it adds after them.

    ``target_logits`` ``[len(drafts) + 1, V]``: row t the target's logits after the context and ``drafts[:t]``.
    Greedy: drafts are kept while each is the target's own choice (:func:`select_tokens`, as a plain step
    chooses), and the added token is the target's choice at the first disagreement (or after the last
    draft). Sampling: the rejection rule of Leviathan et al. / Chen et al. (2023): draft d with draft
    probability q(d) is kept with probability min(1, p(d) / q(d)); at the first rejection the token is drawn
    from max(0, p - q) renormalised, and after all are kept from p; q is one-hot for a deterministic drafter.
    ``seen`` (repetition penalty) is updated with every token the target keeps.
    """
    for t, draft in enumerate([*drafts, None]):
        logits = target_logits[t:t + 1].float()
        if not params.do_sample:
            token = int(select_tokens(logits, params, seen, None))
            if token != draft:
                return t, token
        else:
            p = sampling_logits(logits, params, seen).softmax(-1)[0]
            if draft is None:
                return t, int(torch.multinomial(p, 1, generator=generator))
            q = draft_probs[t].to(p) if draft_probs is not None else None
            q_draft = float(q[draft]) if q is not None else 1.0
            u = float(torch.rand((), generator=generator, device=p.device))
            if u * q_draft >= float(p[draft]):  # rejected: draw from the residual
                if q is None:  # one-hot q: p without the draft
                    residual = p.clone().index_fill_(0, torch.tensor([draft], device=p.device), 0)
                else:
                    residual = (p - q).clamp(min=0)
                if float(residual.sum()) <= 0:
                    residual = p
                return t, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
        if seen is not None:
            seen[0, draft] = True
    raise AssertionError("unreachable")


# -- adaptive k ----------------------------------------------------------------------------------------
@dataclass
class Controller:
    """Chooses k per step: the k in 0..``max_draft`` with the most expected tokens per millisecond,
    (1 + first * (1 + then + ... + then^(k-1))) / (cost of a pass of k + 1 rows + k draft steps), from
    measured pass costs and two exponential averages of acceptance: ``first``, that the first drafted token
    is accepted, and ``then``, that a drafted token is accepted once the one before it was. Drafts copied
    from the text run on once they start (SmolLM2's grounded replies, prompt lookup: after a one-token
    match the first drafted token is right 25 % of the time, each later one 56-80 %), which a single
    per-token rate undercounts, so it chose k too small. k = 0 is a plain step; while speculation is off
    ``first`` drifts back toward its prior, so it is tried again now and then."""

    max_draft: int = MAX_DRAFT
    first: float = 0.6
    then: float = 0.8
    prior: float = 0.6  # of ``first``
    decay: float = 0.3  # weight of the newest step in the averages
    recover: float = 0.01  # per plain step, ``first`` moves this far back toward the prior
    draft_step_ms: float = 0.0  # per drafted token (0 for lookup)

    def __post_init__(self):
        self.pass_ms: dict[int, float] = {}  # rows -> measured ms of one target pass

    def cost(self, rows: int) -> float:
        if rows in self.pass_ms:
            return self.pass_ms[rows]
        plain = self.pass_ms.get(1, 1.0)
        known = {r: ms for r, ms in self.pass_ms.items() if r > 1}
        if known:  # the nearest measured row count, scaled linearly from the plain step
            r, ms = min(known.items(), key=lambda item: abs(item[0] - rows))
            return plain + (ms - plain) * (rows - 1) / (r - 1)
        return plain * (1 + 0.1 * (rows - 1))  # before any measurement: a guess that lets it start

    def expected_tokens(self, k: int) -> float:
        """Tokens one step yields with k drafted: the target's own one plus the expected accepted run."""
        return 1.0 + self.first * sum(self.then ** i for i in range(k))

    def choose(self, limit: int) -> int:
        best, best_rate = 0, 1.0 / self.cost(1)
        for k in range(1, min(self.max_draft, limit) + 1):
            rate = self.expected_tokens(k) / (self.cost(k + 1) + self.draft_step_ms * k)
            if rate > best_rate * 1.02:  # a margin, so a tie stays plain
                best, best_rate = k, rate
        return best

    def _average(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.decay * (new - old)

    def record(self, rows: int, pass_ms: float, drafted: int, accepted: int, draft_ms: float) -> None:
        self.pass_ms[rows] = self._average(self.pass_ms.get(rows), pass_ms)
        if drafted:
            self.first = self._average(self.first, 1.0 if accepted else 0.0)
            later = accepted - 1 + (1 if accepted < drafted else 0)  # checked after an accepted one
            if accepted and later:
                self.then = min(0.98, self._average(self.then, (accepted - 1) / later))
            self.draft_step_ms = self._average(self.draft_step_ms, draft_ms / drafted)
        elif rows == 1:
            self.first += self.recover * (self.prior - self.first) if self.first < self.prior else 0.0

    def record_shadow(self, hit: bool) -> None:
        """A plain step's free guess (a lookup proposal scored against the token the step produced)."""
        self.first = self._average(self.first, 1.0 if hit else 0.0)


# -- the generation loop ---------------------------------------------------------------------------------
@torch.inference_mode()
def speculative_steps(engine, prompts: list[list[int]], params: GenerationParams, stop_event: threading.Event | None,
                      live_text: bool) -> Iterator[list]:
    """:meth:`Engine._steps` with speculation (the caller holds the engine): one prompt; each step appends
    the accepted drafted tokens and the target's own next token, and yields the row once per step."""
    from ascend_nb.engine.base import _Row

    if not getattr(engine, "supports_speculative", False):
        raise AscendNbError(f"speculative decoding runs in the accelerated backend, not {engine.backend!r}")
    if getattr(engine, "tp", None) is not None:
        raise AscendNbError("speculative decoding does not run under tensor parallelism yet: load with tp=1")
    (prompt,) = prompts
    live_text = live_text or bool(params.stop)
    drafter = drafter_for(engine, params.speculative)
    controller = Controller()
    stats = SpeculativeStats(method=params.speculative)
    input_ids = torch.tensor([prompt], device=engine.device)
    seen = None
    if params.repetition_penalty != 1.0:
        seen = torch.zeros(1, engine.config.vocab_size, dtype=torch.bool, device=engine.device)
        seen[0, input_ids[0]] = True
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=engine.device).manual_seed(params.seed)
    devices.reset_peak_memory(engine.device)
    start = engine._clock()
    row = _Row(prompt_len=len(prompt), start=start, speculative=stats)
    logits = engine._prefill(input_ids, torch.ones_like(input_ids))
    token = select_tokens(logits.float(), params, seen, generator)
    if engine.step_observer is not None:
        engine.step_observer(logits, token)
    token = int(token)
    engine._append(row, token, engine._clock(), params, live_text)
    context = [*prompt, token]
    clock = engine._clock
    draft_started = False
    emitted = 1
    yield [row]
    while row.finish_reason is None and emitted < params.max_new_tokens:
        if stop_event is not None and stop_event.is_set():
            row.finish_reason = "cancelled"
            yield [row]
            break
        if seen is not None:
            seen[0, token] = True
        k = controller.choose(params.max_new_tokens - emitted - 1)
        drafts, draft_probs, draft_ms, guess = [], None, 0.0, None
        if k or drafter.shadow:
            if not draft_started:  # a draft model's prefill: counted in the stats, not in the per-token draft cost
                t0 = clock()
                drafter.start(prompt, params)
                stats.draft_ms += (clock() - t0) * 1000
                draft_started = True
            t0 = clock()
            drafts, draft_probs = drafter.propose(context, max(k, 1), params, generator)
            if not k:  # speculation is off: keep the guess to score it, verify nothing
                guess, drafts, draft_probs = (drafts[0] if drafts else None), [], None
            drafts = drafts[:k]
            draft_ms = (clock() - t0) * 1000
            stats.draft_ms += draft_ms
        t0 = clock()
        if drafts:
            target = engine._verify(torch.tensor([token, *drafts], device=engine.device))
            kept, token = accept(target, drafts, draft_probs, params, seen, generator)
            engine._rollback(len(drafts) - kept)
        else:
            target = engine._decode(torch.tensor([token], device=engine.device))
            kept, token = accept(target, [], None, params, seen, generator)
        pass_ms = (clock() - t0) * 1000
        stats.verify_ms += pass_ms
        controller.record(len(drafts) + 1, pass_ms, len(drafts), kept, draft_ms)
        if guess is not None:
            controller.record_shadow(guess == token)
        stats.steps.append(SpeculativeStep(accepted=drafts[:kept], rejected=drafts[kept:], token=token))
        new = [*drafts[:kept], token]
        now = engine._clock()
        for t, new_token in enumerate(new):
            if engine.step_observer is not None:
                engine.step_observer(target[t:t + 1], torch.tensor([new_token], device=engine.device))
            engine._append(row, new_token, now, params, live_text)
            emitted += 1
            if row.finish_reason is not None:
                break
        context.extend(new)
        yield [row]
    row.finish_reason = row.finish_reason or "length"
    row.peak_memory_mb = devices.memory_stats(engine.device)["peak_mb"]
    if not live_text:
        row.text = engine.decode(row.token_ids)


@dataclass
class LiveStep:
    """One decode step as :func:`watch` reports it: the reply's text so far, the step (accepted and rejected
    drafted tokens, the target's own token; None for the first token, from the prompt's pass), the running
    stats, and milliseconds since the request started."""

    text: str
    step: SpeculativeStep | None
    stats: SpeculativeStats
    elapsed_ms: float


def watch(engine, prompt, params: GenerationParams | None = None, stop_event: threading.Event | None = None,
          **overrides) -> Iterator[LiveStep]:
    """Generate ``prompt`` (text or ids) with speculation, yielding a :class:`LiveStep` after every decode step:
    what a live view needs to mark each drafted token accepted or rejected as the text grows. ``params`` must
    set ``speculative`` (or pass ``speculative=...``); the engine is held until the iterator ends or is closed."""
    params = engine.params(params, **overrides)
    if params.speculative is None:
        raise AscendNbError("watch() shows speculative decoding: pass speculative='prompt-lookup' or 'draft:MODEL'")
    ids = engine._prompt_ids(prompt)
    seen = 0
    for (row,) in engine._run([ids], params, stop_event, live_text=True):
        stats = row.speculative
        if stats is None:  # cancelled before it started
            return
        now = (engine._clock() - row.start) * 1000
        if len(stats.steps) == seen:
            yield LiveStep(row.text, None, stats, now)
        for step in stats.steps[seen:]:
            yield LiveStep(row.text, step, stats, now)
        seen = len(stats.steps)
