//! Helpers shared by the `cpt train` end-to-end tests: a tiny model, a config over the
//! bundled sample corpus, running the binary, and reading its metrics.
#![allow(dead_code)] // each test binary uses some of them

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CPT: &str = env!("CARGO_BIN_EXE_cpt");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tiny Llama with a BPE tokenizer trained on the sample corpus' plain-text files.
pub fn make_model(dir: &Path) -> PathBuf {
    make_model_with(dir, "base", &[])
}

/// As [`make_model`], into `dir/name`, with extra `cpt init` arguments (e.g. the layer count).
pub fn make_model_with(dir: &Path, name: &str, init_args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let plain = repo().join("corpus/sample/plain");
    let status = Command::new(CPT)
        .args(["init", "--preset", "tiny", "--arch", "llama", "--vocab-size", "512", "--seed", "3"])
        .args(init_args)
        .arg("--out")
        .arg(&out)
        .arg("--train-tokenizer")
        .args(["zh.txt", "en.txt", "en_essay.txt"].iter().map(|f| plain.join(f)))
        .status()
        .expect("running cpt init");
    assert!(status.success(), "cpt init failed");
    out
}

pub fn write_config(dir: &Path, model: &Path, run: &str, steps: u64, extra: &str) -> PathBuf {
    let s = repo().join("corpus/sample");
    let yaml = format!(
        r#"
run: {{out_dir: {run_dir}, seed: 7}}
model: {{path: {model}}}
data:
  cache_dir: {cache}
  sources:
    - {{name: zh, paths: {s}/zh/web.jsonl, group: zh}}
    - {{name: en, paths: {s}/en/web.jsonl, group: en}}
    - {{name: syn, paths: {s}/synthetic/science_qa.jsonl, group: synthetic}}
  stages:
    - {{name: one, tokens: 1536, groups: {{zh: 0.2, en: 0.8}}}}
    - {{name: two, groups: {{zh: 0.1, en: 0.7, synthetic: 0.2}}}}
  validation: {{fraction: 0.05, max_docs: 4}}
optim: {{lr: 3.0e-3, weight_decay: 0.1, grad_clip: 1.0}}
schedule: {{kind: cosine, unit: steps, warmup: 2, min_lr_ratio: 0.1}}
batch: {{micro_batch: 4, seq_len: 32, grad_accum: 2}}
train: {{max_steps: {steps}}}
checkpoint: {{every_steps: 4, keep_last: 3}}
logging: {{every_steps: 1, progress_bar: false}}
validation: {{every_steps: 6, max_windows: 2}}
"#,
        run_dir = dir.join(run).display(),
        model = model.display(),
        cache = dir.join("cache").display(),
        s = s.display(),
    );
    // A section given in `extra` replaces the one-line section of the same name above.
    let replaced: Vec<&str> = extra.lines().filter_map(|l| l.split_once(':').map(|(k, _)| k)).collect();
    let yaml: String = yaml
        .lines()
        .filter(|l| !replaced.iter().any(|k| l.starts_with(&format!("{k}:")) && !l.trim_end().ends_with(':')))
        .chain(std::iter::once(""))
        .collect::<Vec<_>>()
        .join("\n");
    let yaml = format!("{yaml}{extra}\n");
    let path = dir.join(format!("{run}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

pub fn train(config: &Path, extra_args: &[&str]) -> Output {
    Command::new(CPT).arg("train").arg("--config").arg(config).arg("--no-progress").args(extra_args).output().expect("running cpt train")
}

pub fn records(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn step_losses(run_dir: &Path) -> Vec<f64> {
    records(run_dir).iter().filter(|r| r.get("kind").is_none()).map(|r| r["loss"].as_f64().unwrap_or(f64::NAN)).collect()
}

pub fn final_weights(run_dir: &Path, step: u64) -> Vec<u8> {
    std::fs::read(run_dir.join(format!("checkpoints/step-{step:08}/model.safetensors"))).unwrap()
}


/// Starts `cpt train --config config`, waits until the checkpoint of `step` is complete in
/// `run_dir`, and SIGKILLs the process (a crash right after a checkpoint).
pub fn sigkill_after_checkpoint(config: &Path, run_dir: &Path, step: u64) {
    let mut child = Command::new(CPT)
        .args(["train", "--no-progress", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = run_dir.join(format!("checkpoints/step-{step:08}/trainer_state/trainer_state.json"));
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ckpt.is_file() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("training ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}
