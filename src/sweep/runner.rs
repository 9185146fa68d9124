//! Runs a planned sweep: each run is an ordinary `cpt train --config <run_dir>/config.yaml`
//! subprocess (the trainer command is configurable, which is how tests run it without a
//! model), one after another or N at once. A state file records every attempt; a run is
//! finished only when its directory holds the completion marker `DONE.json`, which the
//! training loop writes atomically at the end of a run. A killed or interrupted sweep,
//! started again with the same arguments, skips finished runs and restarts the others
//! (with `--resume` when the run has a complete checkpoint, so `cpt train` continues it).

use crate::util::atomic::write_file_atomic as write_atomic;
use super::grid::PlannedRun;
use super::yaml_path;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Written atomically by the training loop when a run completes; its content is the run's
/// summary (`step`, `tokens`, `elapsed_s`, optionally `flops`, `final_loss`).
pub const DONE_MARKER: &str = "DONE.json";
pub const STATE_FILE: &str = "sweep_state.json";
pub const RUNS_DIR: &str = "runs";
/// The config the sweep resolved for a run (`cpt train` writes its own normalised copy to
/// `config.yaml`, so the sweep keeps its version under another name to detect changes).
pub const RUN_CONFIG: &str = "sweep-config.yaml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Running,
    Finished,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub status: RunStatus,
    pub config_hash: String,
    pub attempts: u32,
    /// Wall time summed over attempts, seconds.
    pub wall_s: f64,
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepState {
    pub runs: BTreeMap<String, RunRecord>,
}

impl SweepState {
    pub fn load(sweep_dir: &Path) -> Result<Self> {
        let path = sweep_dir.join(STATE_FILE);
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a valid sweep state file", path.display()))
    }

    fn save(&self, sweep_dir: &Path) -> Result<()> {
        write_atomic(&sweep_dir.join(STATE_FILE), serde_json::to_string_pretty(self)?.as_bytes())
    }
}

/// A run laid out on disk.
#[derive(Debug, Clone)]
pub struct PreparedRun {
    pub plan: PlannedRun,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config_hash: String,
    pub finished: bool,
}

pub fn run_dir(sweep_dir: &Path, id: &str) -> PathBuf {
    sweep_dir.join(RUNS_DIR).join(id)
}

/// Whether `dir` holds a valid completion marker (a malformed one is an error, never
/// silently "unfinished": the marker is written atomically, so damage needs a look).
pub fn is_finished(dir: &Path) -> Result<bool> {
    let marker = dir.join(DONE_MARKER);
    if !marker.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&marker).with_context(|| format!("reading {}", marker.display()))?;
    serde_json::from_str::<serde_json::Value>(&text).with_context(|| format!("{}: the completion marker is not valid JSON", marker.display()))?;
    Ok(true)
}

/// For the training loop: marks `run_dir` finished by writing `DONE.json` atomically with
/// the run summary (`step`, `tokens`, `elapsed_s`, optionally `flops`, `final_loss`). Call
/// it last, after the final checkpoint is complete.
pub fn write_done_marker(run_dir: &Path, summary: &serde_json::Value) -> Result<()> {
    write_atomic(&run_dir.join(DONE_MARKER), serde_json::to_string_pretty(summary)?.as_bytes())
}

fn hash_text(text: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Writes each run's resolved `config.yaml` (its output directory set to the run's
/// directory) and finds the finished ones. A finished run whose config would now differ is
/// an error: its results no longer describe the grid point.
pub fn prepare_runs(sweep_dir: &Path, plan: Vec<PlannedRun>, out_dir_key: &str) -> Result<Vec<PreparedRun>> {
    std::fs::create_dir_all(sweep_dir.join(RUNS_DIR)).with_context(|| format!("creating {}", sweep_dir.join(RUNS_DIR).display()))?;
    let sweep_dir = sweep_dir.canonicalize().with_context(|| format!("resolving {}", sweep_dir.display()))?;
    let mut out = Vec::new();
    for mut run in plan {
        let dir = run_dir(&sweep_dir, &run.id);
        yaml_path::set_or_insert(&mut run.config, out_dir_key, serde_yaml::Value::from(dir.to_string_lossy().into_owned()))
            .map_err(|e| anyhow::anyhow!("out_dir_key: {e}"))?;
        let text = serde_yaml::to_string(&run.config)?;
        let config_hash = hash_text(&text);
        let config_path = dir.join(RUN_CONFIG);
        let finished = is_finished(&dir)?;
        if finished {
            let old = std::fs::read_to_string(&config_path).unwrap_or_default();
            if hash_text(&old) != config_hash {
                bail!(
                    "run `{}` is finished but its config {} differs from what the grid and base config now give; \
                     move that run directory away (or sweep into a new --out) to rerun it",
                    run.id,
                    config_path.display()
                );
            }
        } else {
            write_atomic(&config_path, text.as_bytes())?;
        }
        out.push(PreparedRun { plan: run, dir, config_path, config_hash, finished });
    }
    Ok(out)
}

/// Whether the run already has a complete checkpoint to resume from.
fn has_checkpoint(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir.join("checkpoints")) else { return false };
    entries.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().starts_with("step-") && crate::train::checkpoint::is_complete(&e.path()))
}

/// How to run the trainer.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Program and leading arguments; `--config <path>` is appended, and `--resume` when
    /// the run directory holds a complete checkpoint from an earlier attempt.
    pub trainer: Vec<String>,
    /// Runs at once.
    pub parallel: usize,
    /// Optional accelerator ids: run slot k gets `CUDA_VISIBLE_DEVICES=devices[k % len]`.
    pub devices: Vec<String>,
}

/// What happened to each run in this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    AlreadyFinished,
    Finished,
    Failed(Option<i32>),
    Interrupted,
    NotStarted,
}

#[derive(Debug, Clone)]
pub struct SweepReport {
    pub outcomes: Vec<(String, Outcome)>,
    pub interrupted: bool,
}

impl SweepReport {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| f(o)).count()
    }
}

struct Shared {
    next: usize,
    state: SweepState,
    outcomes: Vec<Outcome>,
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

fn terminate(child: &mut Child) {
    #[cfg(unix)]
    unsafe {
        // SIGTERM first so a trainer can finish its checkpoint write.
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn(run: &PreparedRun, opts: &RunnerOptions, slot: usize, attempt: u32) -> Result<Child> {
    let log_path = run.dir.join("train.log");
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("opening {}", log_path.display()))?;
    use std::io::Write;
    let resume = has_checkpoint(&run.dir);
    writeln!(log, "== cpt sweep: attempt {attempt}: {} --config {}{}", opts.trainer.join(" "), run.config_path.display(), if resume { " --resume" } else { "" })?;
    let mut cmd = Command::new(&opts.trainer[0]);
    cmd.args(&opts.trainer[1..]).arg("--config").arg(&run.config_path);
    if resume {
        cmd.arg("--resume");
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    if !opts.devices.is_empty() {
        cmd.env("CUDA_VISIBLE_DEVICES", &opts.devices[slot % opts.devices.len()]);
    }
    die_with_parent(&mut cmd);
    cmd.spawn().with_context(|| format!("starting the trainer `{}` for run `{}`", opts.trainer[0], run.plan.id))
}

/// Runs every unfinished run. SIGINT/SIGTERM stop the sweep: running trainers get SIGTERM,
/// their runs are marked interrupted, and the state file says where to continue.
pub fn run_sweep(sweep_dir: &Path, runs: &[PreparedRun], opts: &RunnerOptions) -> Result<SweepReport> {
    if opts.trainer.is_empty() {
        bail!("the trainer command is empty");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing the sweep's signal handler")?;
    }
    let mut state = SweepState::load(sweep_dir)?;
    let mut outcomes = Vec::with_capacity(runs.len());
    for run in runs {
        let record = state.runs.entry(run.plan.id.clone()).or_insert(RunRecord {
            status: RunStatus::Pending,
            config_hash: run.config_hash.clone(),
            attempts: 0,
            wall_s: 0.0,
            exit_code: None,
        });
        record.config_hash = run.config_hash.clone();
        if run.finished {
            record.status = RunStatus::Finished;
            outcomes.push(Outcome::AlreadyFinished);
        } else {
            if record.status == RunStatus::Finished {
                // The marker disappeared (run dir cleaned): run it again.
                record.status = RunStatus::Pending;
            }
            outcomes.push(Outcome::NotStarted);
        }
    }
    state.save(sweep_dir)?;
    let shared = Mutex::new(Shared { next: 0, state, outcomes });
    let workers = opts.parallel.max(1);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|slot| {
                let shared = &shared;
                let stop = &stop;
                scope.spawn(move || -> Result<()> {
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        // Claim the next unfinished run.
                        let (i, attempt) = {
                            let mut s = shared.lock().expect("sweep state lock");
                            while s.next < runs.len() && runs[s.next].finished {
                                s.next += 1;
                            }
                            if s.next >= runs.len() {
                                return Ok(());
                            }
                            let i = s.next;
                            s.next += 1;
                            let rec = s.state.runs.get_mut(&runs[i].plan.id).expect("record exists");
                            rec.status = RunStatus::Running;
                            rec.attempts += 1;
                            let attempt = rec.attempts;
                            s.state.save(sweep_dir)?;
                            (i, attempt)
                        };
                        let run = &runs[i];
                        eprintln!("[sweep] start {} (attempt {attempt})", run.plan.id);
                        let started = Instant::now();
                        let mut child = spawn(run, opts, slot, attempt)?;
                        let status = loop {
                            if let Some(status) = child.try_wait()? {
                                break Some(status);
                            }
                            if stop.load(Ordering::SeqCst) {
                                terminate(&mut child);
                                break None;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        };
                        let wall = started.elapsed().as_secs_f64();
                        let finished = is_finished(&run.dir)?;
                        let mut s = shared.lock().expect("sweep state lock");
                        let rec = s.state.runs.get_mut(&run.plan.id).expect("record exists");
                        rec.wall_s += wall;
                        rec.exit_code = status.and_then(|st| st.code());
                        let outcome = if finished {
                            Outcome::Finished
                        } else if status.is_none() {
                            Outcome::Interrupted
                        } else {
                            Outcome::Failed(rec.exit_code)
                        };
                        rec.status = match outcome {
                            Outcome::Finished => RunStatus::Finished,
                            Outcome::Interrupted => RunStatus::Interrupted,
                            _ => RunStatus::Failed,
                        };
                        match &outcome {
                            Outcome::Finished => eprintln!("[sweep] done  {} in {wall:.1}s", run.plan.id),
                            Outcome::Interrupted => eprintln!("[sweep] stopped {}", run.plan.id),
                            _ => eprintln!(
                                "[sweep] FAILED {} (exit {:?}, no {DONE_MARKER}); see {}",
                                run.plan.id,
                                rec.exit_code,
                                run.dir.join("train.log").display()
                            ),
                        }
                        s.outcomes[i] = outcome;
                        s.state.save(sweep_dir)?;
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a sweep worker panicked")))).collect()
    });
    for r in results {
        r?;
    }
    let s = shared.into_inner().expect("sweep state lock");
    let outcomes = runs.iter().map(|r| r.plan.id.clone()).zip(s.outcomes).collect();
    Ok(SweepReport { outcomes, interrupted: stop.load(Ordering::SeqCst) })
}
