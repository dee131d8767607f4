"""The reference backend: a Hugging Face transformers model run eagerly with a dynamic KV cache.

It plays the role the A100 run plays in the guides: the golden baseline the accelerated backend
and every precision comparison are measured against.
"""

from __future__ import annotations

import torch

from ascend_nb.engine.base import Engine
from ascend_nb.progress import transformers_bars_off


class TransformersEngine(Engine):
    """Generation through ``AutoModelForCausalLM`` with our own token loop (for exact timings)."""

    backend = "transformers"

    def __init__(self, model, **engine_kwargs):
        super().__init__(**engine_kwargs)
        self.model = model
        self._cache = None
        self._attention_mask: torch.Tensor | None = None
        self._next_position: torch.Tensor | None = None

    @classmethod
    def from_directory(cls, trust_remote_code: bool = False, **engine_kwargs) -> TransformersEngine:
        """Load the weights of ``engine_kwargs["model_dir"]`` onto its device in its dtype."""
        from transformers import AutoModelForCausalLM

        with transformers_bars_off():
            model = AutoModelForCausalLM.from_pretrained(
                engine_kwargs["model_dir"], dtype=engine_kwargs["dtype"], trust_remote_code=trust_remote_code,
                local_files_only=True)
        return cls(model.to(engine_kwargs["device"]).eval(), **engine_kwargs)

    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from transformers import DynamicCache

        self._cache = DynamicCache(config=self.model.config)
        self._attention_mask = attention_mask
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         cache=self._cache, use_cache=True, logits_to_keep=1)
        self._next_position = positions[:, -1:] + 1
        return out.logits[:, -1]

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self._attention_mask = torch.cat([self._attention_mask, self._attention_mask.new_ones(len(tokens), 1)], dim=1)
        out = self.model(input_ids=tokens[:, None], attention_mask=self._attention_mask,
                         position_ids=self._next_position, cache=self._cache, use_cache=True)
        self._next_position = self._next_position + 1
        return out.logits[:, -1]

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        out = self.model(input_ids=input_ids.to(self.device), output_hidden_states=output_hidden_states, use_cache=False)
        hidden = [h.float() for h in out.hidden_states] if output_hidden_states else None
        return out.logits.float(), hidden
