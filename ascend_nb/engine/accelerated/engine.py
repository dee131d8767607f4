"""``backend="accelerated"``: the compact Llama runtime behind the shared :class:`Engine` interface."""

from __future__ import annotations

import torch

from ascend_nb.engine.accelerated.graphs import DecodeGraph, graphs_available
from ascend_nb.engine.accelerated.kernels import Kernels, select_kernels
from ascend_nb.engine.accelerated.model import CompactLlama
from ascend_nb.engine.accelerated.parallel import (TensorParallel, check_divisible, init_tensor_parallel,
                                                   local_device)
from ascend_nb.engine.accelerated.quantize import check_quantize
from ascend_nb.engine.base import Engine
from ascend_nb.errors import AscendNbError


class AcceleratedEngine(Engine):
    """Generation through :class:`CompactLlama`: static KV cache, per-device kernels, CUDA graphs for decode."""

    backend = "accelerated"

    def __init__(self, model: CompactLlama, quantize: str | None = None, graphs: bool = False,
                 tp: TensorParallel | None = None, **engine_kwargs):
        super().__init__(**engine_kwargs)
        self.model = model
        self.tp = tp  # this rank's tensor-parallel place, None on one device
        self.quantize = quantize
        self.graphs = graphs
        self._graph_by_batch: dict[int, DecodeGraph] = {}
        self._graph: DecodeGraph | None = None
        self._positions: torch.Tensor | None = None
        self._key_valid: torch.Tensor | None = None
        self._length = 0

    @classmethod
    def from_directory(cls, quantize: str | None = None, graphs: bool | None = None, kernels: Kernels | None = None,
                       tp: int = 1, trust_remote_code: bool = False, **engine_kwargs) -> AcceleratedEngine:
        """Load ``engine_kwargs["model_dir"]`` (Llama format) into the compact runtime.

        ``quantize="int8"``: weight-only int8 with per-channel scales for every linear layer and the
        head. ``graphs``: run decode steps as captured graphs over the whole static cache (CUDA
        graphs; torchair on NPU; torch.compile on CPU, about 30 s of compiling per batch size),
        default on for CUDA only; keep ``max_seq_len`` near what requests need when it is on.
        ``kernels``: override the per-device kernel choice (tests). Remote-code models must be
        converted to Llama format first. ``tp=N`` (under ``torchrun --nproc-per-node N``) splits every
        layer over N ranks; a ``tp`` that does not divide the heads is refused before anything loads.
        """
        device = engine_kwargs["device"]
        quantize = check_quantize(quantize)
        group = None
        if tp > 1:
            check_divisible(engine_kwargs["config"], tp)
            group = init_tensor_parallel(tp, device.type)
            device = engine_kwargs["device"] = local_device(device.type)
            graphs = False  # a captured decode step would replay stale collectives
        if graphs is None:
            graphs = device.type == "cuda"
        if graphs and not graphs_available(device):
            raise AscendNbError(f"decode graphs are not available on {device}: use graphs=False "
                                "(on NPU install torchair; on CPU install a C++ compiler such as g++)")
        model = CompactLlama.from_directory(
            engine_kwargs["model_dir"], engine_kwargs["config"], kernels or select_kernels(device),
            engine_kwargs["dtype"], device, engine_kwargs["max_seq_len"], quantize, group)
        return cls(model, quantize=quantize, graphs=graphs, tp=group, **engine_kwargs)

    def __repr__(self) -> str:
        extra = f", quantize={self.quantize!r}" if self.quantize else ""
        return super().__repr__()[:-1] + extra + f", kernels={self.model.kernels.name!r})"

    # -- backend hooks ---------------------------------------------------------------------------
    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, t = input_ids.shape
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        padded = not bool(attention_mask.all())
        self._key_valid = None
        mask = None
        if padded or self.graphs:
            # eager decoding attends only slots < length, so later slots may read valid; a graph
            # attends all slots and marks each one valid as it is written
            self._key_valid = torch.full((b, self.max_seq_len), not self.graphs, dtype=torch.bool, device=self.device)
            self._key_valid[:, :t] = attention_mask.bool()
        if padded:
            causal = torch.ones(t, t, dtype=torch.bool, device=self.device).tril()
            # a padding query attends to itself only, so no softmax row is empty
            mask = (causal & self._key_valid[:, None, None, :t]) | torch.eye(t, dtype=torch.bool, device=self.device)
        logits = self.model.prefill(input_ids, positions, mask)
        self._positions = positions[:, -1] + 1
        self._length = t
        self._graph = self._decode_graph(b) if self.graphs else None
        if self._graph is not None:
            self._graph.start(self._positions, self._length, self._key_valid)
        return logits

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._length >= self.max_seq_len:
            raise AscendNbError(f"the static KV cache is full (max_seq_len {self.max_seq_len}): "
                                "load with a larger max_seq_len or generate fewer tokens")
        if self._graph is not None:
            logits = self._graph.step(tokens)
        else:
            logits = self.model.decode(tokens, self._positions, self._length, self._length + 1, self._key_valid)
            self._positions = self._positions + 1
        self._length += 1
        return logits

    def _decode_graph(self, batch_size: int) -> DecodeGraph:
        if batch_size not in self._graph_by_batch:
            self._graph_by_batch[batch_size] = DecodeGraph(self.model, batch_size)
        return self._graph_by_batch[batch_size]

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        logits, hidden = self.model.forward(input_ids.to(self.device), output_hidden_states)
        return logits.float(), None if hidden is None else [h.float() for h in hidden]
