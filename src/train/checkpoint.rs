//! Run checkpoints: `checkpoints/step-XXXXXXXX/` holds the model in Hugging Face layout
//! (written by a caller-supplied closure) and `trainer_state/` (optimiser tensors + the
//! JSON `TrainerState`). Each is written under a temporary name, fsynced and renamed, so a
//! crash or an IO error at any moment leaves the previous checkpoints complete; only
//! complete checkpoints are ever listed, resumed from or counted for `keep_last`.
use crate::dist::optimizer::ParallelOptimizer;
use crate::dist::World;
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
        self.save_with(state, |dir| optimizer.save(dir), write_model)
    }

    /// [`Checkpoints::save`] with the optimiser's files written by `write_optimizer` into
    /// the state directory.
    fn save_with(
        &self,
        state: &TrainerState,
        write_optimizer: impl FnOnce(&Path) -> Result<()>,
        write_model: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.root).with_context(|| format!("creating {}", self.root.display()))?;
        let target = self.dir_for(state.step);
        let staging = AtomicDir::create(&target)?;
        write_model(staging.path()).with_context(|| format!("writing the model into {}", staging.path().display()))?;
        let state_dir = staging.path().join(STATE_DIR);
        std::fs::create_dir(&state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
        write_optimizer(&state_dir)?;
        let json = serde_json::to_vec_pretty(state).context("serialising the trainer state")?;
        let state_path = state_dir.join(STATE_FILE);
        std::fs::write(&state_path, json).with_context(|| format!("writing {}", state_path.display()))?;
        let dir = staging.commit().with_context(|| format!("committing checkpoint {}", target.display()))?;
        self.prune()?;
        Ok(dir)
    }

    /// A checkpoint written by every rank of `world`. With one rank and a replicated
    /// optimiser this is exactly [`Checkpoints::save`]. Otherwise rank 0 creates the
    /// temporary directory and writes the model (`write_model`, called on rank 0 only) and
    /// the trainer state; the optimiser state is written once by rank 0 (ZeRO-0) or as one
    /// shard per rank plus an index (ZeRO-1/3); after a barrier that each rank reaches once
    /// its part is durable, rank 0 writes the completeness marker and renames the directory
    /// into place. Every rank calls it and gets the same result.
    pub fn save_parallel(
        &self,
        world: &World,
        state: &TrainerState,
        optimizer: &ParallelOptimizer,
        write_model: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let comm = world.comm();
        let target = self.dir_for(state.step);
        if world.size() == 1 && !optimizer.is_sharded() {
            return self.save_with(state, |dir| optimizer.save_whole(dir), write_model);
        }
        let staging = if world.is_main() {
            std::fs::create_dir_all(&self.root).with_context(|| format!("creating {}", self.root.display()))?;
            let staging = AtomicDir::create(&target)?;
            write_model(staging.path()).with_context(|| format!("writing the model into {}", staging.path().display()))?;
            std::fs::create_dir(staging.path().join(STATE_DIR))
                .with_context(|| format!("creating {}", staging.path().join(STATE_DIR).display()))?;
            Some(staging)
        } else {
            None
        };
        let mut path = staging.as_ref().map(|s| s.path().to_string_lossy().into_owned().into_bytes()).unwrap_or_default();
        comm.broadcast_vec(&mut path, 0)?;
        let state_dir = PathBuf::from(String::from_utf8(path).context("the checkpoint path from rank 0 is not UTF-8")?).join(STATE_DIR);
        if optimizer.is_sharded() {
            let meta = optimizer.save_shard(&state_dir)?;
            let metas = comm
                .all_gather_vec(&serde_json::to_vec(&meta)?)?
                .iter()
                .map(|b| serde_json::from_slice(b).context("a rank's shard metadata does not parse"))
                .collect::<Result<Vec<_>>>()?;
            if world.is_main() {
                crate::dist::checkpoint::write_index(&state_dir, &optimizer.shard_index(&metas)?)?;
            }
        } else if world.is_main() {
            optimizer.save_whole(&state_dir)?;
        }
        if let Some(staging) = staging {
            let json = serde_json::to_vec_pretty(state).context("serialising the trainer state")?;
            let state_path = state_dir.join(STATE_FILE);
            std::fs::write(&state_path, json).with_context(|| format!("writing {}", state_path.display()))?;
            // Every rank's part is durable once it passes this barrier.
            comm.barrier()?;
            if optimizer.is_sharded() {
                crate::dist::checkpoint::write_complete_marker(&state_dir, world.size())?;
            }
            let dir = staging.commit().with_context(|| format!("committing checkpoint {}", target.display()))?;
            self.prune()?;
            comm.barrier()?;
            Ok(dir)
        } else {
            comm.barrier()?;
            // Rank 0 commits; the second barrier returns once the directory is in place.
            comm.barrier()?;
            Ok(target)
        }
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

/// A checkpoint directory whose trainer state and optimiser files are all present: the
/// single-file optimiser state, or every rank's shard with the marker written after them.
pub fn is_complete(dir: &Path) -> bool {
    let state = dir.join(STATE_DIR);
    state.join(STATE_FILE).is_file()
        && ([STATE_META_FILE, STATE_TENSORS_FILE].iter().all(|f| state.join(f).is_file())
            || crate::dist::checkpoint::is_complete_sharded(&state))
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

/// As [`load_checkpoint`] for the optimiser of a run on any number of ranks: the saved
/// state may come from another world size or ZeRO stage (resharded on load).
pub fn load_checkpoint_parallel(dir: &Path, optimizer: &mut ParallelOptimizer, model: &crate::model::CausalLm, device: &Device) -> Result<TrainerState> {
    if !is_complete(dir) {
        bail!("{} is not a complete checkpoint (no {STATE_DIR}/{STATE_FILE} and optimiser files)", dir.display());
    }
    let state = load_trainer_state(dir)?;
    optimizer.load(&dir.join(STATE_DIR), model, device)?;
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
