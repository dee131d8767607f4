"""``backend="accelerated"``: the compact Llama runtime behind the shared :class:`Engine` interface."""

from __future__ import annotations

import torch

from ascend_nb.device import Placement
from ascend_nb.engine.accelerated.decode import DecodeStep
from ascend_nb.engine.accelerated.kernels import select_kernels
from ascend_nb.engine.accelerated.model import CompactLlama
from ascend_nb.quant_formats import check_quantize
from ascend_nb.engine.base import Engine
from ascend_nb.errors import AscendNbError
from ascend_nb.parallel import TensorParallel, check_divisible


class AcceleratedEngine(Engine):
    """Generation through :class:`CompactLlama`: static KV cache, the placement's kernel path, one
    static-shape decode step (eager or as a graph)."""

    backend = "accelerated"

    def __init__(self, model: CompactLlama, placement: Placement, quantize: str | None = None, **engine_kwargs):
        super().__init__(**engine_kwargs)
        self.model = model
        self.placement = placement
        self.quantize = quantize
        self._decode_steps: dict[int, DecodeStep] = {}
        self._step: DecodeStep | None = None

    @classmethod
    def from_directory(cls, placement: Placement, quantize: str | None = None, trust_remote_code: bool = False,
                       **engine_kwargs) -> AcceleratedEngine:
        """Load ``engine_kwargs["model_dir"]`` (Llama format) into the compact runtime, on ``placement``
        (device, dtype, kernel path, graph mode and tensor-parallel group, decided by
        :func:`ascend_nb.device.place`).

        ``quantize="int8"``: weight-only int8 with per-channel scales for every linear layer and the
        head. With graphs on (CUDA graphs; torchair on NPU; torch.compile on CPU, about 30 s of
        compiling per batch size) keep ``max_seq_len`` near what requests need. Remote-code models
        must be converted to Llama format first (``trust_remote_code=True`` is refused in one line).
        Under tensor parallel every layer is split over the group's ranks.
        """
        if trust_remote_code:
            raise AscendNbError("the accelerated backend runs Llama-format weights, not remote code: convert the model "
                                "with `ascend-nb convert baichuan2|aquila SRC DST`, or use backend='transformers'")
        quantize = check_quantize(quantize)
        if placement.tp is not None:
            check_divisible(engine_kwargs["config"], placement.tp.world_size)
        model = CompactLlama.from_directory(
            engine_kwargs["model_dir"], engine_kwargs["config"], select_kernels(placement),
            placement.dtype, placement.device, engine_kwargs["max_seq_len"], quantize, placement.tp)
        return cls(model, placement, quantize=quantize, **engine_kwargs)

    @property
    def kernels(self) -> str:
        """The kernel path this engine runs (a name of :data:`ascend_nb.device.KERNEL_PATHS`)."""
        return self.placement.kernels

    @property
    def graphs(self) -> str | None:
        return self.placement.graphs

    @property
    def tp(self) -> TensorParallel | None:
        """This rank's tensor-parallel place, None on one device."""
        return self.placement.tp

    def __repr__(self) -> str:
        extra = f", quantize={self.quantize!r}" if self.quantize else ""
        graphs = f", graphs={self.graphs!r}" if self.graphs else ""
        return super().__repr__()[:-1] + extra + f", kernels={self.kernels!r}{graphs})"

    # -- backend hooks ---------------------------------------------------------------------------
    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, t = input_ids.shape
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        key_valid = torch.zeros((b, self.max_seq_len), dtype=torch.bool, device=self.device)
        key_valid[:, :t] = attention_mask.bool()
        mask = None
        if not bool(attention_mask.all()):
            causal = torch.ones(t, t, dtype=torch.bool, device=self.device).tril()
            # a padding query attends to itself only, so no softmax row is empty
            mask = (causal & key_valid[:, None, None, :t]) | torch.eye(t, dtype=torch.bool, device=self.device)
        logits = self.model.prefill(input_ids, positions, mask)
        if b not in self._decode_steps:
            self._decode_steps[b] = DecodeStep(self.model, b, self.graphs)
        self._step = self._decode_steps[b]
        self._step.start(positions[:, -1] + 1, t, key_valid)
        return logits

    def _speculative_steps(self, prompts, params, stop_event, live_text):
        from ascend_nb.engine.speculative import speculative_steps

        return speculative_steps(self, prompts, params, stop_event, live_text)

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._step.length >= self.max_seq_len:
            raise AscendNbError(f"the static KV cache is full (max_seq_len {self.max_seq_len}): "
                                "load with a larger max_seq_len or generate fewer tokens")
        return self._step.step(tokens)

    # -- speculative decoding (batch 1; ascend_nb.engine.speculative drives these) -----------------
    supports_speculative = True

    def _verify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` ``[T]`` to the one sequence in one pass of the weights; logits ``[T, V]``."""
        if self._step.length + tokens.shape[0] > self.max_seq_len:
            raise AscendNbError(f"the static KV cache is full (max_seq_len {self.max_seq_len}): "
                                "load with a larger max_seq_len or generate fewer tokens")
        return self._step.verify(tokens)

    def _rollback(self, count: int) -> None:
        """Drop the last ``count`` cached tokens (rejected drafts): a key-mask and index update."""
        self._step.rollback(count)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        logits, hidden = self.model.forward(input_ids.to(self.device), output_hidden_states)
        return logits.float(), None if hidden is None else [h.float() for h in hidden]
