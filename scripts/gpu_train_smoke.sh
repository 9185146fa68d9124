#!/usr/bin/env bash
# `cpt train` end to end on one device with the composed ops and with the fused kernels plus
# recomputation: the embedded default config (sample corpus) on a small-10m model (head dim
# 32, which the flash kernel needs), same data and seed. Prints both loss curves' ends, the
# largest relative difference, and the peak memory of each run; exits non-zero when the
# fused run's loss strays more than TOL (default 0.02, bf16) from the composed run's.
#
# usage: scripts/gpu_train_smoke.sh [CPT_BINARY] [cuda|cpu]
#   CPT_BINARY: default target-cuda/gpu/cpt (built by scripts/cuda-toolkit.sh)
# Environment: STEPS (default 60), DTYPE (bf16 on cuda, f32 on cpu), OUT (runs/smoke), TOL.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cpt=${1:-$root/target-cuda/gpu/cpt}
device=${2:-cuda}
steps=${STEPS:-60}
out=${OUT:-$root/runs/smoke}
if [ "$device" = cuda ]; then dtype=${DTYPE:-bf16}; else dtype=${DTYPE:-f32}; fi
if [ "$device" = cuda ]; then
  # cpt links the CUDA 13 libraries that ship with PyTorch and the driver's libcuda.
  source "$root/scripts/cuda_libs.sh"
fi
rm -rf "$out"
common=(--config "$root/configs/tiny.yaml" --no-progress
  --set "model.path=$out/base" --set model.init.preset=small-10m --set model.init.vocab_size=4096
  --set "run.device=$device" --set "run.dtype=$dtype" --set train.max_tokens=null --set "train.max_steps=$steps"
  --set "checkpoint.every_steps=$steps" --set validation.every_steps=20 --set logging.every_steps=1)
"$cpt" train "${common[@]}" --set "run.out_dir=$out/composed"
"$cpt" train "${common[@]}" --set "run.out_dir=$out/fused" \
  --set kernels.mode=fused --set kernels.attention=flash --set kernels.recompute=true
python3 - "$out" "${TOL:-0.02}" <<'EOF'
import json, sys
out, tol = sys.argv[1], float(sys.argv[2])
def steps(run):
    rows = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    return [r for r in rows if "kind" not in r]
a, b = steps("composed"), steps("fused")
if len(a) != len(b):
    sys.exit(f"the runs logged {len(a)} and {len(b)} steps")
# A step skipped by the guard logs a null loss; such a step must be skipped in both runs.
if any((x["loss"] is None) != (y["loss"] is None) for x, y in zip(a, b)):
    sys.exit("a step was skipped in one run only")
worst = max((abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b) if x["loss"] is not None), default=0.0)
for name, rows in (("composed", a), ("fused+recompute", b)):
    peak = max(r.get("peak_mem_bytes", 0) for r in rows) / 2**30
    losses = [r["loss"] for r in rows if r["loss"] is not None]
    print(f"{name:16s} loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
          f"{sum(r['tokens_per_s'] for r in rows[1:]) / max(1, len(rows) - 1):.0f} tokens/s, peak {peak:.2f} GiB")
print(f"largest relative loss difference: {worst:.2e} (tolerance {tol})")
sys.exit(0 if worst <= tol else 1)
EOF
