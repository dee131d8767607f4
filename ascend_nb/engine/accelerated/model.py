"""A compact Llama-family forward: fused QKV and gate/up projections, RMSNorm, rotary embedding,
SDPA attention and a static KV cache preallocated for ``max_seq_len``.

Numerics follow transformers' ``LlamaForCausalLM`` (RMSNorm in float32, cos/sin cast to the model
dtype, logits in the model dtype) so greedy outputs match the reference backend. Every op goes
through a :class:`~ascend_nb.engine.accelerated.kernels.Kernels` object, chosen per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ascend_nb.models.checkpoint import Checkpoint
from ascend_nb.models.dims import LlamaDims
from ascend_nb.engine.accelerated.kernels import Kernels
from ascend_nb.errors import AscendNbError
from ascend_nb.parallel import TensorParallel
from ascend_nb.engine.accelerated.rotate import FoldedRows, Rotation
from ascend_nb.quant_formats import down_quantize, head_quantize, quant_format

NATIVE_DTYPES = (torch.float32, torch.bfloat16)  # activations the native CPU ops take
UNSUPPORTED_ROPE = ("dynamic", "longrope")  # their frequencies change with the sequence length


def check_supported(config) -> None:
    """Refuse, before any weight is read, a transformers config the compact runtime cannot run."""
    if getattr(config, "model_type", "llama") != "llama":
        raise AscendNbError(f"the accelerated backend runs Llama-family models, not {config.model_type!r}: "
                            "convert it to Llama format or use backend='transformers'")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise AscendNbError("the accelerated backend has no projection biases (config attention_bias/mlp_bias): "
                            "use backend='transformers'")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise AscendNbError(f"the accelerated backend supports hidden_act 'silu', not {config.hidden_act!r}: "
                            "use backend='transformers'")


def rope_tables(config, length: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[length, head_dim]`` as transformers computes them (float32, scaled, then cast)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type in UNSUPPORTED_ROPE:
        raise AscendNbError(f"rope_type {rope_type!r} is not supported by the accelerated backend: "
                            "use backend='transformers'")
    rotary = LlamaRotaryEmbedding(config)
    positions = torch.arange(length, dtype=torch.float32)
    freqs = positions[:, None] * rotary.inv_freq.float()[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    scale = rotary.attention_scaling
    return (emb.cos() * scale).to(device=device, dtype=dtype), (emb.sin() * scale).to(device=device, dtype=dtype)


class CheckpointRows:
    """A 2-D checkpoint tensor read a block of rows at a time: its ``shape``, ``dtype`` and ``device`` and row slices,
    all the quantizers take, so a quantized LM head never exists whole in the model dtype (1 GB at Baichuan2's
    vocabulary, which made a quantized 7B load peak that much above its plan)."""

    def __init__(self, checkpoint: Checkpoint, name: str, dtype: torch.dtype, device: torch.device):
        self.checkpoint, self.name, self.dtype, self.device = checkpoint, name, dtype, device
        self.shape = checkpoint.shape(name)

    def __getitem__(self, rows: slice) -> torch.Tensor:
        stop = self.shape[0] if rows.stop is None else min(rows.stop, self.shape[0])
        return self.checkpoint.read(self.name, self.dtype, 0, rows.start or 0, stop).to(self.device)


class AllReduced:
    """A row-parallel linear: this rank's partial product, summed over the tensor-parallel group."""

    def __init__(self, linear, tp: TensorParallel):
        self.linear, self.tp = linear, tp

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # the partial products stay float32 (the linear's out_dtype) until summed: one bf16
        # rounding of the sum, as on one device, instead of one per rank
        return self.tp.all_reduce(self.linear(x)).to(x.dtype)


@dataclass
class DecoderLayer:
    input_norm: torch.Tensor
    qkv: object  # a kernels linear: x -> [q | k | v]
    o: object
    post_norm: torch.Tensor
    gate_up: object  # x -> [gate | up]
    down: object


class CompactLlama:
    """Weights, rope tables and the static KV cache of one model on one device."""

    def __init__(self, dims: LlamaDims, layers: list[DecoderLayer], embed: torch.Tensor, norm: torch.Tensor,
                 lm_head, cos: torch.Tensor, sin: torch.Tensor, kernels: Kernels, max_seq_len: int,
                 rotation: Rotation | None = None, output_norm: torch.Tensor | None = None):
        """``rotation``: the residual stream runs in the basis ``h Q`` (``w8a8``, rotate.py), ``norm`` then weighs 1
        and ``output_norm`` is the checkpoint's final norm weight (for hidden states reported in the model's basis)."""
        self.dims, self.layers, self.embed, self.norm, self.lm_head = dims, layers, embed, norm, lm_head
        self.rotation, self.output_norm = rotation, output_norm
        self.cos, self.sin, self.kernels, self.max_seq_len = cos, sin, kernels, max_seq_len
        self.scale = dims.head_dim ** -0.5
        self.dtype, self.device = embed.dtype, embed.device
        self.fused_decode = kernels.fuses_decode_layers(layers, self.dtype)  # each decode layer one call
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []

    @classmethod
    def from_directory(cls, model_dir: Path, config, kernels: Kernels, dtype: torch.dtype, device: torch.device,
                       max_seq_len: int, quantize: str | None = None, tp: TensorParallel | None = None) -> CompactLlama:
        """Read the checkpoint, fuse q/k/v and gate/up, and build each linear with ``kernels``.

        With ``tp``, this rank reads only its heads and FFN slice (column-parallel q/k/v, gate/up;
        row-parallel o, down followed by an all-reduce); everything else is replicated. A format with
        ``rotated`` (``w8a8``) has its residual stream rotated as the layers load (rotate.py).
        """
        check_supported(config)
        full = LlamaDims.from_config(config)
        dims = full.split(tp.world_size) if tp else full
        checkpoint = Checkpoint(model_dir)

        def get(name: str, dim: int | None = None, units: int = 0, unit_size: int = 1) -> torch.Tensor:
            """The tensor, or under tp this rank's share of its ``units`` blocks of ``unit_size`` along ``dim``,
            read into memory of its own (no file mapping outlives the load)."""
            if tp is None or dim is None:
                return checkpoint.read(name, dtype).to(device)
            start, stop = tp.part(units)
            return checkpoint.read(name, dtype, dim, start * unit_size, stop * unit_size).to(device)

        def fused(*weights: torch.Tensor):
            return kernels.linear(torch.cat(weights).contiguous(), quantize)

        def row_parallel(weight: torch.Tensor, fmt: str | None):
            if tp is None:
                return kernels.linear(weight, fmt)
            return AllReduced(kernels.linear(weight, fmt, out_dtype=torch.float32), tp)

        heads, kv_heads, head_dim = full.num_attention_heads, full.num_key_value_heads, full.head_dim
        ffn = full.intermediate_size
        embed = get("model.embed_tokens.weight")
        cos, sin = rope_tables(config, max_seq_len, dtype, device)
        fmt = quant_format(quantize)
        rotation = Rotation(full.hidden_size) if fmt is not None and fmt.rotated else None
        layers = []
        for i in range(dims.num_hidden_layers):
            p = f"model.layers.{i}."
            t = dict(input_norm=get(p + "input_layernorm.weight"), q=get(p + "self_attn.q_proj.weight", 0, heads, head_dim),
                     k=get(p + "self_attn.k_proj.weight", 0, kv_heads, head_dim),
                     v=get(p + "self_attn.v_proj.weight", 0, kv_heads, head_dim),
                     o=get(p + "self_attn.o_proj.weight", 1, heads, head_dim),
                     post_norm=get(p + "post_attention_layernorm.weight"),
                     gate=get(p + "mlp.gate_proj.weight", 0, ffn), up=get(p + "mlp.up_proj.weight", 0, ffn),
                     down=get(p + "mlp.down_proj.weight", 1, ffn))
            if rotation is not None:
                rotation.fold_layer(t)
            layers.append(DecoderLayer(input_norm=t["input_norm"], qkv=fused(t["q"], t["k"], t["v"]),
                                       o=row_parallel(t["o"], quantize), post_norm=t["post_norm"],
                                       gate_up=fused(t["gate"], t["up"]), down=row_parallel(t["down"], down_quantize(quantize))))
            del t
        tied = dims.tie_word_embeddings or "lm_head.weight" not in checkpoint.names()
        # float32 logits: a native GEMV head keeps its float32 sums, so near-ties are not decided by bf16 rounding
        head_format = head_quantize(quantize)
        if tied:
            head = embed
        else:
            head = CheckpointRows(checkpoint, "lm_head.weight", dtype, device) if head_format else get("lm_head.weight")
        norm = output_norm = get("model.norm.weight")
        if rotation is not None:  # the final norm moves into the head, read rotated a block at a time; then the embeddings
            head, norm = FoldedRows(head, output_norm, rotation), torch.ones_like(output_norm)
        lm_head = kernels.linear(head, head_format, out_dtype=torch.float32)
        if rotation is not None:
            rotation.rotate_rows_(embed)
        return cls(dims, layers, embed, norm, lm_head, cos, sin, kernels, max_seq_len, rotation, output_norm)

    # -- cache -----------------------------------------------------------------------------------
    def ensure_cache(self, batch_size: int) -> None:
        """Preallocate (once per larger batch) K and V ``[B, kv_heads, max_seq_len, head_dim]`` per layer."""
        if self.k_cache and self.k_cache[0].shape[0] >= batch_size:
            return
        d = self.dims
        shape = (batch_size, d.num_key_value_heads, self.max_seq_len, d.head_dim)
        self.k_cache = self.v_cache = []  # release the old cache before allocating the new one
        self.k_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(d.num_hidden_layers)]
        self.v_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(d.num_hidden_layers)]

    # -- forward ---------------------------------------------------------------------------------
    def _layers(self, h: torch.Tensor, positions: torch.Tensor, attend, collect: list | None = None) -> torch.Tensor:
        """Run every decoder layer on ``h`` ``[B, T, H]``; ``attend(i, qkv, cos, sin)`` turns layer ``i``'s
        fused q/k/v projection into the attention output ``[B, T, heads * D]`` (caching as it goes)."""
        kernels, d = self.kernels, self.dims
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # [B, 1, T, D]
        for i, layer in enumerate(self.layers):
            if collect is not None:
                collect.append(h)
            x = kernels.rms_norm(h, layer.input_norm, d.rms_norm_eps)
            h = h + layer.o(attend(i, layer.qkv(x), cos, sin))
            x = kernels.rms_norm(h, layer.post_norm, d.rms_norm_eps)
            gate, up = layer.gate_up(x).chunk(2, dim=-1)
            h = h + layer.down(F.silu(gate) * up)
        return kernels.rms_norm(h, self.norm, d.rms_norm_eps)

    def _heads(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """``q, k, v`` ``[B, heads, T, D]`` of a fused projection, q and k rotated."""
        return self.kernels.split_rotate(qkv, cos, sin, self.dims.num_attention_heads, self.dims.num_key_value_heads)

    @staticmethod
    def _merge(out: torch.Tensor) -> torch.Tensor:
        """``[B, heads, T, D]`` -> ``[B, T, heads * D]``."""
        b, heads, t, d = out.shape
        return out.transpose(1, 2).reshape(b, t, heads * d)

    def prefill(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Fill cache slots ``0..T-1`` from a (left-padded) prompt; return the last position's logits ``[B, V]``.

        ``mask`` ``[B, 1, T, T]`` (True: attend) holds the causal and padding rules; None: plain causal.
        """
        b, t = input_ids.shape
        if t > self.max_seq_len:
            raise AscendNbError(f"the prompt ({t} tokens) exceeds the static cache (max_seq_len {self.max_seq_len})")
        self.ensure_cache(b)

        def attend(i: int, qkv, cos, sin):
            q, k, v = self._heads(qkv, cos, sin)
            self.k_cache[i][:b, :, :t] = k
            self.v_cache[i][:b, :, :t] = v
            return self._merge(self.kernels.prefill_attention(q, k, v, mask, self.scale))

        h = self._layers(F.embedding(input_ids, self.embed), positions, attend)
        return self.lm_head(h[:, -1])

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, index: torch.Tensor, key_valid: torch.Tensor,
               span: int) -> torch.Tensor:
        """One static-shape decode step, the same code eager and captured as a graph: write each row's
        new K/V into cache slot ``index`` (a one-element device tensor), then attend the first ``span``
        slots where ``key_valid`` ``[B, max_seq_len]`` (slot ``index`` already marked) is True.

        Eager decoding passes ``span`` = the slots written so far; a graph passes ``max_seq_len``, so
        no shape or host value changes from step to step.
        """
        b = tokens.shape[0]
        if self.fused_decode and b <= self.kernels.max_fused_rows:
            return self.lm_head(self._fused_layers(tokens, positions, index, key_valid, span))

        def attend(i: int, qkv, cos, sin):
            return self.kernels.decode_step_attention(qkv, cos, sin, self.k_cache[i][:b], self.v_cache[i][:b], index,
                                                      key_valid, span, self.dims.num_attention_heads, self.scale)

        h = self._layers(F.embedding(tokens[:, None], self.embed), positions[:, None], attend)
        return self.lm_head(h[:, -1])

    def _fused_layers(self, tokens: torch.Tensor, positions: torch.Tensor, index: torch.Tensor, key_valid: torch.Tensor,
                      span: int, sequence: bool = False) -> torch.Tensor:
        """The final normed hidden states ``[B, H]`` of :meth:`decode` (or, with ``sequence``, of :meth:`verify`'s
        B consecutive positions of one sequence) with each layer as one :meth:`Kernels.decode_layer` call: the
        same ops on the same kernels, without the Python between them."""
        d = self.dims
        rows = 1 if sequence else tokens.shape[0]  # cache rows
        h, cos, sin = F.embedding(tokens, self.embed), self.cos[positions], self.sin[positions]
        for i, layer in enumerate(self.layers):
            h = self.kernels.decode_layer(layer, h, cos, sin, self.k_cache[i][:rows], self.v_cache[i][:rows], index,
                                          key_valid, span, d.num_attention_heads, d.rms_norm_eps, self.scale, sequence)
        return self.kernels.rms_norm(h, self.norm, d.rms_norm_eps)

    # -- speculative decoding: several new positions of one sequence per pass of the weights -----
    def verify(self, tokens: torch.Tensor, positions: torch.Tensor, start: int, key_valid: torch.Tensor) -> torch.Tensor:
        """Logits ``[T, V]`` (T <= ``native.MAX_ROWS``) of ``tokens`` ``[1, T]`` appended to one sequence at cache
        slots ``start .. start + T - 1`` (``positions`` ``[1, T]``; ``key_valid`` ``[1, max_seq_len]`` with those
        slots already marked), each position's logits bit for bit those of a plain :meth:`decode` step.

        The linears that give each row the same bits whatever the row count (the native GEMV: one chain of
        float32 sums per output, see ``csrc/gemv.h``) take all T rows in one pass of the weights; any other
        linear (MKL's float32 GEMV against its GEMM, oneDNN, a tensor-parallel one) runs one row at a time, as
        a decode step calls it. Attention runs once per position through the decode step's own kernel, with
        ``span`` ending at that position's slot, so it is causal among the new positions and each sees
        exactly the keys a plain step would. Where decode steps run each layer as one native call, so does this
        pass, over all T positions (``decode_layer`` with ``sequence``: the same kernels per row, no Python
        between them). Rejected positions are undone by the caller clearing their ``key_valid`` slots
        (:meth:`DecodeStep.rollback`); their K/V are overwritten later, never copied.
        """
        b, t = tokens.shape
        if b != 1:
            raise AscendNbError("speculative decoding runs one sequence at a time (batch 1)")
        if start + t > self.max_seq_len:
            raise AscendNbError(f"the static KV cache is full (max_seq_len {self.max_seq_len}): "
                                "load with a larger max_seq_len or generate fewer tokens")
        kernels, d = self.kernels, self.dims
        heads = d.num_attention_heads
        if self.fused_decode and t <= kernels.max_fused_rows:  # each layer one call, all T positions in it
            index = torch.tensor([start], device=self.device)
            return _rows(self.lm_head, self._fused_layers(tokens[0], positions[0], index, key_valid, start + 1,
                                                          sequence=True))
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # [1, 1, T, D]
        # per position: its cos, sin, slot and span (its own slot the last one it attends)
        each = [(cos[:, :, j:j + 1], sin[:, :, j:j + 1], torch.tensor([start + j], device=self.device), start + j + 1)
                for j in range(t)]

        def attend(i: int, qkv):  # the decode step's own attention kernel, once per position
            k_cache, v_cache = self.k_cache[i][:1], self.v_cache[i][:1]
            return torch.cat([kernels.decode_step_attention(qkv[:, j:j + 1], c, s, k_cache, v_cache, slot, key_valid, span,
                                                            heads, self.scale)
                              for j, (c, s, slot, span) in enumerate(each)], dim=1)

        h = F.embedding(tokens, self.embed)
        for i, layer in enumerate(self.layers):  # _layers' ops, in its order
            x = kernels.rms_norm(h, layer.input_norm, d.rms_norm_eps)
            h = h + _rows(layer.o, attend(i, _rows(layer.qkv, x)))
            x = kernels.rms_norm(h, layer.post_norm, d.rms_norm_eps)
            gate, up = _rows(layer.gate_up, x).chunk(2, dim=-1)
            h = h + _rows(layer.down, F.silu(gate) * up)
        h = kernels.rms_norm(h, self.norm, d.rms_norm_eps)
        return _rows(self.lm_head, h[0])

    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False,
                attentions: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Logits ``[B, T, V]`` of whole sequences (no padding, no cache) and, if asked, the hidden
        states as transformers returns them (embeddings, each layer's input, the final normed output).

        A list passed as ``attentions`` receives each layer's attention probabilities ``[B, heads, T, T]``
        (float32), computed from the same q and k with the same scale and causal mask as the kernel."""
        b, t = input_ids.shape
        if t > self.max_seq_len:
            raise AscendNbError(f"the input ({t} tokens) exceeds max_seq_len {self.max_seq_len}")
        positions = torch.arange(t, device=input_ids.device).expand(b, t)
        collect: list[torch.Tensor] | None = [] if output_hidden_states else None

        def attend(i: int, qkv, cos, sin):
            q, k, v = self._heads(qkv, cos, sin)
            if attentions is not None:
                keys = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # each kv head serves its query group
                scores = (q @ keys.transpose(-1, -2)) * self.scale
                causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
                attentions.append(scores.masked_fill(~causal, float("-inf")).softmax(-1, dtype=torch.float32))
            return self._merge(self.kernels.prefill_attention(q, k, v, None, self.scale))

        h = self._layers(F.embedding(input_ids, self.embed), positions, attend, collect)
        if collect is not None:
            collect.append(h)
            if self.rotation is not None:  # reported in the checkpoint's basis, the last one with its norm weight
                collect = [self.rotation.undo(x).to(x.dtype) for x in collect]
                collect[-1] = collect[-1] * self.output_norm
        return self.lm_head(h), collect

    def hidden_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits of hidden states ``[..., H]`` in the checkpoint's basis (as :meth:`forward` reports them)
        through the final norm and the LM head: what the last layer's output goes through."""
        h = hidden.to(device=self.device, dtype=self.dtype)
        if self.rotation is not None:
            h = self.rotation.apply(h).to(self.dtype)
        return self.lm_head(self.kernels.rms_norm(h, self.norm, self.dims.rms_norm_eps)).float()


def rows_at_once(linear, x: torch.Tensor) -> bool:
    """Whether ``linear`` gives each of ``x``'s rows the bits it gives that row alone: true of the native
    GEMV (float32 or bf16 activations, up to ``native.MAX_ROWS`` rows), assumed of nothing else."""
    from ascend_nb import native
    from ascend_nb.engine.accelerated.kernels import GemvLinear

    rows = x.numel() // x.shape[-1]
    return isinstance(linear, GemvLinear) and x.dtype in NATIVE_DTYPES and rows <= native.MAX_ROWS


def _rows(linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` with the bits of one call per row (``x`` ``[..., T, K]``): one call when
    :func:`rows_at_once`, else one call per row ``[..., 1, K]``, as a decode step makes it."""
    if x.shape[-2] == 1 or rows_at_once(linear, x):
        return linear(x)
    return torch.cat([linear(x[..., j:j + 1, :].contiguous()) for j in range(x.shape[-2])], dim=-2)
