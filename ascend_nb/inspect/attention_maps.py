"""Per-layer, per-head attention probabilities of a prompt, from the engine's own attention."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ascend_nb.errors import AscendNbError
from ascend_nb.inspect.engines import attention_probs, prompt_ids, token_texts

COLUMNS = ["layer", "head", "query", "key", "query_token", "key_token", "weight"]


def attention(engine, prompt: str | Sequence[int], layer: int | Sequence[int] | None = None) -> pd.DataFrame:
    """One row per layer x head x query position x key position: the softmax weight the query gives
    the key (0 above the diagonal, rows sum to 1). ``layer``: an index, a list of them, or None for all
    (layers x heads x tokens² rows: keep the prompt short)."""
    ids = prompt_ids(engine, prompt)
    maps = attention_probs(engine, ids)
    layers = range(len(maps)) if layer is None else [layer] if isinstance(layer, int) else list(layer)
    for index in layers:
        if not 0 <= index < len(maps):
            raise AscendNbError(f"layer {index} does not exist: the model has layers 0..{len(maps) - 1}")
    texts = token_texts(engine.tokenizer, ids)
    t = len(ids)
    query, key = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    frames = []
    for index in layers:
        heads = maps[index].shape[0]
        frames.append(pd.DataFrame({
            "layer": index, "head": torch.arange(heads).repeat_interleave(t * t).numpy(),
            "query": query.flatten().repeat(heads).numpy(), "key": key.flatten().repeat(heads).numpy(),
            "weight": maps[index].flatten().numpy()}))
    frame = pd.concat(frames, ignore_index=True)
    frame["query_token"] = [texts[i] for i in frame["query"]]
    frame["key_token"] = [texts[i] for i in frame["key"]]
    return frame[COLUMNS]
