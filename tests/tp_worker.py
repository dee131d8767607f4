"""Run under ``torchrun``: load a model with tensor parallelism and save what rank 0 computes.

Used by tests/test_tensor_parallel.py:
``torchrun --nproc-per-node N tests/tp_worker.py MODEL OUT.pt [DTYPE [KERNELS]]``: the logits of a
fixed prompt, the greedy reply to a chat question (token ids) and the top-5 per step of that reply.
"""

import os
import sys

import torch

import ascend_nb
from ascend_nb.precision import topk_per_step

PROMPT = "The capital of France is"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def main(model: str, out: str, dtype: str = "float32", kernels: str | None = None) -> None:
    engine = ascend_nb.load(model, device="cpu", dtype=dtype, backend="accelerated", tp=int(os.environ["WORLD_SIZE"]),
                            kernels=kernels, max_seq_len=128)
    ids = engine.encode(PROMPT)
    logits, _ = engine.forward(torch.tensor([ids]))
    tokens = engine.generate(ids, max_new_tokens=12, ignore_eos=True).token_ids
    chat_prompt = engine.encode_chat(QUESTION, 24)
    chat = engine.generate(chat_prompt, max_new_tokens=24).token_ids
    top = topk_per_step(engine, chat_prompt, chat)  # a collective: every rank runs it
    if engine.tp.rank == 0:
        torch.save({"logits": logits, "tokens": tokens, "chat_prompt": chat_prompt, "chat": chat, "chat_top": top}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
