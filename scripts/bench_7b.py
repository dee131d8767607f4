"""The guides' models at their real size, on this machine: a 7B run anyone can repeat.

For each of Baichuan2-7B and Aquila-7B: random weights (seed 0) in the exact original format (Baichuan2:
``W_pack``, ``NormHead``, ``.bin`` shards; Aquila: q/k/v apart, its vocabulary size), converted with
``ascend-nb convert`` (``--no-verify``: a logits check would hold both 7B models at once), planned with
``ascend_nb.bench.plan``, then loaded on the accelerated backend in bf16 and in int8 and decoded. Every
step runs in a fresh process, so the peak memory it reports (``VmHWM``, with ``RssAnon`` and ``RssFile``
after the step) is its own. Prints one Markdown table for ``docs/benchmarks.md``::

    python scripts/bench_7b.py [--models baichuan2,aquila] [--workdir DIR] [--input-len 128] [--output-len 32]

About 30 GB of disk per model (the original and the converted copy; ``--keep`` keeps the originals).
llama.cpp on the same values is measured with ``../shared/peers/`` (not run here).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # the original configs' sizes (DESIGN.md section 2)
    "baichuan2": dict(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, vocab_size=125696),
    "aquila": dict(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, vocab_size=100008),
}
MAKERS = {"baichuan2": "make_tiny_baichuan2", "aquila": "make_tiny_aquila"}

STATUS = """
def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmHWM", "RssAnon", "RssFile")}
"""
MAKE = STATUS + """
import json, sys, time, torch
from ascend_nb.convert import demo_checkpoints
start = time.perf_counter()
getattr(demo_checkpoints, sys.argv[1])(sys.argv[2], dtype=torch.bfloat16, shard_bytes=2 * 10**9, **json.loads(sys.argv[3]))
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
ids = torch.randint(0, len(engine.tokenizer), (input_len,), generator=torch.Generator().manual_seed(0)).tolist()
timings = engine.generate(ids, max_new_tokens=output_len, ignore_eos=True).timings
print(json.dumps({"seconds": loaded, "kernels": engine.kernels, "ttft_ms": timings.ttft_ms,
                  "tpot_ms": timings.tpot_ms, **status()}))
"""


def step(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh Python with ``args``; its last stdout line as JSON."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"step failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(kind: str, workdir: Path, input_len: int, output_len: int, keep: bool, sizes: dict) -> list[dict]:
    from ascend_nb.bench.planner import plan
    from ascend_nb.bench.roofline_model import machine_bandwidth
    from ascend_nb.models.footprint import named_dims, weight_bytes

    original, converted = workdir / f"{kind}-7b-original", workdir / f"{kind}-7b-llama"
    rows = [{"model": kind, "step": "write original (random, bf16)",
             **step(MAKE, MAKERS[kind], str(original), json.dumps(sizes))}]
    rows.append({"model": kind, "step": "convert", **step(CONVERT, kind, str(original), str(converted))})
    if not keep:
        shutil.rmtree(original)
    bandwidth = machine_bandwidth("cpu")
    for quantize in ("", "int8"):
        planned = plan(converted, "cpu", "bfloat16", quantize=quantize or None, max_seq_len=input_len + output_len)
        row = {"model": kind, "step": f"load + decode {quantize or 'bf16'}",
               **step(DECODE, str(converted), quantize, str(input_len), str(output_len)),
               "plan_bytes": planned.total_bytes, "verdict": planned.verdict}
        floor_ms = weight_bytes(named_dims(converted)[1], "bfloat16", quantize or None) / (bandwidth.gbs * 1e9) * 1000
        row["pct_of_roofline"] = 100 * floor_ms / row["tpot_ms"]
        rows.append(row)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="baichuan2,aquila", help="comma-separated: baichuan2, aquila")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new one in /tmp)")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="keep the original checkpoints")
    parser.add_argument("--sizes", type=json.loads, default=None,
                        help="JSON sizes instead of the real ones (a quick rehearsal of the whole run)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ascend-nb-7b-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started, rows = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), []
    for kind in args.models.split(","):
        rows += bench(kind, workdir, args.input_len, args.output_len, args.keep, args.sizes or SIZES[kind])
        print(table(rows), flush=True)
    print(f"\nstarted {started}; {args.input_len} in / {args.output_len} out, batch 1; workdir {workdir}")


if __name__ == "__main__":
    main()
