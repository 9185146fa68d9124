//! Run checkpoints: `checkpoints/step-XXXXXXXX/` holds the model in Hugging Face layout
//! (written by a caller-supplied closure) and `trainer_state/` (optimiser tensors + the
//! JSON `TrainerState`). Each is written under a temporary name, fsynced and renamed, so a
//! crash or an IO error at any moment leaves the previous checkpoints complete; only
//! complete checkpoints are ever listed, resumed from or counted for `keep_last`.
use crate::train::guard::Guard;
use crate::train::optim::{Optimizer, STATE_META_FILE, STATE_TENSORS_FILE};
use crate::util::atomic::{is_temporary_name, AtomicDir};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_DIR: &str = "trainer_state";
pub const STATE_FILE: &str = "trainer_state.json";
const DIR_PREFIX: &str = "step-";
/// Bumped when `TrainerState` changes incompatibly.
pub const STATE_FORMAT: u32 = 1;

/// Everything besides the model weights and optimiser tensors that a resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    /// Optimiser steps taken (skipped steps included: they consumed data).
    pub step: u64,
    /// Tokens consumed.
    pub tokens: u64,
    /// Position in the LR schedule's unit, and the LR of the last step.
    pub schedule_position: f64,
    pub lr: f64,
    /// Updates actually applied by the optimiser.
    pub optimizer_steps: u64,
    /// The loop's random state (dropout / shuffling seeds), as the loop defines it.
    pub rng: serde_json::Value,
    pub guard: Guard,
    /// `Sampler::state()` of the data pipeline.
    pub sampler: serde_json::Value,
    /// The resolved training config the run used.
    pub config: serde_json::Value,
    /// Wall time trained so far (seconds), so throughput and ETA continue across resumes.
    pub elapsed_s: f64,
}

/// The checkpoints of one run, under `<run dir>/checkpoints`.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    root: PathBuf,
    keep_last: usize,
}

impl Checkpoints {
    pub fn new(root: impl Into<PathBuf>, keep_last: usize) -> Self {
        Self { root: root.into(), keep_last: keep_last.max(1) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the checkpoint after `step` steps.
    pub fn dir_for(&self, step: u64) -> PathBuf {
        self.root.join(format!("{DIR_PREFIX}{step:08}"))
    }

    /// Write a checkpoint atomically, then prune to `keep_last`. `write_model` writes the HF
    /// model files into the directory it is given (e.g. `CausalLm::save_pretrained`). On any
    /// error nothing under the final name changes and the temporary directory is removed.
    pub fn save(
        &self,
        state: &TrainerState,
        optimizer: &Optimizer,
        write_model: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.root).with_context(|| format!("creating {}", self.root.display()))?;
        let target = self.dir_for(state.step);
        let staging = AtomicDir::create(&target)?;
        write_model(staging.path()).with_context(|| format!("writing the model into {}", staging.path().display()))?;
        let state_dir = staging.path().join(STATE_DIR);
        std::fs::create_dir(&state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
        optimizer.save(&state_dir)?;
        let json = serde_json::to_vec_pretty(state).context("serialising the trainer state")?;
        let state_path = state_dir.join(STATE_FILE);
        std::fs::write(&state_path, json).with_context(|| format!("writing {}", state_path.display()))?;
        let dir = staging.commit().with_context(|| format!("committing checkpoint {}", target.display()))?;
        self.prune()?;
        Ok(dir)
    }

    /// Complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.root.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temporary_name(&name) {
                continue;
            }
            let Some(step) = name.strip_prefix(DIR_PREFIX).and_then(|s| s.parse::<u64>().ok()) else { continue };
            if is_complete(&entry.path()) {
                found.push((step, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The newest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.list()?.pop().map(|(_, p)| p))
    }

    /// Delete all but the newest `keep_last` complete checkpoints.
    pub fn prune(&self) -> Result<()> {
        let all = self.list()?;
        let excess = all.len().saturating_sub(self.keep_last);
        for (_, dir) in all.into_iter().take(excess) {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing old checkpoint {}", dir.display()))?;
        }
        Ok(())
    }

    /// Remove temporary directories left by a crashed save. Call only when no other
    /// process writes into this run.
    pub fn remove_stale_temporaries(&self) -> Result<usize> {
        let mut removed = 0;
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Ok(0) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(DIR_PREFIX) && is_temporary_name(&name) {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing abandoned {}", entry.path().display()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A checkpoint directory whose trainer state and optimiser files are all present.
pub fn is_complete(dir: &Path) -> bool {
    let state = dir.join(STATE_DIR);
    [STATE_FILE, STATE_META_FILE, STATE_TENSORS_FILE].iter().all(|f| state.join(f).is_file())
}

/// Read `trainer_state/trainer_state.json` of a checkpoint.
pub fn load_trainer_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_DIR).join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let state: TrainerState = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if state.format != STATE_FORMAT {
        bail!("{}: trainer state format {} (this cpt reads {STATE_FORMAT})", path.display(), state.format);
    }
    Ok(state)
}

/// Read a checkpoint's trainer state and load its optimiser tensors into `optimizer`
/// (the model is loaded separately, e.g. `CausalLm::from_pretrained(dir, ..)`).
pub fn load_checkpoint(dir: &Path, optimizer: &mut Optimizer, device: &Device) -> Result<TrainerState> {
    if !is_complete(dir) {
        bail!("{} is not a complete checkpoint (no {STATE_DIR}/{STATE_FILE} and optimiser files)", dir.display());
    }
    let state = load_trainer_state(dir)?;
    optimizer.load(&dir.join(STATE_DIR), device)?;
    Ok(state)
}
