"""Tiny random checkpoints in the exact on-disk formats users download, for demos and tests.

- :func:`make_tiny_baichuan2`: Baichuan2-7B-Chat's format: ``pytorch_model.bin`` (``torch.save``)
  with packed ``W_pack`` and a raw (un-normalized) ``lm_head``, ``BaichuanForCausalLM`` config with
  ``auto_map``, ``BaichuanTokenizer`` config, a SentencePiece BPE ``tokenizer.model`` trained here
  (identity normalization, no dummy prefix, byte fallback, reserved user-defined pieces so the chat
  role ids 195/196 exist) and the chat ``generation_config.json``.
- :func:`make_tiny_aquila`: Aquila-7B's format: sharded ``.bin`` + index, ``AquilaForCausalLM`` config
  with ``auto_map``, a GPT2-style byte-level BPE tokenizer with 8 special tokens at the end of the
  vocabulary (bos = vocab - 2, eos = vocab - 1, as Aquila's 100006 / 100007).
- :func:`make_tiny_llama`: a plain transformers Llama directory (safetensors or ``.bin``) that
  ``ascend_nb.load`` can run directly.
- :func:`make_random_llama`: the same kind of directory at any size (the 0.8B shape of the benchmarks, a
  Llama-7B), written tensor by tensor into safetensors shards, with the tiny tokenizer or a copy of another
  model's (SmolLM2's, say).

Every builder is deterministic for a given ``seed``; at their default sizes they take well under a second.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

CORPUS = (
    "Baichuan 2 is a large language model trained on 2.6 trillion tokens.",
    "百川大模型是一个中英文双语的大语言模型，在权威的中文和英文评测上取得了很好的效果。",
    "The quick brown fox jumps over the lazy dog 12345 times.",
    "我们把权重转换成 Llama 格式，然后用 transformers 直接加载，不需要远程代码。",
    "    def forward(self, x):\n        return x * 2",
    "Ascend NPU 上运行 Aquila-7B 与 Baichuan2-7B-Chat，首字延迟和解码速度都要测量。",
    "Hello world! 你好，世界！ Numbers: 3.14159, 2718.",
    "北京是中国的首都，上海是中国最大的城市。The capital of France is Paris.",
    "A chat between a curious human and an artificial intelligence assistant.",
    "###Human: 你好###Assistant: 你好！有什么可以帮你的吗？",
)
RESERVED_PIECES = 200  # <reserved_3> .. <reserved_202>: ids 195 / 196 are Baichuan2's user / assistant
AQUILA_SPECIAL_TOKENS = ("<|endoftext|>", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>")


def train_sentencepiece(vocab_size: int, *, baichuan_style: bool) -> bytes:
    """A small SentencePiece BPE model: Baichuan2's settings, or Llama's (dummy prefix, no reserved pieces)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 10), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=not baichuan_style, allow_whitespace_only_pieces=True,
        user_defined_symbols=[f"<reserved_{i}>" for i in range(3, 3 + RESERVED_PIECES)] if baichuan_style else [],
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    return model.getvalue()


def _random_llama_weights(generator: torch.Generator, vocab: int, hidden: int, layers: int, heads: int,
                          kv_heads: int, intermediate: int, *, packed_qkv: bool,
                          dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
    """Llama-named random weights scaled so activations stay O(1), one tensor at a time (so a 7B-sized
    checkpoint is written without holding it); Baichuan2 packs q/k/v into W_pack. Weights come in
    ``dtype``, buffers in float32."""
    yield from ((name, tensor if name.endswith("inv_freq") else tensor.to(dtype))
                for name, tensor in _random_float32_weights(generator, vocab, hidden, layers, heads, kv_heads,
                                                            intermediate, packed_qkv))


def _random_float32_weights(generator: torch.Generator, vocab: int, hidden: int, layers: int, heads: int,
                            kv_heads: int, intermediate: int, packed_qkv: bool) -> Iterator[tuple[str, torch.Tensor]]:
    head_dim = hidden // heads

    def linear(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=generator) / math.sqrt(cols)

    def norm(size: int) -> torch.Tensor:
        return 1 + 0.2 * torch.randn(size, generator=generator)

    yield "model.embed_tokens.weight", torch.randn(vocab, hidden, generator=generator)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    for i in range(layers):
        p = f"model.layers.{i}."
        q, k, v = linear(hidden, hidden), linear(kv_heads * head_dim, hidden), linear(kv_heads * head_dim, hidden)
        if packed_qkv:
            yield p + "self_attn.W_pack.weight", torch.cat([q, k, v])
        else:
            yield from ((p + "self_attn.q_proj.weight", q), (p + "self_attn.k_proj.weight", k),
                        (p + "self_attn.v_proj.weight", v))
        del q, k, v
        yield p + "self_attn.o_proj.weight", linear(hidden, hidden)
        yield p + "self_attn.rotary_emb.inv_freq", inv_freq.clone()  # old modeling files saved this buffer
        yield p + "mlp.gate_proj.weight", linear(intermediate, hidden)
        yield p + "mlp.up_proj.weight", linear(intermediate, hidden)
        yield p + "mlp.down_proj.weight", linear(hidden, intermediate)
        yield p + "input_layernorm.weight", norm(hidden)
        yield p + "post_attention_layernorm.weight", norm(hidden)
    yield "model.norm.weight", norm(hidden)
    # rows of very different norms, so a converter that forgets Baichuan2's NormHead is caught
    row_scale = torch.exp(0.5 * torch.randn(vocab, 1, generator=generator))
    yield "lm_head.weight", linear(vocab, hidden) * row_scale


def save_bin_stream(tensors: Iterable[tuple[str, torch.Tensor]], directory: Path, shard_bytes: int) -> None:
    """``torch.save`` tensors as they come into ``pytorch_model-0000i-of-0000n.bin`` shards of about
    ``shard_bytes`` each, plus the index: one shard in memory at a time."""
    directory = Path(directory)
    shards: list[list[str]] = []
    part: dict[str, torch.Tensor] = {}
    total = 0

    def flush() -> None:
        torch.save(part, directory / f"part-{len(shards)}.bin")
        shards.append(list(part))
        part.clear()

    for name, tensor in tensors:
        part[name] = tensor
        total += tensor.numel() * tensor.element_size()
        if sum(t.numel() * t.element_size() for t in part.values()) >= shard_bytes:
            flush()
    if part:
        flush()
    weight_map = {}
    for i, names in enumerate(shards):
        file_name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        (directory / f"part-{i}.bin").rename(directory / file_name)
        weight_map.update(dict.fromkeys(names, file_name))
    _write_json(directory / "pytorch_model.bin.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def save_bin_shards(state: dict[str, torch.Tensor], directory: Path, shards: int = 1) -> None:
    """``torch.save`` a state dict as ``pytorch_model.bin`` or ``pytorch_model-0000i-of-0000n.bin`` + index."""
    if shards == 1:
        torch.save(state, directory / "pytorch_model.bin")
        return
    names = list(state)
    per_shard = math.ceil(len(names) / shards)
    weight_map = {}
    for i in range(shards):
        file_name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {name: state[name] for name in names[i * per_shard:(i + 1) * per_shard]}
        torch.save(part, directory / file_name)
        weight_map.update(dict.fromkeys(part, file_name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    _write_json(directory / "pytorch_model.bin.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def _save_weights(tensors: Iterable[tuple[str, torch.Tensor]], directory: Path, shards: int,
                  shard_bytes: int | None) -> None:
    if shard_bytes is not None:
        save_bin_stream(tensors, directory, shard_bytes)
    else:
        save_bin_shards(dict(tensors), directory, shards)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _shapes(hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int) -> dict:
    return {"hidden_size": hidden_size, "num_hidden_layers": num_layers, "num_attention_heads": num_heads,
            "intermediate_size": intermediate_size, "hidden_act": "silu", "rms_norm_eps": 1e-6,
            "initializer_range": 0.02, "use_cache": True, "tie_word_embeddings": False}


def make_tiny_baichuan2(directory: Path, *, seed: int = 0, dtype: torch.dtype = torch.float32, shards: int = 1,
                        hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                        intermediate_size: int = 128, vocab_size: int | None = None,
                        shard_bytes: int | None = None) -> Path:
    """Write a random Baichuan2-7B-Chat-format checkpoint into ``directory`` and return it: tiny by
    default; ``vocab_size`` (default: the tokenizer's) and the sizes make it as large as the real one,
    written ``shard_bytes`` at a time when given (else in ``shards`` files)."""
    import sentencepiece

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(train_sentencepiece(700, baichuan_style=True))
    vocab = vocab_size or sentencepiece.SentencePieceProcessor(model_file=str(directory / "tokenizer.model")).get_piece_size()
    generator = torch.Generator().manual_seed(seed)
    tensors = _random_llama_weights(generator, vocab, hidden_size, num_layers, num_heads, num_heads, intermediate_size,
                                    packed_qkv=True, dtype=dtype)
    _save_weights(tensors, directory, shards, shard_bytes)
    _write_json(directory / "config.json", {
        "_from_model_config": True, "architectures": ["BaichuanForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_baichuan.BaichuanConfig",
                     "AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM"},
        "tokenizer_class": "BaichuanTokenizer", "model_type": "baichuan", "vocab_size": vocab,
        "max_position_embeddings": 256, "model_max_length": 256, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "z_loss_weight": 0, "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.29.2",
        **_shapes(hidden_size, num_layers, num_heads, intermediate_size)})
    _write_json(directory / "generation_config.json", {
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "user_token_id": 195, "assistant_token_id": 196,
        "max_new_tokens": 2048, "temperature": 0.3, "top_k": 5, "top_p": 0.85, "repetition_penalty": 1.05,
        "do_sample": True, "transformers_version": "4.29.2"})
    special = {name: {"__type": "AddedToken", "content": text, "lstrip": False, "normalized": True, "rstrip": False,
                      "single_word": True} for name, text in (("bos_token", "<s>"), ("eos_token", "</s>"),
                                                              ("unk_token", "<unk>"), ("pad_token", "<unk>"))}
    _write_json(directory / "tokenizer_config.json", {
        "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaichuanTokenizer", None]},
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": 256, "sp_model_kwargs": {}, "tokenizer_class": "BaichuanTokenizer", "use_fast": False,
        **special})
    _write_json(directory / "special_tokens_map.json", {k: v["content"] for k, v in special.items()})
    return directory


def train_byte_level_bpe(vocab_size: int):
    """A GPT2-style byte-level BPE ``tokenizers.Tokenizer`` with Aquila's special tokens appended last."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 10, trainer)
    tokenizer.add_special_tokens(list(AQUILA_SPECIAL_TOKENS))
    return tokenizer


def make_tiny_aquila(directory: Path, *, seed: int = 0, dtype: torch.dtype = torch.float32, shards: int = 2,
                     hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                     intermediate_size: int = 128, vocab_size: int | None = None,
                     shard_bytes: int | None = None) -> Path:
    """Write a random Aquila-7B-format checkpoint into ``directory`` and return it: tiny by default;
    ``vocab_size`` (default: the tokenizer's) and the sizes make it as large as the real one, written
    ``shard_bytes`` at a time when given (else in ``shards`` files)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_byte_level_bpe(600)
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer.model.save(str(directory))  # vocab.json + merges.txt, as the download has them too,
    vocab_with_specials = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
    _write_json(directory / "vocab.json", dict(vocab_with_specials))  # with the special tokens at the end
    bos, eos = tokenizer.get_vocab_size() - 2, tokenizer.get_vocab_size() - 1
    vocab = vocab_size or tokenizer.get_vocab_size()
    generator = torch.Generator().manual_seed(seed)
    tensors = _random_llama_weights(generator, vocab, hidden_size, num_layers, num_heads, num_heads, intermediate_size,
                                    packed_qkv=False, dtype=dtype)
    _save_weights(tensors, directory, shards, shard_bytes)
    _write_json(directory / "config.json", {
        "architectures": ["AquilaForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_aquila.AquilaConfig",
                     "AutoModelForCausalLM": "modeling_aquila.AquilaForCausalLM"},
        "model_type": "aquila", "vocab_size": vocab, "max_position_embeddings": 256, "bos_token_id": bos,
        "eos_token_id": eos, "pad_token_id": 0, "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.31.0", **_shapes(hidden_size, num_layers, num_heads, intermediate_size)})
    _write_json(directory / "generation_config.json", {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": 0,
                                                       "transformers_version": "4.31.0"})
    _write_json(directory / "tokenizer_config.json", {
        "add_prefix_space": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<|endoftext|>",
        "model_max_length": 256, "tokenizer_class": "GPTNeoXTokenizer"})
    _write_json(directory / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<|endoftext|>"})
    return directory


CHATML_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                   "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tiny_llama_tokenizer(directory: Path):
    """The tiny SentencePiece Llama-style tokenizer (ChatML template, ``<|im_end|>`` as eos) saved into
    ``directory``; returns it."""
    from ascend_nb.convert.tokenizer_files import save_tokenizer, tokenizer_from_sentencepiece

    model_file = directory / "tokenizer.model"
    model_file.write_bytes(train_sentencepiece(500, baichuan_style=False))
    tokenizer = tokenizer_from_sentencepiece(model_file)
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    save_tokenizer(tokenizer, directory, bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>",
                   chat_template=CHATML_TEMPLATE, model_max_length=256)
    return tokenizer


def make_tiny_llama(directory: Path, *, seed: int = 0, weights: str = "safetensors", shards: int = 1,
                    dtype: torch.dtype = torch.float32, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                    num_kv_heads: int = 2, intermediate_size: int = 128) -> Path:
    """Write a tiny random transformers Llama directory (``weights``: safetensors or bin) and return it.

    It has a SentencePiece Llama-style tokenizer (with a ChatML template) and GQA, and loads with
    ``ascend_nb.load(directory)`` as it is; the ``bin`` variant is the input of ``convert safetensors``.
    """
    from transformers import LlamaConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_llama_tokenizer(directory)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=hidden_size,
                         intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, max_position_embeddings=256,
                         rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1,
                         eos_token_id=tokenizer.token_to_id("<|im_end|>"), pad_token_id=0)
    return write_random_llama(directory, config, seed=seed, dtype=dtype, weights=weights, shards=shards)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model")


def make_random_llama(directory: Path, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16, hidden_size: int = 64,
                      num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 128,
                      vocab_size: int | None = None, tie_word_embeddings: bool = False,
                      tokenizer_from: Path | None = None, max_position_embeddings: int = 2048,
                      max_shard_size: str | int = "5GB", progress: bool = False) -> Path:
    """Write a random transformers Llama directory of any size and return it: safetensors shards written one
    tensor at a time (so a 0.8B or 7B model never sits in memory whole), ``LlamaConfig``, generation config.

    The tokenizer files are copied from the model directory ``tokenizer_from`` (its ``config.json`` gives the
    bos/eos/pad ids and the vocabulary size), or, when None, the tiny SentencePiece tokenizer of
    :func:`make_tiny_llama`; ``vocab_size`` overrides the embedding rows (default: the tokenizer's).
    Values are :func:`make_tiny_baichuan2`'s kind (scaled so activations stay O(1)), seeded by ``seed``.
    """
    import shutil

    from transformers import GenerationConfig, LlamaConfig

    from ascend_nb.convert.shards import PlannedTensor, write_safetensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is not None:
        tokenizer_from = Path(tokenizer_from)
        for name in TOKENIZER_FILES:
            if (tokenizer_from / name).is_file():
                shutil.copy2(tokenizer_from / name, directory / name)
        source = json.loads((tokenizer_from / "config.json").read_text())
        ids = {key: source.get(key) for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
        vocab = vocab_size or source["vocab_size"]
    else:
        tokenizer = _tiny_llama_tokenizer(directory)
        ids = {"bos_token_id": 1, "eos_token_id": tokenizer.token_to_id("<|im_end|>"), "pad_token_id": 0}
        vocab = vocab_size or tokenizer.get_vocab_size()
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                         max_position_embeddings=max_position_embeddings, rms_norm_eps=1e-6,
                         tie_word_embeddings=tie_word_embeddings, **ids)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = dtype
    head_dim, kv_rows = hidden_size // num_heads, num_kv_heads * (hidden_size // num_heads)
    shapes = [("model.embed_tokens.weight", (vocab, hidden_size))]
    for i in range(num_layers):
        p = f"model.layers.{i}."
        shapes += [(p + "self_attn.q_proj.weight", (hidden_size, hidden_size)),
                   (p + "self_attn.k_proj.weight", (kv_rows, hidden_size)),
                   (p + "self_attn.v_proj.weight", (kv_rows, hidden_size)),
                   (p + "self_attn.o_proj.weight", (hidden_size, hidden_size)),
                   (p + "mlp.gate_proj.weight", (intermediate_size, hidden_size)),
                   (p + "mlp.up_proj.weight", (intermediate_size, hidden_size)),
                   (p + "mlp.down_proj.weight", (hidden_size, intermediate_size)),
                   (p + "input_layernorm.weight", (hidden_size,)),
                   (p + "post_attention_layernorm.weight", (hidden_size,))]
    shapes.append(("model.norm.weight", (hidden_size,)))
    if not tie_word_embeddings:
        shapes.append(("lm_head.weight", (vocab, hidden_size)))
    if head_dim * num_heads != hidden_size or num_heads % num_kv_heads:
        raise ValueError(f"hidden_size {hidden_size}, {num_heads} heads and {num_kv_heads} kv heads do not fit together")
    stream = (item for item in _random_llama_weights(torch.Generator().manual_seed(seed), vocab, hidden_size, num_layers,
                                                     num_heads, num_kv_heads, intermediate_size, packed_qkv=False,
                                                     dtype=dtype)
              if not item[0].endswith(".rotary_emb.inv_freq"))

    def next_tensor(name: str) -> torch.Tensor:  # the writer asks in plan order, which is the stream's order
        produced, tensor = next(stream)
        if produced != name:
            raise RuntimeError(f"random weights out of order: {produced} for {name}")
        return tensor

    planned = [PlannedTensor(name, shape, dtype, lambda name=name: next_tensor(name)) for name, shape in shapes]
    write_safetensors(directory, planned, max_shard_size, progress=progress)
    config.save_pretrained(directory)
    GenerationConfig(**{k: v for k, v in ids.items() if v is not None}).save_pretrained(directory)
    return directory


def write_random_llama(directory: Path, config, *, seed: int, dtype: torch.dtype = torch.float32,
                       weights: str = "safetensors", shards: int = 1) -> Path:
    """Write a random-weight ``LlamaForCausalLM`` of ``config`` (a ``LlamaConfig``) into ``directory``
    (``weights``: safetensors or bin, in ``shards`` files), seeded by ``seed`` without touching the
    caller's random state; the tokenizer files are the caller's."""
    from transformers import LlamaForCausalLM

    config.architectures = ["LlamaForCausalLM"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(dtype)
    if weights == "safetensors":
        model.save_pretrained(directory, max_shard_size=_shard_size(model, shards))
    elif weights == "bin":
        config.dtype = dtype
        config.save_pretrained(directory)
        model.generation_config.save_pretrained(directory)
        save_bin_shards({k: v.detach().clone() for k, v in model.state_dict().items()}, directory, shards)
    else:
        raise ValueError(f"weights must be 'safetensors' or 'bin', got {weights!r}")
    return Path(directory)


def _shard_size(model, shards: int) -> int:
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return math.ceil(total / shards) + 1
