#!/usr/bin/env bash
# Peak memory of one cpt training step in steady state (after a warm-up step has created the
# AdamW moments, which then stay alive through every backward) at TinyLlama-1.1B width
# (hidden 2048, 32/4 heads, vocab 32000), sequence length 2048, for a few layer counts and
# micro-batches, with and without recomputation; then a linear fit
# peak = static + layers * per_layer, extrapolated to 22 layers (the whole model).
#
# On CPU the peak is the process's peak resident set; on a GPU the memory pool's peak. A CPU
# run allocates the same tensors with the same lifetimes, plus transient f32 host copies
# inside the fused ops' CPU versions and the allocator's slack, so it is an upper bound for
# the GPU peak of the same step, which adds only the CUDA context and cuBLAS workspaces.
#
# usage: scripts/memory_scaling.sh [BENCH_BINARY] [cpu|cuda]
#   BENCH_BINARY: the gpu_train_step bench (default: built with `cargo bench --no-run`)
# Environment: LAYERS (default "1 3"), BATCHES (default "1 2"), MODE (default fused),
#   LOG (the benchmark's stderr, default memory-scaling.log).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${1:-}
device=${2:-cpu}
if [ -z "$bench" ]; then
  (cd "$root" && cargo bench --bench gpu_train_step --no-run -q)
  bench=$(ls -t "$root"/target/release/deps/gpu_train_step-* | grep -v '\.d$' | head -1)
fi
layers=${LAYERS:-1 3}
batches=${BATCHES:-1 2}
mode=${MODE:-fused}
if [ "$device" = cuda ]; then
  # the CUDA 13 libraries that ship with PyTorch, and the driver's libcuda
  source "$root/scripts/cuda_libs.sh"
fi
out=$(mktemp)
log=${LOG:-memory-scaling.log}
: > "$log"
trap 'rm -f "$out"' EXIT
for b in $batches; do
  for l in $layers; do
    for rc in "" "--recompute"; do
      # A failing run (e.g. out of memory) is logged and the others still run.
      if ! line=$("$bench" --device "$device" --shape 1b --layers "$l" --seq-len 2048 --batch "$b" --steps 1 \
          --warmup 1 --mode "$mode" --dtype bf16 $rc 2>>"$log" | tail -1) || [ -z "$line" ]; then
        echo "failed: micro-batch $b, $l layers ${rc:-(no recompute)}; see $log" >&2
        continue
      fi
      echo "$line" >> "$out"
    done
  done
done
python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| micro-batch | layers | recompute | peak GiB | step s |")
print("|---|---|---|---|---|")
for r in rows:
    print(f"| {r['batch']} | {r['layers']} | {'yes' if 'recompute' in r['impl'] else 'no'} | {r['peak_allocated_gib']} | {r['step_s']:.1f} |")
print()
print("Linear fit per (micro-batch, recompute), extrapolated to 22 layers:")
groups = {}
for r in rows:
    if r.get('peak_allocated_gib') is not None:
        groups.setdefault((r['batch'], 'recompute' in r['impl']), []).append((r['layers'], r['peak_allocated_gib']))
for (b, rc), pts in sorted(groups.items()):
    if len({l for l, _ in pts}) < 2:
        continue
    (l0, p0), (l1, p1) = sorted(pts)[0], sorted(pts)[-1]
    per_layer = (p1 - p0) / (l1 - l0)
    static = p0 - l0 * per_layer
    print(f"- micro-batch {b}, recompute {'on' if rc else 'off'}: {static:.2f} GiB + {per_layer:.3f} GiB/layer"
          f" -> {static + 22 * per_layer:.1f} GiB at 22 layers")
EOF
rm -f "$out"
