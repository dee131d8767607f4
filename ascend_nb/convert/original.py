"""A plain-PyTorch forward pass of the *original* architectures, read straight from the source weights.

This is the left-hand side of every conversion check. It needs no remote code and no transformers
model class: Baichuan2's packed ``W_pack`` is split inline and its ``NormHead`` row-normalized at
use, Aquila's attention logits are clamped to [-1024, 1024] as its modeling file does, and Llama /
GGUF checkpoints run the same decoder. It computes in float64 by default and streams one decoder
layer's weights at a time (the LM head in row chunks), so checking a 7B checkpoint needs little
more memory than the model being checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ascend_nb.errors import AscendNbError
from ascend_nb.models.dims import LlamaDims

FAMILIES = ("llama", "aquila", "baichuan2")
AQUILA_ATTENTION_CLAMP = 1024.0
HEAD_CHUNK_ROWS = 16384  # LM-head rows cast to the compute dtype at a time


class Original(NamedTuple):
    """What the reference forward needs to know about a Llama-family decoder: its family and its sizes."""

    family: str
    dims: LlamaDims

    @property
    def packed_qkv(self) -> bool:
        """Baichuan2 stores q, k and v as one ``W_pack`` matrix of ``3 * hidden`` rows."""
        return self.family == "baichuan2"

    @property
    def norm_head(self) -> bool:
        """Baichuan2's ``NormHead`` L2-normalizes each LM-head row before use."""
        return self.family == "baichuan2"

    @property
    def attention_clamp(self) -> float | None:
        return AQUILA_ATTENTION_CLAMP if self.family == "aquila" else None

    @classmethod
    def from_config(cls, config: dict, family: str) -> Original:
        """Read a (possibly original, remote-code) ``config.json`` dict."""
        if family not in FAMILIES:
            raise AscendNbError(f"no reference forward for family {family!r}: use one of {', '.join(FAMILIES)}")
        if config.get("hidden_act", "silu") != "silu":
            raise AscendNbError(f"hidden_act {config['hidden_act']!r} is not a Llama-family SiLU MLP")
        rope = config.get("rope_parameters") or {}
        scaling = config.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        if scaling:
            raise AscendNbError(f"rope scaling {scaling!r} is not supported by the reference forward "
                                "(only the default rotary embedding)")
        return cls(family, LlamaDims.from_config(config))


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _rotary(dims: LlamaDims, length: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / dims.rope_theta ** (torch.arange(0, dims.head_dim, 2, dtype=torch.float64, device=device) / dims.head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64, device=device), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


WeightGetter = Callable[[str], torch.Tensor]


@torch.inference_mode()
def original_logits(arch: Original, weight: WeightGetter, input_ids: torch.Tensor,
                     dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits ``[B, T, V]`` (in ``dtype``) of the original architecture for ``input_ids`` ``[B, T]``.

    ``weight(name)`` returns a source tensor by its original name (memory-mapped is fine).
    """
    def get(name: str) -> torch.Tensor:
        return weight(name).to(device=device, dtype=dtype)

    input_ids = input_ids.to(device)
    batch, length = input_ids.shape
    dims = arch.dims
    heads, kv_heads, head_dim = dims.num_attention_heads, dims.num_key_value_heads, dims.head_dim
    embed = weight("model.embed_tokens.weight")
    x = embed[input_ids.cpu()].to(device=device, dtype=dtype)
    cos, sin = _rotary(dims, length, dtype, device)
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()

    for layer in range(dims.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        h = _rms_norm(x, get(prefix + "input_layernorm.weight"), dims.rms_norm_eps)
        if arch.packed_qkv:
            q, k, v = (h @ get(prefix + "self_attn.W_pack.weight").T).split(dims.hidden_size, dim=-1)
        else:
            q, k, v = (h @ get(prefix + f"self_attn.{p}_proj.weight").T for p in "qkv")
        q = q.view(batch, length, heads, head_dim).transpose(1, 2)
        k = k.view(batch, length, kv_heads, head_dim).transpose(1, 2)
        v = v.view(batch, length, kv_heads, head_dim).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
        if arch.attention_clamp is not None:
            scores = scores.clamp(-arch.attention_clamp, arch.attention_clamp)
        scores = scores.masked_fill(~causal, float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, heads * head_dim)
        x = x + attended @ get(prefix + "self_attn.o_proj.weight").T
        h = _rms_norm(x, get(prefix + "post_attention_layernorm.weight"), dims.rms_norm_eps)
        gate, up = h @ get(prefix + "mlp.gate_proj.weight").T, h @ get(prefix + "mlp.up_proj.weight").T
        x = x + (F.silu(gate) * up) @ get(prefix + "mlp.down_proj.weight").T

    x = _rms_norm(x, get("model.norm.weight"), dims.rms_norm_eps)
    head = embed if dims.tie_word_embeddings else weight("lm_head.weight")
    logits = torch.empty(batch, length, head.shape[0], dtype=dtype, device=device)
    for start in range(0, head.shape[0], HEAD_CHUNK_ROWS):
        rows = head[start:start + HEAD_CHUNK_ROWS].to(device=device, dtype=dtype)
        if arch.norm_head:
            rows = F.normalize(rows, dim=-1)
        logits[..., start:start + rows.shape[0]] = x @ rows.T
    return logits
