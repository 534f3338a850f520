#!/usr/bin/env bash
# The GPU figures of the README's "Fused seeds" (Performance), as one prepared run (< 6 min on
# an H100/H200): the fused CUDA-graph test, then aggregate samples/s of k = 1, 2, 4, 5, 8
# fused seeds of lci on CIFAR-shaped batches of 128 per seed, eager and graph, with the
# profiler's kernels per step.   bash benchmarks/gpu_fused_check.sh   (writes to $OUT)
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/gpu-fused-check}
mkdir -p "$OUT"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "== fused CUDA-graph test"
  if python -c "import pytest" 2>/dev/null; then
    timeout 150 python -m pytest -q tests/test_fused.py -k cuda_graph
  else
    echo "pytest not installed: skipped"
  fi
  echo "== fused throughput, lci, preact_resnet34"
  timeout 300 python benchmarks/fused_throughput.py --devices cuda --model preact_resnet34 \
      --method lci --members 1 2 4 5 8 --steps 10 --warmup 2 --repeats 3 --profile --json
  date -u
} 2>&1 | tee "$OUT/log"
