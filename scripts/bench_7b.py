"""The guides' models at their real size, on this machine: a 7B run anyone can repeat, with llama.cpp beside it.

For each of Baichuan2-7B and Aquila-7B: random weights (seed 0) in the exact original format (Baichuan2:
``W_pack``, ``NormHead``, ``.bin`` shards; Aquila: q/k/v apart, its vocabulary size), converted with
``ascend-nb convert`` (``--no-verify``: a logits check would hold both 7B models at once). For ``llama-0.8b``
(the issue's 0.8B shape: hidden 2048, 16 layers, FFN 5632, 32 heads / 4 KV heads, tied embeddings, SmolLM2's
tokenizer and vocabulary): a random Llama written straight as safetensors. Then each is planned with
``ascend_nb.bench.plan``, loaded on the accelerated backend in bf16, int8, w8a8 and int4 and decoded; and the
same values are written as GGUF (BF16, Q8_0, Q4_1) and timed with llama.cpp (``llamacpp_bench.py`` of
``../shared/peers``, run by the peer virtualenvs that ``setup.sh`` builds: the native build for BF16, the
AVX2-only build ``venv2`` for the quantized types where it exists). Every step runs in a fresh process, so
the peak memory it reports (``VmHWM``, with ``RssAnon`` and ``RssFile`` after the step) is its own. Prints
one Markdown table for ``docs/benchmarks.md``::

    python scripts/bench_7b.py [--models baichuan2,aquila,llama-0.8b] [--workdir DIR] [--input-len 128]
        [--output-len 32] [--quantize bf16,int8,w8a8,int4] [--gguf BF16,Q8_0,Q4_1] [--peer DIR] [--keep]

Disk: a 7B model needs about 30 GB at once (the original and the converted copy; then the converted copy
and one GGUF); originals, GGUFs and converted copies are deleted once measured unless ``--keep``.

The GGUF files carry the converted model's tensors (q/k rows permuted to llama.cpp's rotary layout, norms in
F32) and a placeholder SentencePiece vocabulary of the same size (llama.cpp is fed token ids, so only the
size matters). They are written by this file itself, run by the peer's Python (``--write-gguf``, needs only
``numpy`` and ``gguf``), one tensor at a time and a block of rows at a time for the quantized types.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # the original configs' sizes (DESIGN.md section 2); llama-0.8b: issue 26's model
    "baichuan2": dict(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, vocab_size=125696),
    "aquila": dict(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, vocab_size=100008),
    "llama-0.8b": dict(hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=4, intermediate_size=5632,
                       tie_word_embeddings=True),
}
MAKERS = {"baichuan2": "make_tiny_baichuan2", "aquila": "make_tiny_aquila", "llama-0.8b": "make_random_llama"}
LABELS = {"baichuan2": "baichuan2-7b", "aquila": "aquila-7b", "llama-0.8b": "llama-0.8b"}
QUANTIZE = ("bf16", "int8", "w8a8", "int4")
GGUF_TYPES = ("BF16", "Q8_0", "Q4_1")
PEER = Path("~/.cache/ascend-nb-peers")
PEER_SCRIPTS = Path(__file__).resolve().parents[2] / "shared" / "peers"  # ../shared/peers beside the checkout

STATUS = """
def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmHWM", "RssAnon", "RssFile")}
"""
MAKE = STATUS + """
import inspect, json, sys, time, torch
from ascend_nb.convert import demo_checkpoints
start = time.perf_counter()
make = getattr(demo_checkpoints, sys.argv[1])
accepted = inspect.signature(make).parameters
options = {key: value for key, value in json.loads(sys.argv[3]).items() if key in accepted}
options.update({"max_shard_size" if "max_shard_size" in accepted else "shard_bytes": 2 * 10**9})
make(sys.argv[2], dtype=torch.bfloat16, **options)
print(json.dumps({"seconds": time.perf_counter() - start, **status()}))
"""
CONVERT = STATUS + """
import json, sys, time
from ascend_nb.cli import main
start = time.perf_counter()
code = main(["convert", sys.argv[1], sys.argv[2], sys.argv[3], "--no-verify", "--quiet", "--force"])
print(json.dumps({"seconds": time.perf_counter() - start, "exit": code, **status()}))
"""
DECODE = STATUS + """
import json, sys, time, torch
import ascend_nb
model_dir, quantize, input_len, output_len = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
engine = ascend_nb.load(model_dir, device="cpu", dtype="bfloat16", backend="accelerated", verify=False,
                        max_seq_len=input_len + output_len, quantize=quantize)
loaded = time.perf_counter() - start
vocab = min(len(engine.tokenizer), json.loads(open(f"{model_dir}/config.json").read())["vocab_size"])
ids = torch.randint(0, vocab, (input_len,), generator=torch.Generator().manual_seed(0)).tolist()
timings = engine.generate(ids, max_new_tokens=output_len, ignore_eos=True).timings
print(json.dumps({"seconds": loaded, "kernels": engine.kernels, "ttft_ms": timings.ttft_ms,
                  "tpot_ms": timings.tpot_ms, **status()}))
"""
LLAMACPP = STATUS + """
import contextlib, io, json, runpy, sys, time
script, args = sys.argv[1], sys.argv[2:]
sys.argv = [script, *args]
out, start = io.StringIO(), time.perf_counter()
with contextlib.redirect_stdout(out):
    runpy.run_path(script, run_name="__main__")
result = json.loads(out.getvalue().strip().splitlines()[-1])
print(json.dumps({"seconds": time.perf_counter() - start, "ttft_ms": result["ttft_ms"], "tpot_ms": result["tpot_ms"],
                  **status()}))
"""


def step(code: str, *args: str, python: str = sys.executable, fatal: bool = True) -> dict:
    """Run ``code`` in a fresh Python (``python``) with ``args``; its last stdout line as JSON. A failure ends the
    run, or with ``fatal=False`` comes back as ``{"failed": "exit N" or "signal N", "seconds": ...}``."""
    start = time.perf_counter()
    done = subprocess.run([python, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        if fatal:
            raise SystemExit(f"step failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        print(f"step failed ({how}), recorded in the table:\n{done.stderr[-1500:]}", file=sys.stderr, flush=True)
        return {"failed": how, "seconds": time.perf_counter() - start}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- GGUF, run by the peer's Python (numpy + gguf only: no torch, no ascend_nb) -----------------------------

GGUF_BLOCK = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
GGUF_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}
GGUF_FILE_TYPE = {"F32": 0, "BF16": 32, "Q8_0": 7, "Q4_1": 3}  # llama.cpp's general.file_type (LLAMA_FTYPE_*)
BLOCK_BYTES = 64 << 20  # float32 bytes converted and quantized at once


def gguf_name(name: str) -> str:
    """``model.layers.3.self_attn.q_proj.weight`` -> ``blk.3.attn_q.weight`` (the inverse of our GGUF reader's names)."""
    if name in GGUF_TOP:
        return GGUF_TOP[name]
    _, _, layer, rest = name.split(".", 3)
    return f"blk.{layer}.{GGUF_BLOCK[rest.removesuffix('.weight')]}.weight"


def safetensors_tensors(model_dir: Path) -> list[tuple[str, Path, int, str, list[int]]]:
    """``(name, file, data offset, dtype, shape)`` of every tensor of a safetensors model directory, in file order."""
    index = model_dir / "model.safetensors.index.json"
    files = (list(dict.fromkeys(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else ["model.safetensors"])
    found = []
    for file_name in files:
        path = model_dir / file_name
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length))
        entries = sorted((entry["data_offsets"][0], name, entry) for name, entry in header.items() if name != "__metadata__")
        found += [(name, path, 8 + length + start, entry["dtype"], entry["shape"]) for start, name, entry in entries]
    return found


def write_gguf(model_dir: Path, out: Path, kind: str) -> dict:
    """Write the safetensors Llama at ``model_dir`` as a llama.cpp GGUF of ``kind`` (BF16, Q8_0, Q4_1): every
    matrix in ``kind``, norms in F32, one tensor (a block of rows, for quantized types) in memory at a time.
    Returns the bytes a decode step reads (every tensor but the embedding, which is read whole only when tied)."""
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    config = json.loads((model_dir / "config.json").read_text())
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    kv_heads = config.get("num_key_value_heads") or heads
    rope = config.get("rope_parameters") or {}
    target = {"BF16": Q.BF16, "Q8_0": Q.Q8_0, "Q4_1": Q.Q4_1}[kind]
    tensors = [t for t in safetensors_tensors(model_dir) if not t[0].endswith("rotary_emb.inv_freq")]
    numpy_dtype = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(model_dir.name)
    writer.add_file_type(GGUF_FILE_TYPE[kind])
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config.get("head_dim") or hidden // heads)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    vocab = config["vocab_size"]
    writer.add_vocab_size(vocab)
    # a placeholder SentencePiece vocabulary of the model's size: unk, bos, eos, the 256 byte pieces, fillers
    if vocab < 259:
        raise SystemExit(f"vocabulary of {vocab} tokens: the GGUF placeholder vocabulary needs at least 259")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)),
                          *(f"\u2581t{i}" for i in range(vocab - 259))])
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(vocab - 259)])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * (vocab - 259))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)

    plans = []
    for name, path, offset, dtype, shape in tensors:
        rows, cols = (shape[0], int(np.prod(shape[1:]))) if len(shape) > 1 else (1, shape[0])
        out_type = Q.F32 if len(shape) == 1 else target
        block, type_size = gguf.GGML_QUANT_SIZES[out_type]
        if cols % block:
            raise SystemExit(f"{name}: {cols} columns are not a multiple of {out_type.name}'s block of {block}")
        nbytes = rows * cols // block * type_size
        writer.add_tensor_info(gguf_name(name), shape, np.dtype(np.float32), nbytes, raw_dtype=out_type)
        plans.append((name, path, offset, numpy_dtype[dtype], shape, rows, cols, out_type, nbytes))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    def as_float32(array):
        return (array.astype(np.uint32) << 16).view(np.float32) if array.dtype == np.uint16 else array.astype(np.float32)

    class Rows:
        """One tensor's bytes, produced a block of rows at a time when ``GGUFWriter.write_tensor_data`` writes it."""

        def __init__(self, plan):
            self.plan, self.nbytes = plan, plan[-1]

        def tofile(self, handle) -> None:
            name, path, offset, dtype, shape, rows, cols, out_type, _ = self.plan
            itemsize, target_name = np.dtype(dtype).itemsize, gguf_name(name)
            permute = heads if ".attn_q." in target_name else kv_heads if ".attn_k." in target_name else None
            step_rows = rows if permute else max(1, BLOCK_BYTES // (4 * cols))
            for start in range(0, rows, step_rows):
                count = min(step_rows, rows - start)
                part = np.fromfile(path, dtype=dtype, count=count * cols, offset=offset + start * cols * itemsize)
                part = part.reshape(count, cols)
                if permute:  # llama.cpp's rotary row order (convert_hf_to_gguf's permute)
                    part = part.reshape(permute, 2, count // permute // 2, cols).swapaxes(1, 2).reshape(count, cols)
                if out_type == Q.BF16 and dtype == np.uint16:
                    data = np.ascontiguousarray(part)  # the same bytes
                elif out_type == Q.F32:
                    data = as_float32(part)
                else:
                    data = quantize(as_float32(part), out_type)
                data.tofile(handle)

    for plan in plans:
        writer.write_tensor_data(Rows(plan))
    writer.close()
    tied = "lm_head.weight" not in {p[0] for p in plans}
    return {"read_bytes": sum(p[-1] for p in plans if tied or p[0] != "model.embed_tokens.weight"),
            "file_bytes": out.stat().st_size}


WRITE_GGUF = STATUS + """
import json, runpy, sys, time
from pathlib import Path
start = time.perf_counter()
result = runpy.run_path(sys.argv[1])["write_gguf"](Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
print(json.dumps({"seconds": time.perf_counter() - start, **result, **status()}))
"""


# --- the run -------------------------------------------------------------------------------------------------

def _has(venv: Path, *packages: str) -> bool:
    return all(list(venv.glob(f"lib/python*/site-packages/{package}/__init__.py")) for package in packages)


def peer_pythons(peer: Path, scripts: Path) -> dict | None:
    """The peer's Pythons (``native``: llama.cpp's native build and ``gguf``; ``quantized``: the AVX2-only build
    where it exists) and its ``llamacpp_bench.py``, or None (with a line why)."""
    native, avx2, bench_script = peer / "venv", peer / "venv2", scripts / "llamacpp_bench.py"
    why = (f"{native} has no llama_cpp and gguf" if not _has(native, "llama_cpp", "gguf")
           else f"{bench_script} is missing" if not bench_script.is_file() else None)
    if why:
        print(f"llama.cpp: skipped ({why}; build the peers with ../shared/peers/setup.sh, or pass --peer)", flush=True)
        return None
    quantized = avx2 if _has(avx2, "llama_cpp") else native
    return {"native": str(native / "bin" / "python"), "quantized": str(quantized / "bin" / "python"),
            "quantized_build": "AVX2 build" if quantized == avx2 else "native build", "bench": str(bench_script)}


def llama_cpp_rows(kind: str, model_dir: Path, workdir: Path, peers: dict, gguf_types: list[str], input_len: int,
                   output_len: int, repeats: int, keep: bool, bandwidth_gbs: float) -> list[dict]:
    rows = []
    for gguf_type in gguf_types:
        path = workdir / f"{LABELS[kind]}.{gguf_type}.gguf"
        written = step(WRITE_GGUF, str(Path(__file__).resolve()), str(model_dir), str(path), gguf_type,
                       python=peers["native"])
        rows.append({"model": kind, "step": f"write GGUF {gguf_type}", **written})
        quantized = gguf_type != "BF16"
        timed = step(LLAMACPP, peers["bench"], str(path), str(input_len), str(output_len), str(repeats),
                     python=peers["quantized" if quantized else "native"], fatal=False)
        build = f"llama.cpp {peers['quantized_build'] if quantized else 'native build'}"
        row = {"model": kind, "step": f"llama.cpp {gguf_type}", **timed,
               "kernels": build + (f": crashed ({timed['failed']})" if "failed" in timed else "")}
        if "tpot_ms" in row:
            row["pct_of_roofline"] = 100 * written["read_bytes"] / (bandwidth_gbs * 1e9) * 1000 / row["tpot_ms"]
        rows.append(row)
        if not keep:
            path.unlink()
    return rows


def bench(kind: str, workdir: Path, input_len: int, output_len: int, keep: bool, sizes: dict, quantize: list[str],
          peers: dict | None, gguf_types: list[str], repeats: int, llama_tokenizer: str | None) -> list[dict]:
    from ascend_nb.bench.planner import plan
    from ascend_nb.bench.roofline_model import machine_bandwidth
    from ascend_nb.models.footprint import named_dims, weight_bytes

    label = LABELS[kind]
    if kind == "llama-0.8b":
        converted = workdir / label
        options = {**sizes, "tokenizer_from": llama_tokenizer}
        if llama_tokenizer is not None:  # a real tokenizer's vocabulary is the model's (the loader checks)
            options.pop("vocab_size", None)
        rows = [{"model": kind, "step": "write (random, bf16 safetensors)",
                 **step(MAKE, MAKERS[kind], str(converted), json.dumps(options))}]
    else:
        original, converted = workdir / f"{label}-original", workdir / f"{label}-llama"
        rows = [{"model": kind, "step": "write original (random, bf16)",
                 **step(MAKE, MAKERS[kind], str(original), json.dumps(sizes))}]
        rows.append({"model": kind, "step": "convert", **step(CONVERT, kind, str(original), str(converted))})
        if not keep:
            shutil.rmtree(original)
    bandwidth = machine_bandwidth("cpu")
    for mode in quantize:
        quant = None if mode == "bf16" else mode
        planned = plan(converted, "cpu", "bfloat16", quantize=quant, max_seq_len=input_len + output_len)
        row = {"model": kind, "step": f"load + decode {mode}",
               **step(DECODE, str(converted), quant or "", str(input_len), str(output_len), fatal=False),
               "plan_bytes": planned.total_bytes, "verdict": planned.verdict}
        if "failed" in row:  # e.g. killed for memory: a finding, recorded (the plan's verdict beside it)
            row["kernels"] = f"failed ({row['failed']}); plan said {planned.verdict}"
        else:
            floor_ms = weight_bytes(named_dims(converted)[1], "bfloat16", quant) / (bandwidth.gbs * 1e9) * 1000
            row["pct_of_roofline"] = 100 * floor_ms / row["tpot_ms"]
        rows.append(row)
    if peers is not None and gguf_types:
        rows += llama_cpp_rows(kind, converted, workdir, peers, gguf_types, input_len, output_len, repeats, keep,
                               bandwidth.gbs)
    if not keep:
        shutil.rmtree(converted)
    return rows


def table(rows: list[dict]) -> str:
    """The rows as Markdown: GB for memory, ms for latency."""
    head = ("model", "step", "s", "peak GB (VmHWM)", "RssAnon GB", "RssFile GB", "plan GB", "kernels", "TTFT ms",
            "TPOT ms", "% of roofline")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        gb = lambda key: f"{r[key] / 1e9:.2f}" if key in r else ""  # noqa: E731
        ms = lambda key: f"{r[key]:.1f}" if key in r else ""  # noqa: E731
        lines.append("| " + " | ".join([r["model"], r["step"], f"{r['seconds']:.0f}", gb("VmHWM"), gb("RssAnon"),
                                        gb("RssFile"), gb("plan_bytes"), r.get("kernels", ""), ms("ttft_ms"),
                                        ms("tpot_ms"), ms("pct_of_roofline")]) + " |")
    return "\n".join(lines)


def choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    picked = [item for item in text.split(",") if item]
    unknown = [item for item in picked if item not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown[0]!r}: use {', '.join(allowed)}")
    return picked


def main() -> None:
    if sys.argv[1:2] == ["--write-gguf"]:  # run by the peer's Python: MODEL_DIR OUT TYPE
        print(json.dumps(write_gguf(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="baichuan2,aquila,llama-0.8b", help=f"comma-separated: {', '.join(SIZES)}")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new one in /tmp)")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--quantize", default=",".join(QUANTIZE), help=f"comma-separated: {', '.join(QUANTIZE)}")
    parser.add_argument("--gguf", default=",".join(GGUF_TYPES),
                        help=f"llama.cpp on GGUFs of these types, comma-separated: {', '.join(GGUF_TYPES)} ('' for none)")
    parser.add_argument("--peer", type=Path, default=PEER,
                        help="the llama.cpp peers' folder (venv, venv2) that ../shared/peers/setup.sh builds")
    parser.add_argument("--peer-scripts", type=Path, default=PEER_SCRIPTS, help="where llamacpp_bench.py is")
    parser.add_argument("--llamacpp-repeats", type=int, default=1, help="timed llama.cpp runs after one warm-up")
    parser.add_argument("--llama-tokenizer", default="smollm2",
                        help="llama-0.8b's tokenizer: smollm2 (the embedded model's), a model directory, or tiny")
    parser.add_argument("--keep", action="store_true", help="keep the originals, converted copies and GGUFs")
    parser.add_argument("--sizes", type=json.loads, default=None,
                        help="JSON sizes over the real ones (a quick rehearsal of the whole run)")
    args = parser.parse_args()
    kinds = choices(args.models, tuple(SIZES), "model")
    quantize, gguf_types = choices(args.quantize, QUANTIZE, "quantize"), choices(args.gguf, GGUF_TYPES, "GGUF type")
    peers = peer_pythons(args.peer.expanduser(), args.peer_scripts) if gguf_types else None
    llama_tokenizer = None
    if "llama-0.8b" in kinds and args.llama_tokenizer != "tiny":
        if args.llama_tokenizer == "smollm2":
            from ascend_nb.convert.embedded import ensure_embedded_model

            llama_tokenizer = str(ensure_embedded_model(progress=False))
        else:
            llama_tokenizer = str(Path(args.llama_tokenizer).expanduser().resolve())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ascend-nb-7b-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started, rows = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), []
    for kind in kinds:
        rows += bench(kind, workdir, args.input_len, args.output_len, args.keep, {**SIZES[kind], **(args.sizes or {})},
                      quantize, peers, gguf_types, args.llamacpp_repeats, llama_tokenizer)
        print(table(rows), flush=True)
    print(f"\nstarted {started}; {args.input_len} in / {args.output_len} out, batch 1, {os.cpu_count()} CPUs; "
          f"workdir {workdir}")


if __name__ == "__main__":
    main()
