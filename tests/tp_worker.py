"""Run under ``torchrun``: load a model with tensor parallelism and save what rank 0 computes.

Used by tests/test_tensor_parallel.py: ``torchrun --nproc-per-node N tests/tp_worker.py MODEL_DIR OUT.pt``.
"""

import sys

import torch

import ascend_nb

PROMPT = "The capital of France is"


def main(model_dir: str, out: str) -> None:
    world_size = int(__import__("os").environ["WORLD_SIZE"])
    engine = ascend_nb.load(model_dir, device="cpu", dtype="float32", backend="accelerated", tp=world_size)
    ids = engine.encode(PROMPT)
    logits, _ = engine.forward(torch.tensor([ids]))
    tokens = engine.generate(ids, max_new_tokens=12, ignore_eos=True).token_ids
    if engine.tp.rank == 0:
        torch.save({"logits": logits, "tokens": tokens}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
