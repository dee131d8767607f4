"""Decode steps as graphs: CUDA graphs (manual capture) on CUDA, torchair on NPU, torch.compile
(inductor) on CPU.

A graph replays fixed kernels on fixed buffers, so one decode step is written for static shapes
(:meth:`CompactLlama.decode` with a device-tensor cache index, ``length = max_seq_len`` and a
``key_valid`` mask): the token, position, cache slot and mask live in buffers updated in place
between replays, and no step reads a value back to the host. Every step attends the whole static
cache, so keep ``max_seq_len`` close to what requests need.
"""

from __future__ import annotations

import shutil

import torch

from ascend_nb.engine.accelerated.model import CompactLlama


def graphs_available(device: torch.device) -> bool:
    """CUDA always; NPU when torchair is installed; CPU when a C++ compiler is there for inductor."""
    if device.type == "cuda":
        return True
    if device.type == "npu":
        import importlib.util

        return importlib.util.find_spec("torchair") is not None
    return any(shutil.which(compiler) for compiler in ("g++", "clang++", "c++"))


class DecodeGraph:
    """One decode step for a fixed batch size, captured once and replayed for every token."""

    def __init__(self, model: CompactLlama, batch_size: int):
        self.model = model
        device = model.device
        self.tokens = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.key_valid = torch.zeros(batch_size, model.max_seq_len, dtype=torch.bool, device=device)
        self._replay = None
        self._cache_ptr = None
        self.logits: torch.Tensor | None = None

    def _step(self) -> torch.Tensor:
        return self.model.decode(self.tokens, self.positions, self.index, self.model.max_seq_len, self.key_valid)

    def start(self, positions: torch.Tensor, length: int, key_valid: torch.Tensor) -> None:
        """Load a new request's state (after its prefill); capture on first use or after the cache moved."""
        self.positions.copy_(positions)
        self.index.fill_(length)
        self.key_valid.copy_(key_valid)
        if self._replay is None or self._cache_ptr != self.model.k_cache[0].data_ptr():
            self._capture()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` ``[B]`` at the current slot; the returned logits are overwritten by the next step."""
        self.tokens.copy_(tokens)
        self.key_valid.index_fill_(1, self.index, True)
        logits = self._replay()
        self.positions += 1
        self.index += 1
        return logits

    def _capture(self) -> None:
        self._cache_ptr = self.model.k_cache[0].data_ptr()
        if self.model.device.type == "cpu":  # inductor fuses the small ops around the GEMVs (~30 s, once)
            self._replay = torch.compile(self._step, dynamic=False)
            return
        if self.model.device.type == "npu":  # not verified on NPU hardware
            import torchair

            compiled = torch.compile(self._step, dynamic=False,
                                     backend=torchair.get_npu_backend(compiler_config=torchair.CompilerConfig()))
            self._replay = compiled
            return
        # Warm-up runs write only the current slot, which the first real step overwrites.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._step()

        def replay() -> torch.Tensor:
            graph.replay()
            return self.logits

        self._replay = replay
