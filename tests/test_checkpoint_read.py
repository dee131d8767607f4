"""Checkpoint.read: a tensor read straight into memory of its own (no mapping of the file outlives it),
equal to what safetensors itself gives, whole, by rows or by columns, in the dtype asked for."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from ascend_nb.models.checkpoint import Checkpoint


def _mapped_from(tensor: torch.Tensor, path) -> bool:
    """Whether ``tensor``'s memory lies in a mapping of the file ``path`` (/proc/self/maps)."""
    pointer = tensor.untyped_storage().data_ptr()
    for line in open("/proc/self/maps"):
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= pointer < high:
            return len(fields) > 5 and fields[5] == str(path)
    return False


def test_read_equals_the_file_and_owns_its_memory(tiny_llama_dir):
    path = tiny_llama_dir / "model.safetensors"
    expected = load_file(path)
    checkpoint = Checkpoint(tiny_llama_dir)
    name = "model.layers.1.mlp.down_proj.weight"
    assert _mapped_from(checkpoint.get(name), path)  # what safetensors hands out stays a view of the file
    whole = checkpoint.read(name)
    assert torch.equal(whole, expected[name]) and not _mapped_from(whole, path)
    assert torch.equal(checkpoint.read(name, dim=0, start=3, stop=9), expected[name][3:9])
    assert torch.equal(checkpoint.read(name, dim=1, start=5, stop=20), expected[name][:, 5:20])
    assert checkpoint.read(name, dim=1, start=5, stop=20).is_contiguous()
    half = checkpoint.read(name, torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.equal(half, expected[name].to(torch.bfloat16))
    norm = checkpoint.read("model.norm.weight")
    assert torch.equal(norm, expected["model.norm.weight"]) and not _mapped_from(norm, path)


def test_a_loaded_accelerated_model_holds_nothing_of_the_file(tiny_llama_dir):
    """Every weight of a loaded model lives in memory of its own: no tensor keeps the file mapped."""
    import ascend_nb

    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated")
    model = engine.model
    linears = [getattr(layer, name) for layer in model.layers for name in ("qkv", "o", "gate_up", "down")]
    tensors = [model.embed, model.norm, *(linear.weight for linear in linears),
               *(t for layer in model.layers for t in (layer.input_norm, layer.post_norm))]
    assert not any(_mapped_from(t, tiny_llama_dir / "model.safetensors") for t in tensors)
