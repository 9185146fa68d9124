//! `cpt train` end to end on a tiny model and the bundled sample corpus: the loss falls,
//! a SIGKILLed run resumes bit-identically, SIGTERM checkpoints, the guard skips NaN steps
//! and stops after too many, and config typos are rejected.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CPT: &str = env!("CARGO_BIN_EXE_cpt");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tiny Llama with a BPE tokenizer trained on the sample corpus' plain-text files.
fn make_model(dir: &Path) -> PathBuf {
    let out = dir.join("base");
    let plain = repo().join("corpus/sample/plain");
    let status = Command::new(CPT)
        .args(["init", "--preset", "tiny", "--arch", "llama", "--vocab-size", "512", "--seed", "3"])
        .arg("--out")
        .arg(&out)
        .arg("--train-tokenizer")
        .args(["zh.txt", "en.txt", "en_essay.txt"].iter().map(|f| plain.join(f)))
        .status()
        .expect("running cpt init");
    assert!(status.success(), "cpt init failed");
    out
}

fn write_config(dir: &Path, model: &Path, run: &str, steps: u64, extra: &str) -> PathBuf {
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

fn train(config: &Path, extra_args: &[&str]) -> Output {
    Command::new(CPT).arg("train").arg("--config").arg(config).arg("--no-progress").args(extra_args).output().expect("running cpt train")
}

fn records(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn step_losses(run_dir: &Path) -> Vec<f64> {
    records(run_dir).iter().filter(|r| r.get("kind").is_none()).map(|r| r["loss"].as_f64().unwrap_or(f64::NAN)).collect()
}

fn final_weights(run_dir: &Path, step: u64) -> Vec<u8> {
    std::fs::read(run_dir.join(format!("checkpoints/step-{step:08}/model.safetensors"))).unwrap()
}

#[test]
fn loss_falls_and_run_writes_metrics_checkpoints_and_done_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    let cfg = write_config(tmp.path(), &model, "run", 24, "");
    let out = train(&cfg, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = tmp.path().join("run");
    let losses = step_losses(&run);
    assert_eq!(losses.len(), 24);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[21..].iter().sum::<f64>() / 3.0;
    assert!(last < first - 0.5, "loss did not fall: {first:.3} -> {last:.3}");
    let recs = records(&run);
    let step = &recs[0];
    for key in ["step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "source_loss"] {
        assert!(step.get(key).is_some(), "metrics record lacks `{key}`: {step}");
    }
    let val: Vec<_> = recs.iter().filter(|r| r["kind"] == "val").collect();
    assert_eq!(val.len(), 4, "validation every 6 of 24 steps");
    assert!(val[0]["source"]["zh"]["ppl"].as_f64().unwrap() > 1.0);
    // Kept the last 3 of the checkpoints at 4, 8, ..., 24; each is an HF directory.
    let ckpts: Vec<String> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let mut ckpts = ckpts;
    ckpts.sort();
    assert_eq!(ckpts, vec!["step-00000016", "step-00000020", "step-00000024"]);
    let last_ckpt = run.join("checkpoints/step-00000024");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "trainer_state/trainer_state.json"] {
        assert!(last_ckpt.join(f).is_file(), "checkpoint lacks {f}");
    }
    assert!(run.join("DONE.json").is_file());
    assert!(std::fs::read_dir(run.join("tb")).unwrap().count() == 1, "one TensorBoard event file");
    // A fresh start into a run directory with checkpoints is refused, not silently overwritten.
    let again = train(&cfg, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

#[test]
fn sigkill_after_a_checkpoint_then_resume_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    let steps = 12;
    let straight = write_config(tmp.path(), &model, "straight", steps, "");
    let out = train(&straight, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let killed = write_config(tmp.path(), &model, "killed", steps, "");
    let killed_dir = tmp.path().join("killed");
    let mut child = Command::new(CPT)
        .args(["train", "--no-progress", "--config"])
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = killed_dir.join("checkpoints/step-00000004/trainer_state/trainer_state.json");
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

    let out = train(&killed, &["--resume"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resumed from"));
    let a = final_weights(&tmp.path().join("straight"), steps);
    let b = final_weights(&killed_dir, steps);
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let state = |run: &str| std::fs::read(tmp.path().join(run).join(format!("checkpoints/step-{steps:08}/trainer_state/optimizer.safetensors"))).unwrap();
    assert!(state("straight") == state("killed"), "optimiser moments differ");
    // The metrics of the resumed run continue without duplicated steps.
    let a_losses = step_losses(&tmp.path().join("straight"));
    let b_losses = step_losses(&killed_dir);
    assert_eq!(a_losses.len(), b_losses.len());
    assert_eq!(a_losses, b_losses);
}

#[test]
fn sigterm_writes_a_checkpoint_before_exiting() {
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    let cfg = write_config(tmp.path(), &model, "run", 100_000, "checkpoint: {every_steps: 100000, keep_last: 2}");
    let run = tmp.path().join("run");
    let child = Command::new(CPT).args(["train", "--no-progress", "--config"]).arg(&cfg).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while step_count(&run) < 3 {
        assert!(Instant::now() < deadline, "training made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let ckpts: Vec<_> = std::fs::read_dir(run.join("checkpoints")).unwrap().collect();
    assert_eq!(ckpts.len(), 1, "one checkpoint written on SIGTERM");
    assert!(!run.join("DONE.json").exists(), "an interrupted run is not marked done");
}

fn step_count(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn injected_nan_steps_are_skipped_and_too_many_stop_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    let cfg = write_config(tmp.path(), &model, "nan", 10, "guard: {max_consecutive_skips: 3}");
    let out = Command::new(CPT)
        .args(["train", "--no-progress", "--config"])
        .arg(&cfg)
        .env("CPT_INJECT_NAN_AT_STEPS", "3,5,6")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = records(&tmp.path().join("nan"));
    let skipped: Vec<u64> = recs.iter().filter(|r| r.get("skipped").is_some()).map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(skipped, vec![3, 5, 6]);
    // Skipped steps leave the weights alone: the run still ends with a finite loss.
    let losses = step_losses(&tmp.path().join("nan"));
    assert!(losses.last().unwrap().is_finite());

    let cfg = write_config(tmp.path(), &model, "stop", 10, "guard: {max_consecutive_skips: 3}");
    let out = Command::new(CPT)
        .args(["train", "--no-progress", "--config"])
        .arg(&cfg)
        .env("CPT_INJECT_NAN_AT_STEPS", "2,3,4")
        .output()
        .unwrap();
    assert!(!out.status.success(), "three NaN steps in a row must stop the run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("consecutive steps were skipped"), "{err}");
    assert!(tmp.path().join("stop/checkpoints/step-00000004/model.safetensors").is_file(), "a checkpoint is written when the guard stops");
}

#[test]
fn config_typos_and_bad_overrides_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("no-model");
    let cfg = write_config(tmp.path(), &model, "run", 4, "optim: {lr: 1.0e-3, weight_decai: 0.1}");
    let out = train(&cfg, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("weight_decai") && err.contains("weight_decay"), "{err}");

    let cfg = write_config(tmp.path(), &model, "run2", 4, "");
    let out = train(&cfg, &["--set", "batch.seq_lenn=64"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("seq_lenn") && err.contains("seq_len"), "{err}");

    let out = train(&cfg, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("model.path") && err.contains("no-model"), "{err}");
}
