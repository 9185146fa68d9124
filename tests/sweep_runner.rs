//! The sweep runner with a fake trainer (a shell script that writes cpt-like metrics and
//! the DONE.json marker): every point runs once, a killed sweep resumes without rerunning
//! finished runs, failures are retried on the next invocation, results are collected.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BASE: &str = "run: {out_dir: out, seed: 1}
data:
  groups:
    - {name: zh, weight: 0.5}
    - {name: en, weight: 0.5}
optim: {lr: 0.001}
train: {max_tokens: 1000}
";

const GRID: &str = "axes:
  zh_ratio:
    data.groups[name=zh].weight: [0.2, 0.8]
    data.groups[name=en].weight: [0.8, 0.2]
  lr:
    optim.lr: [1.0e-4, 1.0e-3]
";

// Reads its config like `cpt train` would, logs start/end to $CALLS, can fail on demand.
const FAKE_TRAINER: &str = r#"#!/bin/sh
cfg="$2"
out=$(sed -n 's/^  out_dir: //p' "$cfg" | tr -d "'\"")
lr=$(sed -n 's/^  lr: //p' "$cfg")
zh=$(awk '/name: zh/{f=1} f&&/weight:/{print $2; exit}' "$cfg")
id=$(basename "$out")
echo "start $id" >> "$CALLS"
[ "$3" = "--resume" ] && echo "resume $id" >> "$CALLS"
if [ -n "$FAIL_ID" ] && [ "$id" = "$FAIL_ID" ]; then echo "boom" >&2; exit 3; fi
# A complete checkpoint (as cpt train leaves one) before the long part of training.
mkdir -p "$out/checkpoints/step-00000001/trainer_state"
for f in trainer_state.json optimizer.json optimizer.safetensors; do : > "$out/checkpoints/step-00000001/trainer_state/$f"; done
sleep "${SLEEP:-0}"
awk -v lr="$lr" -v zh="$zh" 'BEGIN { for (s = 0; s <= 2; s++) { d = log(lr) - log(3e-4); zl = 2 + exp(-2*zh) + 0.1*d*d + 0.3/(s+1); el = 2.2 + 0.05*exp(3*zh) + 0.1*d*d + 0.3/(s+1);
  printf "{\"step\":%d,\"tokens\":%d,\"loss\":%.6f,\"lr\":%g,\"elapsed_s\":%d}\n", s*10, s*1000, zl, lr, s;
  printf "{\"kind\":\"val\",\"step\":%d,\"tokens\":%d,\"source\":{\"zh\":{\"loss\":%.6f,\"ppl\":1},\"en\":{\"loss\":%.6f,\"ppl\":1}},\"topic\":{\"math\":{\"loss\":%.6f}}}\n", s*10, s*1000, zl, el, zl + 0.5 } }' > "$out/metrics.jsonl"
echo '{"step":20,"tokens":2000,"elapsed_s":0.1,"flops":1.5e9}' > "$out/DONE.json.tmp" && mv "$out/DONE.json.tmp" "$out/DONE.json"
echo "end $id" >> "$CALLS"
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(grid: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.yaml"), BASE).unwrap();
        std::fs::write(dir.path().join("grid.yaml"), grid).unwrap();
        std::fs::write(dir.path().join("trainer.sh"), FAKE_TRAINER).unwrap();
        std::fs::write(dir.path().join("calls.log"), "").unwrap();
        Setup { dir }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn command(&self, extra: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cpt"));
        c.arg("sweep").arg("--config").arg(self.p("base.yaml")).arg("--grid").arg(self.p("grid.yaml")).arg("--out").arg(self.p("sweep"));
        c.arg("--trainer-cmd").arg(format!("sh {}", self.p("trainer.sh").display()));
        c.args(extra).env("CALLS", self.p("calls.log")).env_remove("CPT_SWEEP_TRAINER");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }
    fn run(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(extra, env).output().unwrap()
    }
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.p("calls.log")).unwrap().lines().map(String::from).collect()
    }
    fn count(&self, line: &str) -> usize {
        self.calls().iter().filter(|l| *l == line).count()
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const IDS: [&str; 4] = ["zh_ratio-0.2__lr-0.0001", "zh_ratio-0.2__lr-0.001", "zh_ratio-0.8__lr-0.0001", "zh_ratio-0.8__lr-0.001"];

#[test]
fn every_point_runs_once_and_results_are_collected() {
    let s = Setup::new(GRID);
    let out = s.run(&[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    for id in IDS {
        assert_eq!(s.count(&format!("start {id}")), 1, "{:?}", s.calls());
        assert!(s.p("sweep/runs").join(id).join("DONE.json").exists());
        let cfg = std::fs::read_to_string(s.p("sweep/runs").join(id).join("sweep-config.yaml")).unwrap();
        assert!(cfg.contains(&*s.p("sweep/runs").join(id).canonicalize().unwrap().to_string_lossy()), "out_dir points at the run: {cfg}");
    }
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.p("sweep/results.json")).unwrap()).unwrap();
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let r = &runs[0];
    assert_eq!(r["status"], "finished");
    let v = &r["values"];
    // zh 0.2, lr 1e-4: final zh loss = 2 + e^-0.4 + 0.1 ln(1/3)^2 + 0.1
    let want = 2.0 + (-0.4f64).exp() + 0.1 * (1.0f64 / 3.0).ln().powi(2) + 0.1;
    assert!((v["val.zh.final"].as_f64().unwrap() - want).abs() < 1e-5, "{v}");
    assert!((v["val.zh.initial"].as_f64().unwrap() - (want + 0.2)).abs() < 1e-5);
    assert_eq!(v["val.zh.best_step"].as_f64(), Some(20.0));
    assert_eq!(v["zh_ratio"].as_f64(), Some(0.2));
    assert_eq!(v["lr"].as_f64(), Some(1e-4));
    assert_eq!(v["tokens"].as_f64(), Some(2000.0));
    assert_eq!(v["flops"].as_f64(), Some(1.5e9));
    assert!(v["topic.math.final"].as_f64().is_some());
    assert!(v["wall_s"].as_f64().unwrap() > 0.0);
    let csv = std::fs::read_to_string(s.p("sweep/results.csv")).unwrap();
    assert!(csv.starts_with("id,status,zh_ratio.label,lr.label,"), "{csv}");
    assert_eq!(csv.lines().count(), 5);
    // Again: nothing reruns.
    let out = s.run(&[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4 already finished"), "{}", text(&out));
    assert_eq!(s.calls().len(), 8);
}

#[test]
fn a_killed_sweep_resumes_without_rerunning_finished_runs() {
    let s = Setup::new(GRID);
    let mut child = s.command(&[], &[("SLEEP", "0.4")]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Kill while the third run is training, after it wrote a checkpoint.
    let third_checkpoint = s.p("sweep/runs").join(IDS[2]).join("checkpoints/step-00000001/trainer_state/optimizer.safetensors");
    while s.calls().iter().filter(|l| l.starts_with("end")).count() < 2 || !third_checkpoint.exists() {
        assert!(Instant::now() < deadline, "the sweep did not finish two runs: {:?}", s.calls());
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    // A trainer still running must die with the sweep, not finish behind its back.
    std::thread::sleep(Duration::from_millis(900));
    let ended_before: Vec<String> = s.calls().iter().filter_map(|l| l.strip_prefix("end ").map(String::from)).collect();
    assert_eq!(ended_before.len(), 2, "an orphaned trainer finished after the kill: {:?}", s.calls());
    let interrupted = s.calls().iter().filter_map(|l| l.strip_prefix("start ")).find(|id| !ended_before.iter().any(|e| e == id)).unwrap().to_string();
    let out = s.run(&[], &[("SLEEP", "0")]);
    assert!(out.status.success(), "{}", text(&out));
    for id in IDS {
        assert_eq!(s.count(&format!("end {id}")), 1, "{id} finished more than once: {:?}", s.calls());
    }
    for id in &ended_before {
        assert_eq!(s.count(&format!("start {id}")), 1, "finished run {id} was rerun: {:?}", s.calls());
    }
    assert_eq!(s.count(&format!("start {interrupted}")), 2, "the interrupted run is trained again");
    assert_eq!(s.count(&format!("resume {interrupted}")), 1, "and resumed from its checkpoint: {:?}", s.calls());
    assert_eq!(s.calls().iter().filter(|l| l.starts_with("resume")).count(), 1, "{:?}", s.calls());
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.p("sweep/sweep_state.json")).unwrap()).unwrap();
    for id in IDS {
        assert_eq!(state["runs"][id]["status"], "finished");
    }
}

#[test]
fn failed_runs_are_reported_and_retried_on_the_next_invocation() {
    let s = Setup::new(GRID);
    let out = s.run(&["--parallel", "2"], &[("FAIL_ID", IDS[1])]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("1 runs failed") && msg.contains(IDS[1]) && msg.contains("train.log"), "{msg}");
    assert!(std::fs::read_to_string(s.p("sweep/runs").join(IDS[1]).join("train.log")).unwrap().contains("boom"));
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.p("sweep/sweep_state.json")).unwrap()).unwrap();
    assert_eq!(state["runs"][IDS[1]]["status"], "failed");
    assert_eq!(state["runs"][IDS[1]]["exit_code"], 3);
    let out = s.run(&[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.count(&format!("start {}", IDS[1])), 2);
    for id in [IDS[0], IDS[2], IDS[3]] {
        assert_eq!(s.count(&format!("start {id}")), 1);
    }
}

#[test]
fn a_finished_run_whose_config_changed_is_refused() {
    let s = Setup::new(GRID);
    assert!(s.run(&[], &[]).status.success());
    let out = s.run(&["--set", "train.max_tokens=2000"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is finished but its config"), "{}", text(&out));
}

#[test]
fn dry_run_lays_out_configs_without_training() {
    let s = Setup::new(GRID);
    let out = s.run(&["--dry-run"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pending zh_ratio-0.8__lr-0.001"), "{}", text(&out));
    assert!(s.calls().is_empty());
    assert!(s.p("sweep/runs").join(IDS[3]).join("sweep-config.yaml").exists());
    assert!(s.p("sweep/base.yaml").exists() && s.p("sweep/grid.yaml").exists());
}

#[test]
fn malformed_metrics_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, "{\"step\":0,\"loss\":3.0}\n{\"kind\":\"val\",\"step\":5,\"source\":{\"zh\":{\"ppl\":3}}}\n").unwrap();
    let e = format!("{:#}", cpt::sweep::results::read_metrics(&path).unwrap_err());
    assert!(e.contains("metrics.jsonl:2") && e.contains("source.zh"), "{e}");
    std::fs::write(&path, "{\"step\":0,\"loss\":3.0}\nnot json\n").unwrap();
    let e = format!("{:#}", cpt::sweep::results::read_metrics(&path).unwrap_err());
    assert!(e.contains("metrics.jsonl:2"), "{e}");
}

#[test]
fn charts_are_drawn_as_svg_and_png() {
    let s = Setup::new(GRID);
    for fmt in ["svg", "png"] {
        let out = s.run(&["--chart-format", fmt], &[]);
        assert!(out.status.success(), "{}", text(&out));
        for name in [format!("heatmap_val_zh_final.{fmt}"), format!("heatmap_val_en_final.{fmt}"), format!("curves_val_zh.{fmt}")] {
            let p = s.p("sweep/charts").join(&name);
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            assert!(len > 3000, "{name}: {len} bytes\n{}", text(&out));
        }
    }
    let svg = std::fs::read_to_string(s.p("sweep/charts/heatmap_val_zh_final.svg")).unwrap();
    assert!(svg.contains("zh_ratio") && svg.contains("0.0001") && svg.contains("val.zh.final"));
}

#[test]
fn the_done_marker_helper_marks_a_run_finished() {
    use cpt::sweep::runner::{is_finished, write_done_marker};
    let dir = tempfile::tempdir().unwrap();
    assert!(!is_finished(dir.path()).unwrap());
    write_done_marker(dir.path(), &serde_json::json!({"step": 10, "tokens": 4096, "elapsed_s": 1.5})).unwrap();
    assert!(is_finished(dir.path()).unwrap());
    std::fs::write(dir.path().join("DONE.json"), "{half").unwrap();
    let e = format!("{:#}", is_finished(dir.path()).unwrap_err());
    assert!(e.contains("DONE.json") && e.contains("not valid JSON"), "{e}");
}

/// With `cpt train` as the trainer, every run's config is read before the first run starts:
/// a base config without `train:` is one error naming a run and the field, and nothing runs.
#[test]
fn invalid_run_configs_refuse_the_sweep_before_any_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let base = "run: {out_dir: out, seed: 1, device: cpu}
model: {path: no-model-needed}
data:
  sources:
    - {name: zh, paths: zh.jsonl, weight: 0.5}
    - {name: en, paths: en.jsonl, weight: 0.5}
optim: {lr: 0.001}
";
    std::fs::write(p("base.yaml"), base).unwrap();
    std::fs::write(p("grid.yaml"), "axes:\n  lr:\n    optim.lr: [1.0e-4, 1.0e-3]\n").unwrap();
    let sweep = |base: &str| {
        Command::new(env!("CARGO_BIN_EXE_cpt"))
            .args(["sweep", "--config", base, "--grid", "grid.yaml", "--out", "sweep"])
            .current_dir(dir.path())
            .env_remove("CPT_SWEEP_TRAINER")
            .output()
            .unwrap()
    };
    let out = sweep("base.yaml");
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("run `lr-0.0001`") && t.contains("sweep-config.yaml") && t.contains("`train`"), "{t}");
    assert!(t.contains("no run was started"), "{t}");
    assert!(!p("sweep/sweep_state.json").exists() && !p("sweep/runs/lr-0.0001/train.log").exists(), "nothing ran");

    // With the section present, a value only one grid point gets is named with that run.
    std::fs::write(p("base2.yaml"), format!("{base}train: {{max_steps: 2}}\n")).unwrap();
    std::fs::write(p("grid.yaml"), "axes:\n  lr:\n    optim.lr: [1.0e-3, -1.0]\n").unwrap();
    let out = sweep("base2.yaml");
    let t = text(&out);
    assert!(!out.status.success() && t.contains("run `lr--1.0`") && t.contains("optim.lr: must be > 0"), "{t}");
    assert!(!p("sweep/runs/lr-0.001/train.log").exists(), "the valid run did not start either");
}
