//! The training YAML: defaults, errors that name the file, the key path and the nearest
//! valid key, validation by field path, `--set` overrides, and YAML round trips.
use cpt::config::{load_config, parse_config, FreezeTarget, OptimKind, ScheduleKind, TrainConfig};
use cpt::train::schedule::Unit;

const MINIMAL: &str = "
model:
  path: models/tiny
data: {}
train:
  max_steps: 100
";

fn parse(yaml: &str, sets: &[&str]) -> anyhow::Result<TrainConfig> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    parse_config(yaml, "run.yaml", &sets)
}

fn err(yaml: &str, sets: &[&str]) -> String {
    format!("{:#}", parse(yaml, sets).expect_err("config should be rejected"))
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.optim.kind, OptimKind::Adamw);
    assert_eq!(c.optim.betas, [0.9, 0.95]);
    assert_eq!(c.schedule.kind, ScheduleKind::Cosine);
    assert_eq!(c.total_steps(), 100);
    assert_eq!(c.grad_accum(), 1);
    assert_eq!(c.tokens_per_step(), 8 * 512);
    assert_eq!(c.checkpoint.keep_last, 3);
    assert_eq!(c.eval.batch_tokens, 4096);
}

#[test]
fn full_config_parses() {
    let yaml = "
run: {out_dir: runs/x, seed: 7, device: cuda, dtype: bf16}
data: {}
model:
  path: models/tiny
  init: {preset: tiny, arch: llama, tokenizer_corpus: data/sample.txt, vocab_size: 4096}
optim: {kind: adamw, lr: 1.0e-5, betas: [0.9, 0.95], eps: 1.0e-8, weight_decay: 0.1, decay_embeddings: true, grad_clip: 1.0}
schedule: {kind: wsd, unit: tokens, warmup: 10B, decay_fraction: 0.1, decay_shape: 1-sqrt, min_lr: 1.0e-7, start_lr: 1.0e-7}
batch: {micro_batch: 4, seq_len: 8192, tokens_per_step: 4194304}
train: {max_tokens: 92.5B}
checkpoint: {every_tokens: 1B, keep_last: 2, dtype: bf16, max_shard_bytes: 4GiB}
logging: {every_steps: 10, tensorboard: false, progress_bar: false}
validation: {every_steps: 500, max_windows: 32, at_start: true}
guard: {spike_sigma: 5, window: 50, min_history: 10, max_consecutive_skips: 3}
eval: {every_steps: 1000, tasks: [{cmmlu: {shots: 5}}, mmlu]}
freeze: {train_only: new_vocab_rows, steps: 200}
";
    let c = parse(yaml, &[]).unwrap();
    assert_eq!(c.train.max_tokens.unwrap().get(), 92_500_000_000);
    assert_eq!(c.checkpoint.max_shard_bytes.get(), 4 << 30);
    assert_eq!(c.grad_accum(), 128);
    assert_eq!(c.schedule.unit, Unit::Tokens);
    assert_eq!(c.eval.tasks.len(), 2);
    assert_eq!(c.freeze.as_ref().unwrap().train_only, FreezeTarget::NewVocabRows);
    let s = c.schedule().unwrap();
    assert_eq!(s.warmup, 10e9);
    assert_eq!(s.decay_start, 92.5e9 - 9.25e9);
}

#[test]
fn tokens_per_step_must_divide_evenly() {
    let e = err(MINIMAL, &["batch.micro_batch=3", "batch.seq_len=100", "batch.tokens_per_step=1000"]);
    assert!(e.contains("batch.tokens_per_step: must be a positive multiple of micro_batch * seq_len = 300"), "{e}");
}

#[test]
fn unknown_key_names_path_and_nearest_key() {
    let e = err(&format!("{MINIMAL}optim:\n  lrr: 0.001\n"), &[]);
    assert!(e.starts_with("run.yaml: optim"), "{e}");
    assert!(e.contains("unknown field `lrr`"), "{e}");
    assert!(e.contains("did you mean `lr`?"), "{e}");

    let e = err(&format!("{MINIMAL}optimiser:\n  lr: 0.001\n"), &[]);
    assert!(e.contains("unknown field `optimiser`") && e.contains("did you mean `optim`?"), "{e}");

    let e = err(&format!("{MINIMAL}schedule:\n  warmup_steps: 10\n"), &[]);
    assert!(e.contains("schedule") && e.contains("did you mean `warmup`?"), "{e}");
}

#[test]
fn unknown_variant_suggests_the_nearest() {
    let e = err(&format!("{MINIMAL}schedule:\n  kind: cosin\n"), &[]);
    assert!(e.contains("schedule.kind") && e.contains("did you mean `cosine`?"), "{e}");
    let e = err(&format!("{MINIMAL}schedule:\n  kind: wsd\n  decay: 10\n  decay_shape: sqrt\n"), &[]);
    assert!(e.contains("schedule.decay_shape") && e.contains("did you mean `1-sqrt`?"), "{e}");
}

#[test]
fn wrong_types_and_missing_sections_name_the_path() {
    let e = err(&format!("{MINIMAL}optim:\n  lr: fast\n"), &[]);
    assert!(e.contains("optim.lr") && e.contains("invalid type"), "{e}");
    let e = err(&format!("{MINIMAL}batch:\n  micro_batch: -2\n"), &[]);
    assert!(e.contains("batch.micro_batch"), "{e}");
    let e = err("model: {path: m}\ndata: {}\n", &[]);
    assert!(e.contains("missing field `train`"), "{e}");
    let e = err("model: {path: m}\ntrain: {max_steps: 10}\n", &[]);
    assert!(e.contains("missing field `data`"), "{e}");
    let e = err(&format!("{MINIMAL}checkpoint:\n  every_tokens: lots\n"), &[]);
    assert!(e.contains("checkpoint.every_tokens") && e.contains("is not a count"), "{e}");
    let e = err("model: [1, 2\n", &[]);
    assert!(e.contains("run.yaml: not valid YAML"), "{e}");
}

#[test]
fn validation_lists_every_problem_by_path() {
    let yaml = format!(
        "{MINIMAL}optim:\n  lr: -1\n  betas: [0.9, 1.5]\nguard:\n  window: 1\ncheckpoint:\n  keep_last: 0\n"
    );
    let e = err(&yaml, &[]);
    for want in [
        "optim.lr: must be > 0",
        "optim.betas[1]: must be in [0, 1)",
        "guard.window: must be >= 2",
        "checkpoint.keep_last: must be >= 1",
    ] {
        assert!(e.contains(want), "missing `{want}` in: {e}");
    }
    let e = err("model: {path: m}\ndata: {}\ntrain: {max_steps: 10, max_tokens: 1000}\n", &[]);
    assert!(e.contains("train: set max_tokens or max_steps, not both"), "{e}");
    let e = err(MINIMAL, &["schedule.warmup=500"]);
    assert!(e.contains("schedule.warmup (500) is longer than the run (100)"), "{e}");
    let e = err(MINIMAL, &["schedule.decay=10"]);
    assert!(e.contains("schedule.decay: only applies to kind wsd"), "{e}");
}

#[test]
fn set_overrides_apply_before_deserialising() {
    let c = parse(
        MINIMAL,
        &["optim.lr=1e-4", "schedule.kind=wsd", "schedule.decay_fraction=0.2", "guard.spike_sigma=null", "train.max_steps=2k", "eval.tasks=[a, b]"],
    )
    .unwrap();
    assert_eq!(c.optim.lr, 1e-4);
    assert_eq!(c.schedule.kind, ScheduleKind::Wsd);
    assert_eq!(c.guard.spike_sigma, None);
    assert_eq!(c.total_steps(), 2000);
    assert_eq!(c.eval.tasks.len(), 2);
    let c = parse(MINIMAL, &["train.max_steps=1e3", "checkpoint.max_shard_bytes=2GiB"]).unwrap();
    assert_eq!(c.total_steps(), 1000);
    assert_eq!(c.checkpoint.max_shard_bytes.get(), 2 << 30);
    let e = err(MINIMAL, &["train.max_steps=1.5"]);
    assert!(e.contains("train.max_steps") && e.contains("not a whole number"), "{e}");
    let c = parse(&format!("{MINIMAL}eval:\n  tasks: [x, y]\n"), &["eval.tasks.1=z"]).unwrap();
    assert_eq!(c.eval.tasks[1], serde_yaml::Value::String("z".into()));
}

#[test]
fn set_overrides_reject_unknown_paths_the_same_way() {
    let e = err(MINIMAL, &["optim.lrr=1e-4"]);
    assert!(e.contains("unknown field `lrr`") && e.contains("did you mean `lr`?"), "{e}");
    assert!(e.contains("from --set optim.lrr=1e-4"), "{e}");
    let e = err(MINIMAL, &["model.path.deeper=1"]);
    assert!(e.contains("--set model.path.deeper=1") && e.contains("`model.path` is a value"), "{e}");
    let e = err(MINIMAL, &["optim.lr"]);
    assert!(e.contains("expected path.to.key=value"), "{e}");
    let e = err(&format!("{MINIMAL}eval:\n  tasks: [x]\n"), &["eval.tasks.3=x"]);
    assert!(e.contains("`eval.tasks` has 1 entries, no index 3"), "{e}");
}

#[test]
fn resolved_config_round_trips_through_yaml() {
    let c = parse(MINIMAL, &["schedule.kind=wsd", "schedule.decay=10", "schedule.decay_shape=exponential", "schedule.min_lr=1e-6"]).unwrap();
    let yaml = c.to_yaml().unwrap();
    let again = parse(&yaml, &[]).unwrap();
    assert_eq!(again.to_yaml().unwrap(), yaml);
    assert!(yaml.contains("decay_shape: exponential"), "{yaml}");
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, format!("{MINIMAL}loging:\n  every_steps: 5\n")).unwrap();
    let e = format!("{:#}", load_config(&path, &[]).unwrap_err());
    assert!(e.contains("bad.yaml: loging") && e.contains("did you mean `logging`?"), "{e}");
    let e = format!("{:#}", load_config(&dir.path().join("missing.yaml"), &[]).unwrap_err());
    assert!(e.contains("missing.yaml"), "{e}");
}


#[test]
fn checkpoint_cadence_in_steps_or_tokens() {
    let c = parse(MINIMAL, &["checkpoint.every_steps=10"]).unwrap();
    assert!(!c.checkpoint_due(0, 9, 9 * 4096));
    assert!(c.checkpoint_due(0, 10, 10 * 4096));
    let c = parse(MINIMAL, &["checkpoint.every_tokens=10k", "batch.micro_batch=1", "batch.seq_len=3000"]).unwrap();
    assert!(!c.checkpoint_due(6000, 3, 9000));
    assert!(c.checkpoint_due(9000, 4, 12000), "crossing a multiple of 10k tokens");
    assert!(!c.checkpoint_due(12000, 5, 15000));
    let c = parse(MINIMAL, &[]).unwrap();
    assert!(!c.checkpoint_due(0, 100, 1 << 30), "no periodic checkpoints unless asked");
}

#[test]
fn errors_inside_the_data_section_name_their_path_too() {
    let yaml = MINIMAL.replace("data: {}", "data:\n  sourcez: []");
    let e = err(&yaml, &[]);
    assert!(e.contains("run.yaml: data.sourcez") && e.contains("did you mean `sources`?"), "{e}");
    let e = err(MINIMAL, &["data.add_eoss=false"]);
    assert!(e.contains("data.add_eoss") && e.contains("did you mean `add_eos`?"), "{e}");
}

#[test]
fn kernels_section_parses_round_trips_and_names_bad_fields() {
    use cpt::kernels::dispatch::FusedAttention;
    use cpt::kernels::KernelMode;
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.kernels, cpt::kernels::KernelSettings::default());
    assert_eq!(c.kernels.mode, KernelMode::Composed);
    let yaml = format!("{MINIMAL}kernels:\n  mode: fused\n  attention: blocked:256\n  recompute: true\n  ce_chunk: 4096\n");
    let c = parse(&yaml, &[]).unwrap();
    assert_eq!(c.kernels.mode, KernelMode::Fused);
    assert_eq!(c.kernels.attention, FusedAttention::Blocked { q_block: 256 });
    assert!(c.kernels.recompute);
    assert_eq!(c.kernels.ce_chunk, 4096);
    let again = parse(&c.to_yaml().unwrap(), &[]).unwrap();
    assert_eq!(again.kernels, c.kernels);
    let c = parse(MINIMAL, &["kernels.attention=flash", "kernels.mode=fused"]).unwrap();
    assert_eq!((c.kernels.mode, c.kernels.attention), (KernelMode::Fused, FusedAttention::Flash));

    let e = err(&format!("{MINIMAL}kernels:\n  mod: fused\n"), &[]);
    assert!(e.contains("kernels") && e.contains("did you mean `mode`?"), "{e}");
    let e = err(&format!("{MINIMAL}kernels:\n  attention: blocked:0\n"), &[]);
    assert!(e.contains("kernels.attention") && e.contains("positive integer"), "{e}");
    let e = err(&format!("{MINIMAL}kernels:\n  attention: fast\n"), &[]);
    assert!(e.contains("kernels.attention") && e.contains("flash"), "{e}");
    let e = err(&format!("{MINIMAL}kernels:\n  ce_chunk: 0\n"), &[]);
    assert!(e.contains("kernels.ce_chunk: must be >= 1"), "{e}");
}
