"""The logit lens: what the model would answer if it stopped after each layer.

Layer ``L`` reads the residual stream entering decoder layer ``L`` (``hidden_states[L]`` as
transformers returns it; 0 = the embeddings) through the model's own final norm and LM head; the
last row, layer ``num_layers``, is the model's real output.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ascend_nb.errors import AscendNbError
from ascend_nb.inspect.engines import lens_head, prompt_ids, require_local, token_texts

COLUMNS = ["layer", "position", "token_id", "token", "prob", "input_token", "final_prob"]


@torch.inference_mode()
def logit_lens(engine, prompt: str | Sequence[int]) -> pd.DataFrame:
    """Per layer and position the top next token, its probability, the input token at that position and
    ``final_prob``: the probability this layer already gives the model's final answer there."""
    require_local(engine)
    ids = prompt_ids(engine, prompt)
    logits, hidden = engine.forward(torch.tensor([ids], device=engine.device), output_hidden_states=True)
    if hidden is None:
        raise AscendNbError("this engine returned no hidden states: the logit lens needs them")
    head = lens_head(engine)
    rows = []
    inputs = token_texts(engine.tokenizer, ids)
    answer = logits[0].argmax(-1)
    for layer, layer_logits in enumerate([*(head(h) for h in hidden[:-1]), logits]):
        probs = layer_logits[0].float().softmax(-1)
        top = probs.max(-1)
        final = probs.gather(-1, answer[:, None])[:, 0].tolist()
        texts = token_texts(engine.tokenizer, top.indices.tolist())
        rows.extend({"layer": layer, "position": position, "token_id": int(token), "token": text, "prob": float(p),
                     "input_token": inputs[position], "final_prob": final[position]}
                    for position, (token, p, text) in enumerate(zip(top.indices, top.values, texts)))
    return pd.DataFrame(rows, columns=COLUMNS)


def answer_layers(lens: pd.DataFrame) -> pd.DataFrame:
    """Per position, the model's final top token and the first layer from which the lens already reads
    it and keeps reading it up to the output (where the answer appears)."""
    rows = []
    for position, group in lens.sort_values("layer").groupby("position"):
        final = group.iloc[-1]
        same = (group["token_id"] == final["token_id"]).tolist()
        first = len(same) - 1
        while first > 0 and same[first - 1]:
            first -= 1
        rows.append({"position": position, "input_token": final["input_token"], "token": final["token"],
                     "first_layer": int(group.iloc[first]["layer"]), "prob": final["prob"]})
    return pd.DataFrame(rows)
