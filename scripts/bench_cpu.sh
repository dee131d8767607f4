#!/usr/bin/env bash
# The CPU benchmark behind docs/benchmarks.md: ours vs transformers (`ascend-nb bench`, interleaved
# rounds in one process) and vs llama.cpp on the same weights (../shared/peers), alternating.
#   scripts/bench_cpu.sh PEER_DIR [PEER_AVX2_DIR]
# PEER_DIR holds a venv with llama-cpp-python (venv/) and smol.BF16.gguf / smol.Q8_0.gguf written by
# requant_gguf.py; PEER_AVX2_DIR/venv-avx2 an AVX2-only build for the quantized types (see the note
# in ../shared/peers/README.md). Run it on a quiet machine; it prints JSON lines and bench tables.
set -euo pipefail
cd "$(dirname "$0")/.."
peer=${1:?PEER_DIR}
peer_avx2=${2:-}
peers=$(cd ../shared/peers && pwd)
nb=.venv/bin/ascend-nb
grep -m1 "model name" /proc/cpuinfo
.venv/bin/python -c "from ascend_nb import device as d; c = d.cpu_features(); print(c.cpu_class, ' '.join(c.flags)); print('paths', d.runnable_kernel_paths('cpu'))"
.venv/bin/python -c "from ascend_nb.bench.roofline_model import measure_bandwidth; print('bandwidth GB/s', round(measure_bandwidth('cpu'), 1))" || true
paths=$(.venv/bin/python -c "from ascend_nb import device as d; print(','.join(p for p in d.runnable_kernel_paths('cpu') if p.endswith('-gemv') or p == 'cpu-onednn'))")
for round in 1 2; do
  "$peer/venv/bin/python" "$peers/llamacpp_bench.py" "$peer/smol.BF16.gguf" 128 64 5 || echo "llama.cpp BF16 failed"
  $nb bench --backend transformers,accelerated --kernels "$paths" --dtype bfloat16 --repeat 5 --json
  $nb bench --backend transformers,accelerated --kernels "$paths" --dtype bfloat16 --repeat 5 --graphs --json
  if [ -n "$peer_avx2" ]; then
    "$peer_avx2/venv-avx2/bin/python" "$peers/llamacpp_bench.py" "$peer/smol.Q8_0.gguf" 128 64 5 || echo "llama.cpp Q8_0 failed"
  fi
  $nb bench --backend transformers,accelerated --kernels "$paths" --dtype bfloat16 --quantize int8 --repeat 5 --json
  $nb bench --backend transformers,accelerated --kernels "$paths" --dtype bfloat16 --quantize int8 --repeat 5 --graphs --json
done
