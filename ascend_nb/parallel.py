"""Tensor parallelism over torch.distributed for the compact runtime (HCCL on NPU, NCCL on CUDA, gloo on CPU).

Megatron-style split of each decoder layer: q/k/v and gate/up are column-parallel (each rank holds
its heads and its slice of the FFN), o and down are row-parallel and followed by one all-reduce
each; embeddings, norms and the head are replicated, so every rank computes the same logits and
samples the same tokens. Each rank reads only its shard from safetensors. Launch with
``torchrun --nproc-per-node N``.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ascend_nb.errors import AscendNbError

PROCESS_GROUP_BACKENDS = {"npu": "hccl", "cuda": "nccl", "cpu": "gloo"}


@dataclass(frozen=True)
class TensorParallel:
    """This process's place in a tensor-parallel group."""

    rank: int
    world_size: int

    def part(self, total: int) -> tuple[int, int]:
        """``start, stop`` of this rank's equal share of ``total`` rows/columns."""
        size = total // self.world_size
        return self.rank * size, (self.rank + 1) * size

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` over the group in place (the row-parallel layers' partial products)."""
        dist.all_reduce(x)
        return x


def check_ranks(tp) -> None:
    """Refuse a tensor-parallel size that is not a whole number of ranks >= 1."""
    if not isinstance(tp, int) or tp < 1:
        raise AscendNbError(f"--tp must be a number of ranks >= 1, got {tp}")


def check_divisible(config, tp: int) -> None:
    """Refuse a ``tp`` that does not split the heads, the KV heads and the FFN evenly (before loading)."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    for what, count in (("attention heads", heads), ("KV heads", kv_heads), ("FFN size", config.intermediate_size)):
        if count % tp:
            divisors = [d for d in range(1, kv_heads + 1) if heads % d == 0 and kv_heads % d == 0
                        and config.intermediate_size % d == 0]
            raise AscendNbError(f"--tp {tp} does not divide the model's {what} ({count}): use one of "
                                f"{', '.join(map(str, divisors))}")


def init_tensor_parallel(tp: int, device_type: str) -> TensorParallel:
    """Join the torchrun process group (once) and return this rank's place; world size must equal ``tp``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != tp:
        raise AscendNbError(f"--tp {tp} needs {tp} processes but this run has {world_size}: launch with "
                            f"`torchrun --nproc-per-node {tp} -m ascend_nb ...`")
    if not dist.is_initialized():
        dist.init_process_group(PROCESS_GROUP_BACKENDS[device_type])
        atexit.register(dist.destroy_process_group)
    return TensorParallel(rank=dist.get_rank(), world_size=dist.get_world_size())


def is_main_process(engine) -> bool:
    """False on tensor-parallel ranks other than 0 (only rank 0 prints)."""
    tp = getattr(engine, "tp", None)
    return tp is None or tp.rank == 0


def local_device(device_type: str) -> torch.device:
    """This rank's device: ``LOCAL_RANK`` on NPU/CUDA, the CPU otherwise."""
    if device_type == "cpu":
        return torch.device("cpu")
    return torch.device(device_type, int(os.environ.get("LOCAL_RANK", "0")))
