#!/usr/bin/env bash
# LoRA against full continual pre-training, cpt and PyTorch side by side in one run: step time
# and peak memory of `cpt train` with and without a `lora:` section, and of transformers +
# torch.optim.AdamW with and without PEFT LoRA, on the same model, batch, sequence length,
# AdamW settings, thread count and token data.
#
# usage: scripts/bench_lora.sh            (builds target/release/cpt if missing)
# env:   CPT=path/to/cpt  PYTHON=python3  KEEP=1 (keep the work directory)
#        PRESET=small-100m STEPS=5 WARMUP=2 THREADS=$(nproc) MB=2 SEQ=256
#        RANK=16 ALPHA=32 DROPOUT=0.05 (LoRA on all linear layers)  VOCAB=32000
#
# Prints a markdown table. Peak memory is the process's peak resident set: model, gradients,
# optimiser state, activations and the framework's own libraries alike. For PyTorch it is
# `/usr/bin/time -f %M`. cpt restarts the kernel's high-water mark at every step record (each
# record's peak_mem_bytes is its own window's), which also restarts what `time` reports, so
# for cpt the peak is the largest of the step records' peaks and `time`'s (the time after
# the last record); loading the model before the first step holds at most two copies of
# the weights, less than a step.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_config.sh

PYTHON=${PYTHON:-python3}
PRESET=${PRESET:-small-100m}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-$(nproc)}
MB=${MB:-2}
SEQ=${SEQ:-256}
RANK=${RANK:-16}
ALPHA=${ALPHA:-32}
DROPOUT=${DROPOUT:-0.05}
if [[ -z "${CPT:-}" ]]; then
    CPT="${CARGO_TARGET_DIR:-target}/release/cpt"
    [[ -x "$CPT" ]] || cargo build --release --bin cpt
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d)
[[ -n "${KEEP:-}" ]] || trap 'rm -rf "$WORK"' EXIT
echo "work directory: $WORK" >&2

"$CPT" init --preset tiny --out "$WORK/tok" --train-tokenizer corpus/sample/plain/*.txt --vocab-size 2048 >&2
# The preset's own vocabulary size (the tokenizer's extra rows are padding), as scripts/bench_train_cpu.sh.
"$CPT" init --preset "$PRESET" --out "$WORK/model" --tokenizer "$WORK/tok" --vocab-size "${VOCAB:-32000}" >&2

write_config() { # name extra-yaml
    bench_config "$WORK/$1.yaml" "$WORK/run-$1" "$WORK/model" "$THREADS" "$MB" "$SEQ" 1 "$STEPS" "$2"
}

ROWS=()
peak() { # file written by /usr/bin/time -f %M (KiB)
    echo $(( $(tail -n 1 "$1") * 1024 ))
}
run_cpt() { # name extra-yaml
    write_config "$1" "$2"
    echo "== cpt train: $1" >&2
    RAYON_NUM_THREADS=$THREADS /usr/bin/time -f %M -o "$WORK/$1.rss" "$CPT" train --config "$WORK/$1.yaml" --no-progress >&2
    local stats
    stats=$("$PYTHON" scripts/cpt_step_stats.py "$WORK/run-$1/metrics.jsonl" "$WARMUP")
    echo "$stats" >&2
    ROWS+=("cpt $1|$stats|$(peak "$WORK/$1.rss")")
}
run_torch() { # name extra-args...
    local name=$1
    shift
    echo "== PyTorch: $name" >&2
    local stats
    stats=$(OMP_NUM_THREADS=$THREADS /usr/bin/time -f %M -o "$WORK/torch-$name.rss" "$PYTHON" scripts/bench_train_torch.py \
        --model "$WORK/model" --shard "$WORK/data-cache/sample" --micro-batch "$MB" --seq-len "$SEQ" \
        --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS" "$@")
    echo "$stats" >&2
    ROWS+=("$name|$stats|$(peak "$WORK/torch-$name.rss")")
}

run_cpt full ""
run_cpt lora "lora: {rank: $RANK, alpha: $ALPHA, dropout: $DROPOUT, target_modules: all-linear}"
run_torch "torch full"
run_torch "torch + peft lora" --lora-rank "$RANK" --lora-alpha "$ALPHA" --lora-dropout "$DROPOUT"

echo
echo "$PRESET, f32, $THREADS threads, micro_batch $MB x seq_len $SEQ, AdamW, LoRA r $RANK alpha $ALPHA dropout $DROPOUT on all linear layers"
echo "load average (1/5/15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PYTHON" - "${ROWS[@]}" <<'PY'
import json, sys
rows = [(r.split("|")[0], json.loads(r.split("|")[1]), int(r.split("|")[2])) for r in sys.argv[1:]]
rows = [(name, s, max(rss, s.get("peak_mem_bytes") or 0)) for name, s, rss in rows]
by = {name: (s, rss) for name, s, rss in rows}
print("| run | ms/step mean (median) | tokens/s | peak RSS GiB | step time / same tool's full run | peak RSS / same tool's full run |")
print("|---|---|---|---|---|---|")
for name, s, rss in rows:
    full = by["cpt full"] if name.startswith("cpt") else by["torch full"]
    print(f"| {name} | {1e3 * s['step_s_mean']:.0f} ({1e3 * s['step_s_median']:.0f}) | {s['tokens_per_s']:.0f} "
          f"| {rss / 2**30:.2f} | {s['step_s_mean'] / full[0]['step_s_mean']:.2f} | {rss / full[1]:.2f} |")
c, t = by["cpt lora"], by["torch + peft lora"]
print(f"\ncpt LoRA / PEFT LoRA: step time {c[0]['step_s_mean'] / t[0]['step_s_mean']:.2f}, peak RSS {c[1] / t[1]:.2f}")
c, t = by["cpt full"], by["torch full"]
print(f"cpt full / torch full: step time {c[0]['step_s_mean'] / t[0]['step_s_mean']:.2f}, peak RSS {c[1] / t[1]:.2f}")
PY
