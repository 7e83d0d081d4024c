#!/usr/bin/env bash
# Every GPU check in one go (under 5 minutes on a machine with a GPU): the gpu-marked tests, then
# the Titanic training on one GPU and on the CPU, and the lesson's 1000-epoch full-batch run on both.
# Run from the repository root after `make dev`:  bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())"
$PY -m pytest -m gpu -v -rs tests/test_gpu.py tests/test_environment.py
status=$?
work=$(mktemp -d)
$PY -m entry.prepare --out "$work/data" >/dev/null
run() {  # name, then entry.train flags
  local name=$1; shift
  local start=$(date +%s.%N)
  $PY -m entry.train --train "$work/data/train_data.npz" --val "$work/data/val_data.npz" \
      --test "$work/data/test_data.npz" --model_dir "$work/$name" --output_dir "$work/$name-out" "$@" >/dev/null 2>"$work/$name.err" \
    || { echo "$name failed:"; tail -5 "$work/$name.err"; status=1; return; }
  local end=$(date +%s.%N)
  $PY - "$work/$name/metrics.json" "$name" "$start" "$end" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<28} process {float(sys.argv[4]) - float(sys.argv[3]):6.1f} s  epochs {m['epochs_run']:>4}  "
      f"test_acc {m['test_acc']:.4f}  accelerator {m['accelerator']}")
PY
}
echo "| run | whole-process time | epochs | test accuracy | accelerator |"
# The lesson's full batch: a batch size at least the training split's rows (712) is one batch per epoch.
run defaults-gpu --accelerator gpu
run defaults-cpu --accelerator cpu
run lesson-1000-full-batch-gpu --accelerator gpu --batch_size 100000 --epochs 1000 --early_stopping false
run lesson-1000-full-batch-cpu --accelerator cpu --batch_size 100000 --epochs 1000 --early_stopping false
rm -rf "$work"
exit $status
