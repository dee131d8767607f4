"""The sizes of a Llama-family decoder, in transformers' config names, read once from a config.

Every part that needs a model's sizes (the accelerated runtime, the reference forward, the memory
footprint, the roofline) reads them here: :meth:`LlamaDims.from_config` is where a missing key is
refused and where the defaults live.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ascend_nb.errors import AscendNbError
from ascend_nb.models.registry import MODELS
from ascend_nb.parallel import check_divisible

SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


@dataclass(frozen=True)
class LlamaDims:
    """The sizes of a Llama-family decoder (the names of its transformers config)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool  # the LM head is the embedding (stored once)
    max_position_embeddings: int | None

    @classmethod
    def from_config(cls, config) -> LlamaDims:
        """From a transformers config object or a ``config.json`` dict. KV heads default to the
        heads, ``head_dim`` to hidden / heads, ``rms_norm_eps`` to 1e-6 and ``rope_theta`` (from
        ``rope_parameters``, else the top level) to 10000."""
        def get(key: str, default=None):
            value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
            return default if value is None else value

        missing = [key for key in SIZE_KEYS if get(key) is None]
        if missing:
            raise AscendNbError(f"cannot size this model: its config has no {', '.join(missing)}")
        heads, hidden = get("num_attention_heads"), get("hidden_size")
        rope = get("rope_parameters", {})
        return cls(hidden_size=hidden, intermediate_size=get("intermediate_size"),
                   num_hidden_layers=get("num_hidden_layers"), num_attention_heads=heads,
                   num_key_value_heads=get("num_key_value_heads", heads), head_dim=get("head_dim", hidden // heads),
                   vocab_size=get("vocab_size"), rms_norm_eps=get("rms_norm_eps", 1e-6),
                   rope_theta=float(rope.get("rope_theta", get("rope_theta", 10000.0))),
                   tie_word_embeddings=bool(get("tie_word_embeddings", False)),
                   max_position_embeddings=get("max_position_embeddings"))

    def split(self, parts: int) -> LlamaDims:
        """What one of ``parts`` tensor-parallel ranks holds: its heads and FFN slice (the rest is replicated)."""
        if parts < 1:
            raise AscendNbError(f"tp must be >= 1, got {parts}")
        if parts == 1:
            return self
        check_divisible(self, parts)
        return replace(self, num_attention_heads=self.num_attention_heads // parts,
                       num_key_value_heads=self.num_key_value_heads // parts,
                       intermediate_size=self.intermediate_size // parts)

    def linear_shapes(self) -> list[tuple[int, int]]:
        """``(out_features, in_features)`` of every linear layer (q, k, v, o, gate, up, down per layer; the LM head)."""
        q_dim = self.num_attention_heads * self.head_dim
        kv_dim = self.num_key_value_heads * self.head_dim
        per_layer = [(q_dim, self.hidden_size), (kv_dim, self.hidden_size), (kv_dim, self.hidden_size),
                     (self.hidden_size, q_dim), (self.intermediate_size, self.hidden_size),
                     (self.intermediate_size, self.hidden_size), (self.hidden_size, self.intermediate_size)]
        return per_layer * self.num_hidden_layers + [(self.vocab_size, self.hidden_size)]


# The registry's models (their config.json sizes) and the peers' Llama-2-7B.
KNOWN_DIMS = {
    **{name: LlamaDims.from_config(spec.sizes) for name, spec in MODELS.items() if spec.sizes},
    "llama-2-7b": LlamaDims.from_config(dict(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, head_dim=128, vocab_size=32000, rms_norm_eps=1e-5, max_position_embeddings=4096)),
}


def model_dims(model) -> LlamaDims:
    """:class:`LlamaDims` of an engine, a transformers config, a config dict or a known model name."""
    if isinstance(model, LlamaDims):
        return model
    if isinstance(model, str):
        if model not in KNOWN_DIMS:
            raise AscendNbError(f"no known shape for model {model!r}: pass an engine or its config "
                                f"(known names: {', '.join(KNOWN_DIMS)})")
        return KNOWN_DIMS[model]
    return LlamaDims.from_config(getattr(model, "config", model))
