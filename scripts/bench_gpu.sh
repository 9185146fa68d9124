#!/usr/bin/env bash
# Side-by-side training benchmark on one GPU, in one run: PyTorch (transformers
# LlamaForCausalLM, bf16 autocast, SDPA, fused AdamW; eager and torch.compile) against cpt
# (composed ops; fused kernels with either attention kernel; with per-layer recomputation),
# same shapes, sequence length and batch. Writes one JSON line per run and a Markdown table.
#
# usage: scripts/bench_gpu.sh [CPT_GPU_DIR]
#   CPT_GPU_DIR: folder with the stripped `gpu_train_step` built by
#                `scripts/cuda-toolkit.sh --tests` (default: target-cuda/gpu)
# env: SHAPES ("100m 1b"), SEQ_LEN (2048), STEPS (10), WARMUP (3),
#      BATCH_100M (8), BATCH_1B (4), OUT (bench-gpu.jsonl), SKIP_COMPILE (unset),
#      DEVICE (cuda; `cpu` with SHAPES=tiny is a smoke test of the script itself)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target-cuda/gpu}
shapes=${SHAPES:-"100m 1b"}
seq_len=${SEQ_LEN:-2048}
steps=${STEPS:-10}
warmup=${WARMUP:-3}
out=${OUT:-bench-gpu.jsonl}
log=${out%.jsonl}.log
: > "$out"
: > "$log"

# cpt links the CUDA 13 libraries that ship with PyTorch, and the driver's libcuda.
source "$root/scripts/cuda_libs.sh"
device=${DEVICE:-cuda}
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
fi

# Runs one benchmark; a failure (e.g. out of memory) is recorded and the next one runs.
run() {
  local label=$1; shift
  echo "== $label: $*" >> "$log"
  local line
  if line=$("$@" 2>>"$log" | tail -1) && [ -n "$line" ]; then
    echo "$line" | tee -a "$out"
  else
    echo "{\"impl\": \"$label\", \"failed\": true, \"see\": \"$log\"}" | tee -a "$out"
  fi
}

for shape in $shapes; do
  case $shape in
    100m) batch=${BATCH_100M:-8} ;;
    1b) batch=${BATCH_1B:-4} ;;
    *) batch=2 ;;
  esac
  common=(--shape "$shape" --seq-len "$seq_len" --batch "$batch" --steps "$steps" --warmup "$warmup" --device "$device")
  run "torch eager $shape" python3 "$root/scripts/bench_torch_train.py" "${common[@]}"
  if [ -z "${SKIP_COMPILE:-}" ]; then
    run "torch+compile $shape" python3 "$root/scripts/bench_torch_train.py" "${common[@]}" --compile
  fi
  run "cpt composed $shape" "$bin/gpu_train_step" "${common[@]}" --mode composed
  run "cpt fused flash $shape" "$bin/gpu_train_step" "${common[@]}" --mode fused --attention flash
  run "cpt fused blocked $shape" "$bin/gpu_train_step" "${common[@]}" --mode fused --attention blocked:256
  run "cpt fused blocked+recompute $shape" "$bin/gpu_train_step" "${common[@]}" --mode fused --attention blocked:256 --recompute
  run "cpt fused flash+recompute $shape" "$bin/gpu_train_step" "${common[@]}" --mode fused --attention flash --recompute
  run "cpt composed+recompute $shape" "$bin/gpu_train_step" "${common[@]}" --mode composed --recompute
done

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\n| impl | shape | batch x seq | tokens/s | MFU | peak GiB (alloc / device) |")
print("|---|---|---|---|---|---|")
for r in rows:
    if r.get("failed"):
        print(f"| {r['impl']} | | | failed (see log) | | |")
        continue
    peak = f"{r.get('peak_allocated_gib')} / {r.get('peak_device_used_gib')}"
    print(f"| {r['impl']} | {r['shape']} | {r['batch']} x {r['seq_len']} | {r['tokens_per_s']:.0f} | {100 * r['mfu']:.1f}% | {peak} |")
PY
