"""SmoothQuant for ``w8a8``: per-token int8 activations lose the most where a few input channels carry
outliers, so part of each input channel's range moves from the activations to the weights (``x / s`` and
``W * s``, the same product in exact arithmetic) before the weights are quantized, with

    s_j = max|x_j| ** ALPHA / max|W[:, j]| ** (1 - ALPHA)

measured on a short calibration text (``data/calibration/w8a8.txt``, English, code and Chinese) one layer
at a time while the model loads, and folded into what comes before each linear: the RMSNorm weights (q/k/v,
gate/up), the rows of v (o: one factor per kv channel, shared by the query heads of its group) and the rows
of up (down). What msModelSlim calls anti-outlier smoothing for Ascend W8A8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ascend_nb.engine.accelerated.kernels import Kernels
from ascend_nb.files import data_dir
from ascend_nb.models.dims import LlamaDims

ALPHA = 0.5
CALIBRATION_TEXT = "calibration/w8a8.txt"
CALIBRATION_TOKENS = 512
_TWIN = Kernels()


def calibration_ids(tokenizer, max_tokens: int = CALIBRATION_TOKENS) -> torch.Tensor:
    """The calibration text's token ids ``[T]`` (at most ``max_tokens``)."""
    text = (data_dir() / CALIBRATION_TEXT).read_text(encoding="utf-8")
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens])


def factors(act_max: torch.Tensor, weight_max: torch.Tensor) -> torch.Tensor:
    """The smoothing factor of each input channel (float32) from its activation and weight ranges."""
    return act_max.float().clamp(min=1e-5).pow(ALPHA) / weight_max.float().clamp(min=1e-5).pow(1 - ALPHA)


def _col_max(*weights: torch.Tensor) -> torch.Tensor:
    return torch.stack([w.float().abs().amax(0) for w in weights]).amax(0)


def smooth_layer(t: dict[str, torch.Tensor], h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 dims: LlamaDims) -> torch.Tensor:
    """Run one decoder layer's tensors ``t`` (``input_norm, q, k, v, o, post_norm, gate, up, down``, in the model
    dtype) on the calibration hidden states ``h`` ``[T, H]``, replace them in place by their smoothed twins and
    return the layer's output (computed before smoothing, so the next layer calibrates on the true states)."""
    eps, heads, kv_heads = dims.rms_norm_eps, dims.num_attention_heads, dims.num_key_value_heads
    x = _TWIN.rms_norm(h, t["input_norm"], eps)
    qkv = F.linear(x, torch.cat((t["q"], t["k"], t["v"])))[None]
    q, k, v = _TWIN.split_rotate(qkv, cos[None, None], sin[None, None], heads, kv_heads)
    attended = _TWIN.prefill_attention(q, k, v, None, dims.head_dim ** -0.5)
    attended = attended[0].transpose(0, 1).reshape(h.shape[0], -1)
    mid = h + F.linear(attended, t["o"])
    x2 = _TWIN.rms_norm(mid, t["post_norm"], eps)
    gate, up = F.linear(x2, t["gate"]), F.linear(x2, t["up"])
    act = F.silu(gate) * up
    out = mid + F.linear(act, t["down"])

    def scaled(weight: torch.Tensor, s: torch.Tensor, dim: int) -> torch.Tensor:
        shape = [1, 1]
        shape[dim] = -1
        return (weight.float() * s.view(shape)).to(weight.dtype)

    s = factors(x.abs().amax(0), _col_max(t["q"], t["k"], t["v"]))
    t["input_norm"] = (t["input_norm"].float() / s).to(t["input_norm"].dtype)
    for name in ("q", "k", "v"):
        t[name] = scaled(t[name], s, 1)
    # o: one factor per kv channel, as each v channel feeds the query heads of its group
    groups, d = heads // kv_heads, dims.head_dim
    o_act = attended.abs().amax(0).view(kv_heads, groups, d).amax(1)
    o_w = t["o"].float().abs().amax(0).view(kv_heads, groups, d).amax(1)
    s_kv = factors(o_act, o_w)
    t["v"] = scaled(t["v"], 1 / s_kv.reshape(-1), 0)
    t["o"] = scaled(t["o"], s_kv[:, None, :].expand(kv_heads, groups, d).reshape(-1), 1)
    s = factors(x2.abs().amax(0), _col_max(t["gate"], t["up"]))
    t["post_norm"] = (t["post_norm"].float() / s).to(t["post_norm"].dtype)
    t["gate"], t["up"] = scaled(t["gate"], s, 1), scaled(t["up"], s, 1)
    s = factors(act.abs().amax(0), _col_max(t["down"]))
    t["up"], t["down"] = scaled(t["up"], 1 / s, 0), scaled(t["down"], s, 1)
    return out
