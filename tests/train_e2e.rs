//! `cpt train` end to end on a tiny model and the bundled sample corpus: the loss falls,
//! a SIGKILLed run resumes bit-identically, SIGTERM checkpoints, the guard skips NaN steps
//! and stops after too many, and config typos are rejected.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod train_common;

use train_common::{final_weights, make_model, records, repo, sigkill_after_checkpoint, step_losses, train, write_config, CPT};

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
    sigkill_after_checkpoint(&killed, &killed_dir, 4);

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

#[test]
fn eval_tasks_run_during_training_and_are_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    let val = repo().join("corpus/sample/val/zh.jsonl");
    let extra = format!(
        "eval: {{every_steps: 3, tasks: [{{kind: perplexity, name: zh_val, paths: [{}], max_docs: 3}}]}}",
        val.display()
    );
    let cfg = write_config(tmp.path(), &model, "run", 6, &extra);
    let out = train(&cfg, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let evals: Vec<_> = records(&tmp.path().join("run")).into_iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(evals.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![3, 6]);
    let (first, last) = (evals[0]["zh_val"]["bits_per_byte"].as_f64().unwrap(), evals[1]["zh_val"]["bits_per_byte"].as_f64().unwrap());
    assert!(first.is_finite() && last.is_finite() && last < first, "bits per byte {first} -> {last}");

    // A task with a missing file fails before the first step.
    let bad = write_config(tmp.path(), &model, "bad", 6, "eval: {every_steps: 3, tasks: [{kind: perplexity, name: x, paths: [no-such-file.jsonl]}]}");
    let out = train(&bad, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-file"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!tmp.path().join("bad/metrics.jsonl").exists());
}
