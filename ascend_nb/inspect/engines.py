"""What the inspect tools need from an engine beyond the shared interface: the prompt's ids, the
attention probabilities and the final norm + head, for the two local backends."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ascend_nb.errors import AscendNbError
from ascend_nb.engine.loading import LOCAL_BACKENDS
from ascend_nb.inspect.token_split import byte_notation



def require_local(engine) -> None:
    """The inspect tools read the model's insides: refuse engines that only stream text back."""
    if getattr(engine, "backend", None) not in LOCAL_BACKENDS:
        raise AscendNbError(f"looking inside the model needs a local engine, not backend "
                            f"{getattr(engine, 'backend', type(engine).__name__)!r}: load it with "
                            f"backend='transformers' or 'accelerated'")


def prompt_ids(engine, prompt: str | Sequence[int]) -> list[int]:
    """The token ids of a text prompt (the tokenizer's own special-token rules) or of given ids."""
    require_local(engine)
    ids = engine.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
    if not ids:
        raise AscendNbError("the prompt is empty: give some text or token ids")
    if len(ids) > engine.max_seq_len:
        raise AscendNbError(f"the prompt ({len(ids)} tokens) exceeds max_seq_len {engine.max_seq_len}: shorten it")
    return ids


@torch.inference_mode()
def attention_probs(engine, ids: Sequence[int]) -> list[torch.Tensor]:
    """Per layer, the attention probabilities ``[heads, T, T]`` (float32, CPU) of one prompt, taken from
    the engine itself: eager attention on the transformers backend, the runtime's own q/k otherwise."""
    require_local(engine)
    input_ids = torch.tensor([list(ids)], device=engine.device)
    if engine.backend == "accelerated":
        if getattr(engine, "tp", None) is not None:
            raise AscendNbError("a tensor-parallel engine holds only its own heads: load it with tp=1 to see attention")
        maps: list[torch.Tensor] = []
        engine.model.forward(input_ids, attentions=maps)
    else:
        model = engine.model
        before = model.config._attn_implementation
        model.set_attn_implementation("eager")  # sdpa and flash kernels do not return the probabilities
        try:
            maps = list(model(input_ids=input_ids, output_attentions=True, use_cache=False).attentions)
        finally:
            model.set_attn_implementation(before)
    return [m[0].float().cpu() for m in maps]


def lens_head(engine):
    """A callable: hidden state ``[.., H]`` (any float dtype) -> float32 logits through the engine's own
    final norm and LM head (what the last layer's output goes through)."""
    require_local(engine)
    if engine.backend == "accelerated":
        head = engine.model.hidden_logits
    else:
        model = engine.model

        def head(hidden: torch.Tensor) -> torch.Tensor:
            h = hidden.to(device=engine.device, dtype=model.dtype)
            return model.lm_head(model.model.norm(h)).float()
    return head


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """How each id reads on its own; a token that is only part of a character reads as its bytes,
    ``<0xE5><0x8C>`` (SentencePiece's byte pieces, or a byte-level BPE token), never as '\\ufffd' or mojibake."""
    texts = []
    for token_id in ids:
        text = tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
        if "\ufffd" in text:
            text = byte_notation(tokenizer.convert_ids_to_tokens(int(token_id))) or text
        texts.append(text)
    return texts
