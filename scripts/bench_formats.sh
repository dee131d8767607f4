#!/usr/bin/env bash
# Every format against llama.cpp on the same weights, alternating in one script (docs/benchmarks.md, issue 27):
# llama.cpp BF16 (native build), ours bf16, llama.cpp Q8_0, ours int8, ours w8a8, llama.cpp Q4_1 (the shipped
# file), ours int4; batch 1, 128 in / 64 out, 5 timed runs each, ROUNDS rounds (default 2).
#   scripts/bench_formats.sh PEER_DIR
# PEER_DIR holds venv/ (llama-cpp-python, native build), venv2/ (an AVX2-only build for the quantized types, where
# the native one crashes on them) and smol.BF16.gguf, smol.Q8_0.gguf, smol.Q4_1.gguf (../shared/peers/setup.sh).
# Run it on a quiet machine: two torch processes on 2 cores slow each other down.
set -euo pipefail
cd "$(dirname "$0")/.."
peer=${1:?PEER_DIR}
peers=$(cd ../shared/peers && pwd)
grep -m1 "model name" /proc/cpuinfo
llama() { echo "round $1 llama.cpp $3: $("$peer/$2/bin/python" "$peers/llamacpp_bench.py" "$peer/smol.$3.gguf" 128 64 5 | tail -1)"; }
ours() {
  echo "round $1 ours ${2:-bf16}: $(.venv/bin/ascend-nb bench --backend accelerated --dtype bfloat16 ${2:+--quantize $2} \
    --repeat 5 | grep accelerated | tail -1)"
}
for round in $(seq 1 "${ROUNDS:-2}"); do
  echo "round $round start $(date -u +%H:%M:%S)"
  llama "$round" venv BF16; ours "$round" ""; llama "$round" venv2 Q8_0; ours "$round" int8; ours "$round" w8a8
  llama "$round" venv2 Q4_1; ours "$round" int4
done
