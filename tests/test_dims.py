"""LlamaDims, the one statement of a Llama's sizes: from a config object or a config.json dict, split for tp."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig

from ascend_nb.errors import AscendNbError
from ascend_nb.models.dims import LlamaDims, model_dims

# hidden 64, ffn 128, 2 layers, 4 query heads and 2 KV heads of 16, vocab 100 (a config.json dict).
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100}


def test_a_config_object_and_its_json_dict_give_the_same_dims():
    config = LlamaConfig(**TINY, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    dims = LlamaDims.from_config(config)
    assert dims == LlamaDims.from_config(config.to_dict())
    assert (dims.head_dim, dims.rms_norm_eps, dims.rope_theta, dims.tie_word_embeddings,
            dims.max_position_embeddings) == (16, 1e-5, 500000.0, True, 256)


def test_defaults_of_a_bare_config_json():
    dims = LlamaDims.from_config({**TINY, "num_key_value_heads": None})
    assert (dims.num_key_value_heads, dims.head_dim, dims.rms_norm_eps, dims.rope_theta) == (4, 16, 1e-6, 10000.0)
    assert not dims.tie_word_embeddings and dims.max_position_embeddings is None
    assert LlamaDims.from_config({**TINY, "rope_theta": 1e6}).rope_theta == 1e6
    with pytest.raises(AscendNbError, match="cannot size this model: its config has no intermediate_size, vocab_size"):
        LlamaDims.from_config({k: v for k, v in TINY.items() if k not in ("intermediate_size", "vocab_size")})


def test_split_is_what_one_tensor_parallel_rank_holds():
    dims = LlamaDims.from_config(TINY)
    half = dims.split(2)
    assert (half.num_attention_heads, half.num_key_value_heads, half.intermediate_size) == (2, 1, 64)
    assert (half.hidden_size, half.head_dim, half.vocab_size, half.num_hidden_layers) == (64, 16, 100, 2)
    assert dims.split(1) is dims
    with pytest.raises(AscendNbError, match="--tp 4 does not divide the model's KV heads \\(2\\): use one of 1, 2"):
        dims.split(4)
    with pytest.raises(AscendNbError, match="tp must be >= 1"):
        dims.split(0)


def test_linear_shapes_by_hand():
    shapes = LlamaDims.from_config(TINY).linear_shapes()
    assert shapes[:7] == [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)]
    assert len(shapes) == 2 * 7 + 1 and shapes[-1] == (100, 64)


def test_model_dims_sources():
    dims = model_dims(TINY)
    assert (dims.head_dim, dims.num_key_value_heads) == (16, 2)
    assert model_dims({**TINY, "num_key_value_heads": None}).num_key_value_heads == 4
    assert isinstance(model_dims("baichuan2-7b-chat"), LlamaDims)
    with pytest.raises(AscendNbError, match="no known shape"):
        model_dims("gpt-5")
