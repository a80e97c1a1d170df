#!/usr/bin/env bash
# Every GPU figure the performance issue asks for, in one run (a few minutes on an H100/H200):
#   bash bench/gpu.sh            on a machine with CUDA, with the pack's dependencies importable
#   DRY=1 bash bench/gpu.sh      the same sequence on the CPU with tiny models (checks the script)
# The log goes to $OUT/gpu.log when OUT is set (the device tool brings that folder back), else to
# bench-gpu.log. Record the figures in docs/benchmarks.md with the device, date and versions.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
log=${OUT:-.}/$([ -n "${OUT:-}" ] && echo gpu.log || echo bench-gpu.log)
export PYTHONUNBUFFERED=1
if [ -n "${DRY:-}" ]; then
  # tiny models on 4 frames and 3 steps: the sequence and the log lines, in a minute
  size=(--device cpu --height 64 --width 128) tiny=(--tiny --frames 4) short=(--steps 3)
  render=(--device cpu --frames 4 --height 64 --width 128)
else
  size=(--device cuda) tiny=() short=() render=(--device cuda)
fi
failed=0
run() {
  echo "== $*" | tee -a "$log"
  "$PY" "$@" 2>&1 | tee -a "$log" || failed=1
}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  "$PY" -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__)"
} 2>&1 | tee -a "$log"
# cheapest first, so that a run stopped at its time limit still brings the most back
run bench/render.py "${render[@]}"
run bench/train.py "${size[@]}" "${tiny[@]}" --steps 6 "${short[@]}"
run bench/train.py "${size[@]}" "${tiny[@]}" --steps 6 "${short[@]}" --keep-from-flops none  # recompute everything
run bench/train.py "${size[@]}" "${tiny[@]}" --steps 6 "${short[@]}" --memory low
[ -z "${DRY:-}" ] && run bench/train.py --device cuda --steps 6 --height 320 --width 576
[ -z "${DRY:-}" ] && run bench/train.py --device cuda --steps 4 --memory fast  # ~50 GiB: 80 GB cards only
run bench/sample.py "${size[@]}" "${tiny[@]}" "${short[@]}"
run bench/sample.py "${size[@]}" "${tiny[@]}" "${short[@]}" --memory low --decode-chunk 2
if [ -n "${DRY:-}" ]; then
  run bench/workflow.py --device cpu --tiny --frames 4 --height 64 --width 128 --train-steps 3 --sample-steps 3
else
  run bench/workflow.py --device cuda
fi
exit $failed
