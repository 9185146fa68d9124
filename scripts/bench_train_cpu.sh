#!/usr/bin/env bash
# CPU training throughput: `cpt train` next to a PyTorch/transformers training loop on the
# same model (the same config.json and weights), batch, sequence length, gradient
# accumulation, AdamW settings, thread count and token data, in one run.
#
# usage: scripts/bench_train_cpu.sh            (builds target/release/cpt if missing)
# env:   CPT=path/to/cpt  PYTHON=python3  KEEP=1 (keep the work directory)
#        TINY_STEPS=40 SMALL_STEPS=6 WARMUP=3 THREADS_TINY=1 THREADS_SMALL=$(nproc)
#
# Prints a markdown table: mean (median) step time and tokens/s over the steps after the
# first WARMUP, and cpt's tokens/s over torch's. Rows: preset threads micro_batch seq_len
# grad_accum. tiny runs on THREADS_TINY threads (default 1, cpt's default for models under
# 20M parameters; THREADS_TINY=2 gives both tools 2 threads), once without and once with
# gradient accumulation; small-100m on THREADS_SMALL (default all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_config.sh

PYTHON=${PYTHON:-python3}
TINY_STEPS=${TINY_STEPS:-40}
SMALL_STEPS=${SMALL_STEPS:-6}
WARMUP=${WARMUP:-3}
THREADS_TINY=${THREADS_TINY:-1}
THREADS_SMALL=${THREADS_SMALL:-$(nproc)}
if [[ -z "${CPT:-}" ]]; then
    CPT="${CARGO_TARGET_DIR:-target}/release/cpt"
    [[ -x "$CPT" ]] || cargo build --release --bin cpt
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d)
[[ -n "${KEEP:-}" ]] || trap 'rm -rf "$WORK"' EXIT
echo "work directory: $WORK" >&2

# Models: tiny with a BPE trained on the sample corpus; small-100m reuses that tokenizer
# with the preset's 32000-row vocabulary (extra rows are padding; compute is the preset's).
"$CPT" init --preset tiny --out "$WORK/tiny" --train-tokenizer corpus/sample/plain/*.txt --vocab-size 2048 >&2
"$CPT" init --preset small-100m --out "$WORK/small-100m" --tokenizer "$WORK/tiny" --vocab-size 32000 >&2

# A training config over the sample corpus; everything but the timing is switched off.
write_config() { # preset threads micro_batch seq_len grad_accum steps
    bench_config "$WORK/$1-ga$5.yaml" "$WORK/run-$1-ga$5" "$WORK/$1" "$2" "$3" "$4" "$5" "$6"
}

# mean step time and tokens/s of cpt from metrics.jsonl, steps after the warm-up
cpt_stats() { # metrics warmup
    "$PYTHON" scripts/cpt_step_stats.py "$1" "$2"
}

ROWS=()
run_row() { # preset threads micro_batch seq_len grad_accum steps
    local preset=$1 threads=$2 mb=$3 seq=$4 ga=$5 steps=$6
    write_config "$preset" "$threads" "$mb" "$seq" "$ga" "$steps"
    echo "== $preset: cpt train ($threads threads, micro_batch $mb, seq_len $seq, grad_accum $ga, $steps steps)" >&2
    RAYON_NUM_THREADS=$threads "$CPT" train --config "$WORK/$preset-ga$ga.yaml" --no-progress >&2
    local cpt_json torch_json
    cpt_json=$(cpt_stats "$WORK/run-$preset-ga$ga/metrics.jsonl" "$WARMUP")
    echo "cpt:   $cpt_json" >&2
    echo "== $preset: PyTorch" >&2
    torch_json=$(OMP_NUM_THREADS=$threads "$PYTHON" scripts/bench_train_torch.py --model "$WORK/$preset" \
        --shard "$WORK/data-cache/sample" --micro-batch "$mb" --seq-len "$seq" --grad-accum "$ga" \
        --steps "$steps" --warmup "$WARMUP" --threads "$threads")
    echo "torch: $torch_json" >&2
    ROWS+=("$preset|$threads|$mb|$seq|$ga|$cpt_json|$torch_json")
}

run_row tiny "$THREADS_TINY" 8 128 1 "$TINY_STEPS"
run_row tiny "$THREADS_TINY" 8 128 4 "$((TINY_STEPS / 2))"      # the same with gradient accumulation
run_row small-100m "$THREADS_SMALL" 2 256 1 "$SMALL_STEPS"

echo
echo "load average (1/5/15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PYTHON" - "${ROWS[@]}" <<'PY'
import json, sys
print("| preset | threads | micro_batch x seq_len x accum | cpt ms/step (median) | torch ms/step (median) | cpt tokens/s | torch tokens/s | cpt / torch (tokens/s) |")
print("|---|---|---|---|---|---|---|---|")
for row in sys.argv[1:]:
    preset, threads, mb, seq, ga, c, t = row.split("|")
    c, t = json.loads(c), json.loads(t)
    print(f"| {preset} | {threads} | {mb} x {seq} x {ga} | {1e3 * c['step_s_mean']:.1f} ({1e3 * c['step_s_median']:.1f}) "
          f"| {1e3 * t['step_s_mean']:.1f} ({1e3 * t['step_s_median']:.1f}) "
          f"| {c['tokens_per_s']:.0f} | {t['tokens_per_s']:.0f} | {c['tokens_per_s'] / t['tokens_per_s']:.2f} |")
PY
