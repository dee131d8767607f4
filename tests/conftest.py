"""Shared fixtures: the embedded model (prepared once per machine) and a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest

import ascend_nb  # noqa: F401  (sets TORCH_DEVICE_BACKEND_AUTOLOAD / HF_HUB_OFFLINE before torch loads)
from ascend_nb.convert.embedded import ensure_embedded_model
from tests.tiny_checkpoints import random_llama


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    return ensure_embedded_model(progress=False)


@pytest.fixture(scope="session")
def embedded_engine(embedded_model_dir):
    """The embedded SmolLM2-135M on CPU in float32 (the reference every slow test shares)."""
    return ascend_nb.load("smollm2-135m-instruct", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A tiny random-weight Llama (GQA, untied head) with the embedded model's real tokenizer."""
    return random_llama(tmp_path_factory.mktemp("tiny-llama"), embedded_model_dir, seed=0, hidden_size=64,
                        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False)


@pytest.fixture(scope="session")
def tiny_engine(tiny_llama_dir):
    return ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32")
