"""Refuse a broken model directory in one line before a model is built from it (every local backend).

Checked, in order: the ``checksums.sha256`` manifest (``verify``: True, the fast check keyed on size
and mtime; "full", every file hashed; False, skipped: see :mod:`ascend_nb.models.checksums`); remote
code asked for by ``config.json`` or ``tokenizer_config.json``; a Llama-family config that states its
sizes (so a bare ``{"model_type": "llama"}`` never becomes a default 7B); ``generation_config.json``;
the tokenizer; and the checkpoint itself: every shard opens (truncated, corrupt or unsafe-pickle
files are refused without unpickling anything), and its tensor names and shapes are exactly what
the config's model needs: a missing tensor would be randomly initialised, an extra one ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ascend_nb.models.checkpoint import Checkpoint
from ascend_nb.errors import AscendNbError
from ascend_nb.files import read_config_json
from ascend_nb.models.checksums import Verify, check_manifest

FAMILY = "llama"
REQUIRED_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "max_position_embeddings")
# buffers older transformers versions saved in Llama checkpoints; transformers itself skips them
IGNORED_EXTRA = (r"rotary_emb\.inv_freq$", r"(^|\.)position_ids$")
RESTORE = "restore it from the original download or re-convert the model"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def read_config(model_dir: Path) -> dict:
    """``config.json`` of a model directory, with clear errors for the usual breakages."""
    config = read_config_json(model_dir, "restore it from the original download or re-convert")
    if not any(next(model_dir.glob(p), None) for p in WEIGHT_PATTERNS):
        raise AscendNbError(f"no weights in {model_dir} (expected *.safetensors or pytorch_model*.bin): "
                            "copy or link the weight files there")
    return config


def validate_model_dir(model_dir: Path, raw_config: dict, trust_remote_code: bool = False, verify: Verify = True):
    """Check ``model_dir`` (see the module docstring); return its transformers config and tokenizer."""
    check_manifest(model_dir, verify)
    remote = _remote_code_files(model_dir, raw_config)
    if remote and not trust_remote_code:
        raise AscendNbError(f"{model_dir} needs remote code ({' and '.join(remote)} has auto_map): convert it with "
                            "`ascend-nb convert baichuan2|aquila SRC DST`, or pass trust_remote_code=True")
    if not remote:
        _check_llama_config(model_dir, raw_config)
    _check_generation_config(model_dir)
    config = _transformers_config(model_dir, trust_remote_code)
    tokenizer = _tokenizer(model_dir, trust_remote_code)
    if len(tokenizer) > config.vocab_size:
        raise AscendNbError(f"the tokenizer in {model_dir} has {len(tokenizer)} tokens but config.json's vocab_size is "
                            f"{config.vocab_size}: the tokenizer files belong to another model; {RESTORE}")
    check_tensors(model_dir, config, trust_remote_code)
    return config, tokenizer


def check_tensors(model_dir: Path, config, trust_remote_code: bool = False) -> None:
    """The checkpoint holds exactly the tensors ``config``'s model has, each with its shape."""
    checkpoint = Checkpoint(model_dir)  # opens every shard; a missing, truncated or unsafe one is refused here
    expected, optional, ignored_extra = _expected_shapes(config, trust_remote_code)
    found = set(checkpoint.names())
    missing = [name for name in expected if name not in found and name not in optional]
    if missing:
        raise AscendNbError(f"{len(missing)} tensor(s) the model needs are missing from the checkpoint in {model_dir} "
                            f"(first: {missing[0]}): the weights are incomplete or for another model; re-download "
                            "or re-convert them")
    extra = [name for name in checkpoint.names() if name not in expected and not ignored_extra.search(name)]
    if extra:
        raise AscendNbError(f"the checkpoint in {model_dir} holds {len(extra)} tensor(s) this model does not have "
                            f"(first: {extra[0]}): config.json describes another architecture or size than the weights")
    for name, shape in expected.items():
        if name in found and checkpoint.shape(name) != shape:
            raise AscendNbError(f"tensor {name} is {list(checkpoint.shape(name))} in the checkpoint but config.json "
                                f"needs {list(shape)}: config.json and the weights do not belong together; {RESTORE}")


def _remote_code_files(model_dir: Path, raw_config: dict) -> list[str]:
    """The config files that ask for code from the model directory (``auto_map``)."""
    files = ["config.json"] if raw_config.get("auto_map") else []
    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.is_file() and _json_object(tokenizer_config).get("auto_map"):
        files.append("tokenizer_config.json")
    return files


def _check_llama_config(model_dir: Path, raw_config: dict) -> None:
    model_type = raw_config.get("model_type")
    if model_type != FAMILY:
        what = f"a {model_type!r} model" if model_type else "a config.json without model_type"
        raise AscendNbError(f"{model_dir} holds {what}: ascend-nb runs Llama-family causal language models "
                            f"(model_type {FAMILY!r}); convert Aquila/Baichuan2 checkpoints with `ascend-nb convert`")
    absent = [key for key in REQUIRED_SIZES if not _is_int(raw_config.get(key))]
    if absent:
        raise AscendNbError(f"{model_dir / 'config.json'} does not state {', '.join(absent)}: a model of default size "
                            f"would be built instead of this one; {RESTORE}")
    sizes = {key: raw_config[key] for key in (*REQUIRED_SIZES, "num_key_value_heads", "head_dim")
             if raw_config.get(key) is not None}
    for key, value in sizes.items():
        if not _is_int(value) or value <= 0:
            raise AscendNbError(f"{model_dir / 'config.json'} has {key} {value!r}: sizes are positive whole numbers; "
                                f"{RESTORE}")
    heads, kv_heads = sizes["num_attention_heads"], sizes.get("num_key_value_heads", sizes["num_attention_heads"])
    if sizes["hidden_size"] % heads:
        raise AscendNbError(f"{model_dir / 'config.json'} has hidden_size {sizes['hidden_size']}, not a multiple of "
                            f"num_attention_heads {heads}: no model can be built from it; {RESTORE}")
    if heads % kv_heads:
        raise AscendNbError(f"{model_dir / 'config.json'} has num_attention_heads {heads}, not a multiple of "
                            f"num_key_value_heads {kv_heads}: no model can be built from it; {RESTORE}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_generation_config(model_dir: Path) -> None:
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return
    eos = _json_object(path).get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos]
    if eos is not None and not all(_is_int(i) for i in ids):
        raise AscendNbError(f"{path} is corrupt (eos_token_id {eos!r} is not a token id or a list of them): {RESTORE}")


def _json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AscendNbError(f"{path} is corrupt ({exc}): {RESTORE}") from exc
    if not isinstance(value, dict):
        raise AscendNbError(f"{path} is corrupt (not a JSON object): {RESTORE}")
    return value


def _transformers_config(model_dir: Path, trust_remote_code: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code, local_files_only=True)
    except (*_config_errors(), OSError) as exc:
        raise AscendNbError(f"{model_dir / 'config.json'} cannot be read as a model config ({_first_line(exc)}): "
                            f"{RESTORE}") from exc


def _tokenizer(model_dir: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception types for damaged files
        raise AscendNbError(f"the tokenizer in {model_dir} cannot be loaded ({_first_line(exc)}): restore "
                            "tokenizer.json / tokenizer_config.json (or tokenizer.model) from the original download "
                            "or re-convert the model") from exc


def _expected_shapes(config, trust_remote_code: bool) -> tuple[dict[str, tuple[int, ...]], set[str], re.Pattern]:
    """Tensor shapes of ``config``'s model (built on the meta device: no memory, no weights), the names
    that may be absent (tied to another tensor, or declared optional by the model class) and a pattern
    of checkpoint names to ignore (old buffers, or declared ignorable by the model class)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (*_config_errors(), AttributeError, RuntimeError) as exc:
        raise AscendNbError(f"config.json does not describe a model transformers can build ({_first_line(exc)}): "
                            f"{RESTORE}") from exc
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    optional = set(getattr(model, "all_tied_weights_keys", None) or {})
    patterns = getattr(model, "_keys_to_ignore_on_load_missing", None) or ()
    optional |= {name for name in expected if any(re.search(p, name) for p in patterns)}
    ignored = (*IGNORED_EXTRA, *(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()))
    return expected, optional, re.compile("|".join(f"(?:{p})" for p in ignored))


def _config_errors() -> tuple[type[Exception], ...]:
    """What transformers raises for a config it cannot take (its configs are strict dataclasses since 5.x)."""
    from huggingface_hub.errors import StrictDataclassError

    return ValueError, TypeError, KeyError, ZeroDivisionError, StrictDataclassError


def _first_line(exc: Exception) -> str:
    """The first line of ``exc``'s message, or the line it introduces (``Validation error for field 'x':``)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    return lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]
