#!/usr/bin/env bash
# The GPU measurements of the README's Performance section, as one prepared run (< 8 min on
# an H100/H200): the CUDA-graph tests as a script (no pytest needed), the step cost of ce and
# lci eager vs graph with the profile columns, and whole epochs of `lci train` on CIFAR-10-
# shaped data (solo and 1/2/4 packed). Needs only torch, torchvision, numpy, pyyaml, tqdm.
#   bash benchmarks/gpu_check.sh            # writes everything to $OUT (default /tmp/gpu-check)
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  python -c "import lci, lci.trainer, lci.cli, sys; bad=[m for m in sys.modules if m.split('.')[0] in ('ray','optuna','study','trainables')]; print('import lci pulls in:', bad or 'nothing from ray/optuna/study/trainables')"
  echo "== CUDA graph tests"
  timeout 150 python tests/test_graph_step.py
  echo "== step cost: eager vs graph, batch 128"
  timeout 180 python benchmarks/step_cost.py --device cuda --models preact_resnet34 \
      --methods ce lci lci:view+fused --graphs --steps 20 --warmup 3 --repeats 3 --json
  echo "== epoch time"
  timeout 330 python benchmarks/epoch_time.py --device cuda --epochs 2 --threads 2 \
      --methods ce lci --modes eager graph --packs 1 2 4 --pack-method lci --json
  echo "== step cost, larger batches (lci, graph vs eager)"
  timeout 60 python benchmarks/step_cost.py --device cuda --models preact_resnet34 \
      --methods lci --graphs --batch 512 --steps 10 --warmup 2 --repeats 2 --no-profile
  date -u
} 2>&1 | tee "$OUT/log"
