//! `cpt train` across ranks on CPU under MPICH's mpiexec (needs the `mpi` feature; CI
//! installs MPICH and runs `cargo test --release --features mpi --test dist_train`):
//! (a) 2 ranks x 1 micro-batch end bit-identical to 1 rank x 2 for ZeRO-0, 1 and 3;
//! (b) a checkpoint saved at 2 ranks resumes at 1 bit-identically and at 3 within 1e-6;
//! (c) a killed rank ends the other within the bound, the newest complete checkpoint loads
//!     in transformers, and `--resume` finishes the run; a stopped rank is named by the
//!     watchdog;
//! (d) SIGTERM to one rank gives one coordinated checkpoint;
//! (e) bad launches end in clear errors;
//! and LoRA with adapter dropout over 2 ranks matches 1 rank for ZeRO-0 and 1 (ZeRO-3 is
//! refused).
#![cfg(feature = "mpi")]

mod train_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use cpt::dist::checkpoint::StateSource;
use cpt::model::CausalLm;
use train_common::*;

/// The runs share two cores: one test at a time keeps their timing meaningful.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(())).lock().unwrap_or_else(|e| e.into_inner())
}

/// One tiny model for every test of this file.
fn base_model() -> PathBuf {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let model = make_model(dir.path());
            (dir, model)
        })
        .1
        .clone()
}

/// `mpiexec -n ranks cpt train --config config ARGS`.
fn mpi_train(ranks: usize, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpiexec");
    cmd.args(["-n", &ranks.to_string(), CPT, "train", "--no-progress", "--config"]).arg(config).args(args);
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("running mpiexec (install MPICH: apt-get install mpich libmpich-dev)")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "run failed: {}\n{}", out.status, text(&out));
    out
}

fn config(dir: &Path, run: &str, steps: u64, extra: &str) -> PathBuf {
    write_config(dir, &base_model(), run, steps, extra)
}

fn ckpt(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join(format!("checkpoints/step-{step:08}"))
}

/// Every parameter's moments of a checkpoint, read whole whatever world size wrote them.
fn moments(dir: &Path) -> HashMap<String, Vec<f32>> {
    moments_of(dir, &CausalLm::from_pretrained(dir, &Device::Cpu, DType::F32).unwrap())
}

/// As [`moments`] for the trainable parameters of `model` (e.g. a checkpoint's adapter).
fn moments_of(dir: &Path, model: &CausalLm) -> HashMap<String, Vec<f32>> {
    let source = StateSource::open(&dir.join("trainer_state")).unwrap();
    let mut out = HashMap::new();
    for (name, var) in model.named_parameters() {
        for suffix in ["exp_avg", "exp_avg_sq"] {
            let v = source.read(name, suffix, 0, var.elem_count()).unwrap().expect("moments after steps");
            out.insert(format!("{name}.{suffix}"), v);
        }
    }
    out
}

fn losses_and_norms(run_dir: &Path) -> Vec<(Option<f64>, Option<f64>)> {
    records(run_dir)
        .iter()
        .filter(|r| r.get("kind").is_none())
        .map(|r| (r["loss"].as_f64(), r["grad_norm"].as_f64()))
        .collect()
}

/// (a) For each ZeRO stage: 1 rank x 2 micro-batches and 2 ranks x 1 micro-batch (the same
/// config: `grad_accum` counts micro-batches over all ranks) give the same bytes.
#[test]
fn two_ranks_match_one_rank_with_twice_the_accumulation_for_zero_0_1_3() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    for zero in [0, 1, 3] {
        let extra = format!(
            "parallel: {{zero: {zero}, timeout_s: 30}}\nkernels: {{recompute: true}}\nbatch: {{micro_batch: 2, seq_len: 32, grad_accum: 2}}\ncheckpoint: {{every_steps: 5, keep_last: 3}}"
        );
        let one = config(dir.path(), &format!("one{zero}"), 10, &extra);
        let two = config(dir.path(), &format!("two{zero}"), 10, &extra);
        ok(train(&one, &[]));
        let out = ok(run(mpi_train(2, &two, &[])));
        assert!(text(&out).contains("2 ranks (mpiexec (MPICH), mpi engine)"), "{}", text(&out));
        let (a, b) = (dir.path().join(format!("one{zero}")), dir.path().join(format!("two{zero}")));
        assert_eq!(final_weights(&a, 10), final_weights(&b, 10), "ZeRO-{zero}: weights after 10 steps");
        assert_eq!(moments(&ckpt(&a, 10)), moments(&ckpt(&b, 10)), "ZeRO-{zero}: moments after 10 steps");
        assert_eq!(losses_and_norms(&a), losses_and_norms(&b), "ZeRO-{zero}: losses and gradient norms");
        // Only rank 0 logs; each record carries both ranks' memory and communication.
        let rec = records(&b).into_iter().find(|r| r.get("kind").is_none()).unwrap();
        assert_eq!(rec["ranks"]["peak_mem_bytes"].as_array().unwrap().len(), 2, "{rec}");
        assert!(rec["ranks"]["comm_bytes_per_step"][1].as_f64().unwrap() > 0.0, "{rec}");
        let sharded = ckpt(&b, 10).join("trainer_state/optimizer_shards");
        assert_eq!(sharded.join("COMPLETE").is_file(), zero != 0, "ZeRO-{zero} writes one shard per rank");
    }
}

/// LoRA (adapter dropout on) over 2 ranks x 1 micro-batch ends bit-identical to 1 rank x 2:
/// adapters, moments, losses and norms, for ZeRO-0 and 1. ZeRO-3 shards trainable decoder
/// weights, which a LoRA run does not have: refused with a message naming both sections.
#[test]
fn lora_over_two_ranks_matches_one_rank_and_zero_3_is_refused() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let lora = "lora: {rank: 4, alpha: 8, dropout: 0.1, target_modules: all-linear}";
    for zero in [0, 1] {
        let extra = format!(
            "parallel: {{zero: {zero}, timeout_s: 30}}\n{lora}\nbatch: {{micro_batch: 2, seq_len: 32, grad_accum: 2}}\ncheckpoint: {{every_steps: 5, keep_last: 3, dtype: f32}}"
        );
        let one = config(dir.path(), &format!("lora-one{zero}"), 10, &extra);
        let two = config(dir.path(), &format!("lora-two{zero}"), 10, &extra);
        ok(train(&one, &[]));
        ok(run(mpi_train(2, &two, &[])));
        let (a, b) = (ckpt(&dir.path().join(format!("lora-one{zero}")), 10), ckpt(&dir.path().join(format!("lora-two{zero}")), 10));
        let adapter = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
        assert_eq!(adapter(&a), adapter(&b), "ZeRO-{zero}: adapters after 10 steps");
        let model = CausalLm::from_pretrained_with_adapter(&base_model(), Some(&a), &Device::Cpu, DType::F32).unwrap();
        assert!(model.named_parameters().iter().all(|(n, _)| n.contains("lora_")), "only adapters train");
        assert_eq!(moments_of(&a, &model), moments_of(&b, &model), "ZeRO-{zero}: moments after 10 steps");
        let (la, lb) = (losses_and_norms(a.parent().unwrap().parent().unwrap()), losses_and_norms(b.parent().unwrap().parent().unwrap()));
        assert_eq!(la, lb, "ZeRO-{zero}: losses and gradient norms");
    }
    let extra = format!("parallel: {{zero: 3, timeout_s: 30}}\n{lora}\nkernels: {{recompute: true}}\nbatch: {{micro_batch: 2, seq_len: 32, grad_accum: 2}}");
    let out = run(mpi_train(2, &config(dir.path(), "lora-zero3", 2, &extra), &[]));
    assert!(!out.status.success() && text(&out).contains("parallel.zero: 3") && text(&out).contains("LoRA"), "{}", text(&out));
}

/// Model weights of a checkpoint, by name.
fn weights(dir: &Path) -> HashMap<String, Tensor> {
    let model = CausalLm::from_pretrained(dir, &Device::Cpu, DType::F32).unwrap();
    model.named_parameters().iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect()
}

/// Copies a run directory as it was when `step`'s checkpoint was the newest.
fn fork_run_at(src: &Path, dst: &Path, step: u64) {
    let out = Command::new("cp").arg("-r").arg(src).arg(dst).output().unwrap();
    assert!(out.status.success());
    for entry in std::fs::read_dir(dst.join("checkpoints")).unwrap() {
        let p = entry.unwrap().path();
        let s: u64 = p.file_name().unwrap().to_string_lossy().trim_start_matches("step-").parse().unwrap();
        if s > step {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    let _ = std::fs::remove_file(dst.join("DONE.json"));
}

/// (b) Resharding: ZeRO-1 saved at 2 ranks resumes at 1 rank bit-identically (2 x 1
/// micro-batch -> 1 x 2), and at 3 ranks within 1e-6 relative (another summation order).
#[test]
fn a_checkpoint_saved_at_two_ranks_resumes_at_one_exactly_and_at_three_within_tolerance() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let two_to_one = "parallel: {zero: 1}\nbatch: {micro_batch: 2, seq_len: 32, grad_accum: 2}\ncheckpoint: {every_steps: 5, keep_last: 3}";
    let cfg = config(dir.path(), "straight", 10, two_to_one);
    ok(run(mpi_train(2, &cfg, &[])));
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed1");
    fork_run_at(&straight, &resumed, 5);
    let out = ok(train(&cfg, &["--resume", "--set", &format!("run.out_dir={}", resumed.display())]));
    assert!(text(&out).contains("resumed from"), "{}", text(&out));
    assert_eq!(final_weights(&straight, 10), final_weights(&resumed, 10), "2 ranks -> 1 rank");
    assert_eq!(moments(&ckpt(&straight, 10)), moments(&ckpt(&resumed, 10)));

    // 6 micro-batches per step: 2 ranks x 3, resumed as 3 ranks x 2.
    let six = "parallel: {zero: 1}\nbatch: {micro_batch: 1, seq_len: 32, grad_accum: 6}\ncheckpoint: {every_steps: 5, keep_last: 3}";
    let cfg = config(dir.path(), "straight6", 10, six);
    ok(run(mpi_train(2, &cfg, &[])));
    let straight = dir.path().join("straight6");
    let resumed = dir.path().join("resumed3");
    fork_run_at(&straight, &resumed, 5);
    let out = ok(run(mpi_train(3, &cfg, &["--resume", "--set", &format!("run.out_dir={}", resumed.display())])));
    assert!(text(&out).contains("3 ranks"), "{}", text(&out));
    let (a, b) = (weights(&ckpt(&straight, 10)), weights(&ckpt(&resumed, 10)));
    for (name, x) in &a {
        let y = &b[name];
        let diff = (x - y).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
        let norm = x.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
        assert!(diff <= 1e-6 * norm, "{name}: |a - b| = {diff:e}, |a| = {norm:e}");
    }
}

fn transformers_available() -> bool {
    Command::new("python3").args(["-c", "import transformers, torch, safetensors"]).output().map(|o| o.status.success()).unwrap_or(false)
}

/// A checkpoint directory loads in transformers with cpt's logits.
fn check_loads_in_transformers(dir: &Path, scratch: &Path) {
    if !transformers_available() {
        eprintln!("SKIP the transformers half of the kill test: python3 with transformers/torch/safetensors not available");
        return;
    }
    let model = CausalLm::from_pretrained(dir, &Device::Cpu, DType::F32).unwrap();
    let ids = Tensor::from_vec((0u32..24).map(|i| (i * 37) % 500).collect::<Vec<_>>(), (2, 12), &Device::Cpu).unwrap();
    let logits = model.forward(&ids, None).unwrap();
    let expected = scratch.join("expected.safetensors");
    let data = HashMap::from([("input_ids", ids.to_dtype(DType::I64).unwrap()), ("logits", logits)]);
    candle_core::safetensors::save(&data, &expected).unwrap();
    let script = repo().join("scripts/check_hf_roundtrip.py");
    let out = Command::new("python3").arg(script).arg(dir).arg(&expected).output().unwrap();
    assert!(out.status.success(), "transformers could not load {}: {}", dir.display(), text(&out));
}

/// Starts a 2-rank run and waits until `step`'s checkpoint is complete; returns the child
/// (mpiexec) and rank 1's pid.
fn start_and_wait_for(cfg: &Path, run_dir: &Path, step: u64) -> (Child, u32) {
    let mut child = mpi_train(2, cfg, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let marker = ckpt(run_dir, step).join("trainer_state/optimizer_shards/COMPLETE");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.is_file() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("training ended before the test could act: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let note: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("ranks/arrived-00001.json")).unwrap()).unwrap();
    (child, note["pid"].as_u64().unwrap() as u32)
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// Waits for the child, returning its output and how long it took.
fn finish(child: Child) -> (Output, Duration) {
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    (out, t.elapsed())
}

/// (c) SIGKILL of one rank: the other exits non-zero within the bound; the newest
/// complete checkpoint is intact and loads in transformers; `--resume` finishes the run.
#[test]
fn a_killed_rank_ends_the_other_and_resume_finishes_the_run() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let extra = "parallel: {zero: 1, timeout_s: 10}\nbatch: {micro_batch: 2, seq_len: 32, grad_accum: 2}\ncheckpoint: {every_steps: 4, keep_last: 2}\nvalidation: {every_steps: 1000, max_windows: 2}";
    let cfg = config(dir.path(), "run", 200, extra);
    let run_dir = dir.path().join("run");
    let (child, rank1) = start_and_wait_for(&cfg, &run_dir, 4);
    signal(rank1, "-KILL");
    let (out, took) = finish(child);
    assert!(!out.status.success(), "the surviving rank must fail: {}", text(&out));
    assert!(took < Duration::from_secs(15), "the other rank took {took:?} to end (bound: parallel.timeout_s = 10)");
    let newest = cpt::train::checkpoint::Checkpoints::new(run_dir.join("checkpoints"), 2).latest().unwrap().expect("a complete checkpoint");
    check_loads_in_transformers(&newest, dir.path());
    let out = ok(run(mpi_train(2, &cfg, &["--resume"])));
    assert!(text(&out).contains("resumed from"), "{}", text(&out));
    let done: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("DONE.json")).unwrap()).unwrap();
    assert_eq!(done["steps"], 200);
    let steps: Vec<u64> = records(&run_dir).iter().filter(|r| r.get("kind").is_none()).map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=200).collect::<Vec<_>>(), "every step logged once across the crash");
}

/// (c, the watchdog's own path) A rank that stops answering (SIGSTOP, like a hung node) is
/// named by the others, which exit with status 75 after `parallel.timeout_s`.
#[test]
fn a_stopped_rank_is_named_by_the_watchdog_within_the_timeout() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let extra = "parallel: {zero: 1, timeout_s: 3}\ncheckpoint: {every_steps: 4, keep_last: 2}\nvalidation: {every_steps: 1000, max_windows: 2}";
    let cfg = config(dir.path(), "run", 400, extra);
    let (child, rank1) = start_and_wait_for(&cfg, &dir.path().join("run"), 4);
    signal(rank1, "-STOP");
    let (out, took) = finish(child);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(75), "{msg}");
    assert!(msg.contains(&format!("lost rank 1 (pid {rank1}")) && msg.contains("no heartbeat for"), "{msg}");
    assert!(took < Duration::from_secs(8), "took {took:?} with parallel.timeout_s = 3");
}

/// (d) SIGTERM to one rank: both ranks write one coordinated checkpoint and exit.
#[test]
fn sigterm_to_one_rank_gives_one_coordinated_checkpoint() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let extra = "parallel: {zero: 1, timeout_s: 30}\ncheckpoint: {every_steps: 100, keep_last: 5}\nvalidation: {every_steps: 1000, max_windows: 2}";
    let cfg = config(dir.path(), "run", 400, extra);
    let run_dir = dir.path().join("run");
    let mut child = mpi_train(2, &cfg, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while records_if_any(&run_dir) < 3 {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "the run did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
    let note: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("ranks/arrived-00001.json")).unwrap()).unwrap();
    signal(note["pid"].as_u64().unwrap() as u32, "-TERM");
    let (out, _) = finish(child);
    let msg = text(&out);
    assert!(msg.contains("interrupted by a signal (checkpoint written)"), "{msg}");
    let all = cpt::train::checkpoint::Checkpoints::new(run_dir.join("checkpoints"), 5).list().unwrap();
    assert_eq!(all.len(), 1, "exactly one checkpoint: {all:?}");
    let (step, dir_) = &all[0];
    assert!(dir_.join("trainer_state/optimizer_shards/COMPLETE").is_file());
    let last_logged = records(&run_dir).iter().filter(|r| r.get("kind").is_none()).map(|r| r["step"].as_u64().unwrap()).max().unwrap();
    assert_eq!(*step, last_logged, "the checkpoint is of the last step taken");
    assert!(*step < 400 && !run_dir.join("DONE.json").exists());
}

fn records_if_any(run_dir: &Path) -> usize {
    std::fs::read_to_string(run_dir.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

/// (e) Bad launches end in clear errors: a launcher that says 2 ranks around a process MPI
/// sees alone; a rank that never arrives; ranks with different configs; an accumulation
/// that does not split over the ranks.
#[test]
fn bad_launches_end_in_clear_errors() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "run", 4, "parallel: {zero: 1, timeout_s: 3}");

    let out = Command::new(CPT)
        .args(["train", "--no-progress", "--config"])
        .arg(&cfg)
        .envs([("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29511")])
        .output()
        .unwrap();
    let msg = text(&out);
    assert!(!out.status.success() && msg.contains("world size mismatch") && msg.contains("rank 0 of 2"), "{msg}");

    let t = Instant::now();
    let mut late = mpi_train(2, &cfg, &[]);
    late.env("CPT_TEST_DELAY_START", "1:60");
    let out = run(late);
    let msg = text(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("not all 2 ranks arrived within 3 s") && msg.contains("missing: rank(s) [1]"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());

    let mut mixed = Command::new("mpiexec");
    mixed.args(["-n", "1", CPT, "train", "--no-progress", "--config"]).arg(&cfg);
    mixed.args([":", "-n", "1", CPT, "train", "--no-progress", "--set", "optim.lr=1e-4", "--config"]).arg(&cfg);
    let out = run(mixed);
    let msg = text(&out);
    assert!(!out.status.success() && msg.contains("rank(s) [1] were started with a different training config"), "{msg}");

    let odd = config(dir.path(), "odd", 4, "batch: {micro_batch: 2, seq_len: 32, grad_accum: 3}");
    let out = run(mpi_train(2, &odd, &[]));
    let msg = text(&out);
    assert!(!out.status.success() && msg.contains("cannot be split evenly over 2 ranks"), "{msg}");
}
