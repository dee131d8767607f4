"""make_random_llama: a Llama directory of any size written tensor by tensor, with another model's tokenizer."""

from __future__ import annotations

import json

import torch

from ascend_nb.convert.demo_checkpoints import make_random_llama, make_tiny_llama


def test_random_llama_borrows_a_tokenizer_and_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    donor = make_tiny_llama(tmp_path / "donor")
    model_dir = make_random_llama(tmp_path / "llama", tokenizer_from=donor, hidden_size=64, num_layers=3, num_heads=8,
                                  num_kv_heads=2, intermediate_size=96, tie_word_embeddings=True, max_shard_size="30KB")
    config, donor_config = (json.loads((d / "config.json").read_text()) for d in (model_dir, donor))
    assert config["vocab_size"] == donor_config["vocab_size"] and config["eos_token_id"] == donor_config["eos_token_id"]
    assert len(list(model_dir.glob("model-*.safetensors"))) > 2
    assert AutoTokenizer.from_pretrained(model_dir)("hello").input_ids == AutoTokenizer.from_pretrained(donor)("hello").input_ids
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert model.config.tie_word_embeddings and model.model.layers[0].self_attn.k_proj.weight.shape == (16, 64)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    again = make_random_llama(tmp_path / "again", tokenizer_from=donor, hidden_size=64, num_layers=3, num_heads=8,
                              num_kv_heads=2, intermediate_size=96, tie_word_embeddings=True)
    assert torch.equal(AutoModelForCausalLM.from_pretrained(again, dtype=torch.float32).model.layers[2].mlp.down_proj.weight,
                       model.model.layers[2].mlp.down_proj.weight)  # seeded: the same values however it is sharded
