"""Chat templates: turn a list of ``{"role", "content"}`` messages into prompt token ids.

Each family follows its own model's rules exactly (DESIGN.md section 2):
- ``chatml``: the tokenizer's own Jinja template (SmolLM2 ships it in its GGUF); oldest turns are
  dropped (system kept) until the prompt leaves room for ``max_new_tokens``.
- ``aquila``: ``{system}###Human: {q}###Assistant:`` (FastChat's single-colon style, ``###`` separator).
- ``baichuan2``: Baichuan2's ``build_chat_input``: user id 195, assistant id 196, system first,
  history added newest-first while it fits ``model_max_length - max_new_tokens``, 196 appended when
  the last message is not the assistant's, then left-truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ascend_nb.errors import AscendNbError

Message = dict[str, str]

AQUILA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")
BAICHUAN2_USER_ID = 195
BAICHUAN2_ASSISTANT_ID = 196


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def _check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise AscendNbError("messages is empty: pass at least one {'role': 'user', 'content': ...}")
    for i, message in enumerate(messages):
        if message.get("role") not in ("system", "user", "assistant") or "content" not in message:
            raise AscendNbError(f"message {i} must be {{'role': system|user|assistant, 'content': str}}, got {message!r}")
        if message["role"] == "system" and i != 0:
            raise AscendNbError(f"the system message must come first, found one at position {i}")


def _split_rounds(messages: Sequence[Message]) -> tuple[str | None, list[list[Message]]]:
    """System prompt (or None) and the conversation cut into rounds that each start with a user turn."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    rounds: list[list[Message]] = []
    for message in messages[1:] if system is not None else messages:
        if message["role"] == "user" or not rounds:
            rounds.append([])
        rounds[-1].append(message)
    return system, rounds


def _too_long(prompt_tokens: int, budget: int) -> AscendNbError:
    return AscendNbError(f"prompt is {prompt_tokens} tokens but only {budget} fit before max_new_tokens: "
                         "shorten the message, clear the history or lower max_new_tokens")


def encode_chatml(tokenizer, messages: Sequence[Message], budget: int) -> list[int]:
    """Render with the tokenizer's chat template, dropping the oldest rounds until it fits ``budget``."""
    _check_messages(messages)
    system, rounds = _split_rounds(messages)
    head = [{"role": "system", "content": system}] if system is not None else []
    for start in range(len(rounds)):
        kept = head + [m for r in rounds[start:] for m in r]
        text = tokenizer.apply_chat_template(kept, tokenize=False,
                                             add_generation_prompt=kept[-1]["role"] != "assistant")
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= budget:
            return ids
    raise _too_long(len(ids), budget)


def encode_aquila(tokenizer, messages: Sequence[Message], budget: int) -> list[int]:
    """Aquila-7B: ``{system}###Human: q###Assistant: a###Human: q2###Assistant:``; oldest rounds dropped."""
    _check_messages(messages)
    system, rounds = _split_rounds(messages)
    system = AQUILA_SYSTEM if system is None else system
    names = {"user": "Human", "assistant": "Assistant"}
    for start in range(len(rounds)):
        turns = [f"{names[m['role']]}: {m['content']}" for r in rounds[start:] for m in r]
        text = system + "###" + "###".join(turns)
        if messages[-1]["role"] != "assistant":
            text += "###Assistant:"
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= budget:
            return ids
    raise _too_long(len(ids), budget)


def encode_baichuan2(tokenizer, messages: Sequence[Message], budget: int) -> list[int]:
    """Baichuan2's ``build_chat_input`` with ``max_input_tokens = budget``."""
    _check_messages(messages)
    system, rounds = _split_rounds(messages)
    system_tokens = tokenizer.encode(system or "", add_special_tokens=False)
    max_history_tokens = budget - len(system_tokens)
    history: list[int] = []
    for round_ in reversed(rounds):
        round_tokens: list[int] = []
        for message in round_:
            round_tokens.append(BAICHUAN2_USER_ID if message["role"] == "user" else BAICHUAN2_ASSISTANT_ID)
            round_tokens.extend(tokenizer.encode(message["content"], add_special_tokens=False))
        if not history or len(history) + len(round_tokens) <= max_history_tokens:
            history = round_tokens + history
            if len(history) < max_history_tokens:
                continue
        break
    ids = system_tokens + history
    if messages[-1]["role"] != "assistant":
        ids.append(BAICHUAN2_ASSISTANT_ID)
    return ids[-budget:]


def encode_plain(tokenizer, messages: Sequence[Message], budget: int) -> list[int]:
    """For base models without a chat template: the last user message as a raw prompt."""
    _check_messages(messages)
    ids = tokenizer.encode(messages[-1]["content"])
    if len(ids) > budget:
        raise _too_long(len(ids), budget)
    return ids


TEMPLATES = {"chatml": encode_chatml, "aquila": encode_aquila, "baichuan2": encode_baichuan2, "plain": encode_plain}


def encode_chat(template: str, tokenizer, messages: Sequence[Message], budget: int) -> list[int]:
    """Prompt ids for ``messages`` under the named template, at most ``budget`` tokens."""
    if template not in TEMPLATES:
        raise AscendNbError(f"unknown chat template {template!r}: use one of {', '.join(TEMPLATES)}")
    return TEMPLATES[template](tokenizer, messages, budget)
