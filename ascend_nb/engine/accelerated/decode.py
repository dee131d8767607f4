"""One decode path: a static-shape step run eagerly or replayed as a graph (CUDA graphs on CUDA,
torchair on NPU, torch.compile (inductor) on CPU), with the same buffers and the same code.

The token, position, cache slot and key-valid mask live in device buffers updated in place
between steps, and no step reads a value back to the host (:meth:`CompactLlama.decode`). Eager
steps attend the slots written so far; a graph attends the whole static cache, so keep
``max_seq_len`` close to what requests need when graphs are on. What the tests prove eagerly is
therefore what the graphs run.
"""

from __future__ import annotations

import torch

from ascend_nb.engine.accelerated.model import CompactLlama


class DecodeStep:
    """Decoding state of one batch size: static buffers, and the captured graph when ``graphs`` is set."""

    def __init__(self, model: CompactLlama, batch_size: int, graphs: str | None):
        self.model, self.graphs = model, graphs
        device = model.device
        self.tokens = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.key_valid = torch.zeros(batch_size, model.max_seq_len, dtype=torch.bool, device=device)
        self.length = 0  # slots written, kept on the host for eager steps and the cache-full check
        self._replay = None
        self._cache_ptr = None
        self.logits: torch.Tensor | None = None

    def _run(self, span: int) -> torch.Tensor:
        return self.model.decode(self.tokens, self.positions, self.index, self.key_valid, span)

    def start(self, positions: torch.Tensor, length: int, key_valid: torch.Tensor) -> None:
        """Load a new request's state (after its prefill); capture on first use or after the cache moved."""
        self.positions.copy_(positions)
        self.index.fill_(length)
        self.key_valid.copy_(key_valid)
        self.length = length
        if self.graphs and (self._replay is None or self._cache_ptr != self.model.k_cache[0].data_ptr()):
            self._capture()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` ``[B]`` at the current slot; the returned logits are overwritten by the next step."""
        self.tokens.copy_(tokens)
        self.key_valid.index_fill_(1, self.index, True)
        logits = self._replay() if self._replay is not None else self._run(self.length + 1)
        self.positions += 1
        self.index += 1
        self.length += 1
        return logits

    def verify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` ``[T]`` (batch 1: the last accepted token and T - 1 drafted ones) at the next T
        slots in one pass of the weights (:meth:`CompactLlama.verify`, always eager); returns their logits
        ``[T, V]``, row j bit for bit what :meth:`step` would give after the first j + 1 of them.
        Follow it with :meth:`rollback` of the drafted tokens that were not accepted."""
        t = tokens.shape[0]
        start = self.length
        self.key_valid[:, start:start + t] = True
        positions = self.positions[:1, None] + torch.arange(t, device=self.positions.device)
        logits = self.model.verify(tokens[None], positions, start, self.key_valid)
        self.positions += t
        self.index += t
        self.length += t
        return logits

    def rollback(self, count: int) -> None:
        """Forget the last ``count`` appended tokens: their slots leave ``key_valid`` and the next token
        takes the first of them (a mask and index update; their K/V are overwritten, not copied)."""
        if count <= 0:
            return
        if count > self.length:
            raise ValueError(f"cannot roll back {count} of {self.length} cached tokens")
        self.length -= count
        self.key_valid[:, self.length:self.length + count] = False
        self.positions -= count
        self.index -= count

    def _capture(self) -> None:
        self._cache_ptr = self.model.k_cache[0].data_ptr()
        full = self.model.max_seq_len
        if self.graphs == "torch.compile":  # CPU: inductor fuses the small ops around the GEMVs (~30 s, once)
            compiled = torch.compile(self._run, dynamic=False)
            self._replay = lambda: compiled(full)
            return
        if self.graphs == "torchair":  # not verified on NPU hardware
            import torchair

            compiled = torch.compile(self._run, dynamic=False,
                                     backend=torchair.get_npu_backend(compiler_config=torchair.CompilerConfig()))
            self._replay = lambda: compiled(full)
            return
        # CUDA graphs. Warm-up runs write only the current slot, which the first real step overwrites.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run(full)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._run(full)

        def replay() -> torch.Tensor:
            graph.replay()
            return self.logits

        self._replay = replay
