# Sourced by the CPU benchmarks (bench_train_cpu.sh, bench_lora.sh, bench_dist_cpu.sh): the
# training config they time, over the sample corpus, with everything but the timing switched
# off (no validation, no checkpoint, no TensorBoard, no guard, a constant LR).
#
# bench_config OUT_YAML RUN_DIR MODEL THREADS MICRO_BATCH SEQ_LEN GRAD_ACCUM STEPS [EXTRA_YAML]
# (relative paths are the repository root's: source it after `cd` there; WORK is the data cache's parent)
bench_config() {
    cat > "$1" <<YAML
run: {out_dir: $2, seed: 0, device: cpu, dtype: f32, cpu_threads: $4}
model: {path: $3}
data:
  cache_dir: $WORK/data-cache
  sources:
    - {name: sample, paths: ["corpus/sample/zh/*.jsonl", "corpus/sample/en/*.jsonl", "corpus/sample/synthetic/*.jsonl"]}
  sampler: {max_repeats: null}
  validation: {fraction: 0.0}
optim: {kind: adamw, lr: 3.0e-4, betas: [0.9, 0.95], eps: 1.0e-8, weight_decay: 0.1, grad_clip: 1.0}
schedule: {kind: constant}
batch: {micro_batch: $5, seq_len: $6, grad_accum: $7}
train: {max_steps: $8}
checkpoint: {at_end: false}
logging: {every_steps: 1, tensorboard: false, progress_bar: false}
guard: {spike_sigma: null}
YAML
    if [[ -n "${9:-}" ]]; then
        printf '%s\n' "$9" >> "$1"
    fi
}
