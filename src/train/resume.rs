//! Where a run starts from: a fresh run, the newest complete checkpoint, or a given one; and
//! restoring a checkpoint's optimiser and sampler state.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;

use super::checkpoint::{is_complete, load_checkpoint, Checkpoints, TrainerState};
use super::optim::Optimizer;
use crate::data::sampler::{Sampler, SamplerState};

/// Where a run starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// A new run; refuses a run directory that already holds checkpoints.
    Fresh,
    /// The newest complete checkpoint of the run directory.
    Latest,
    /// A given checkpoint directory.
    From(PathBuf),
}

impl Resume {
    /// The checkpoint to load, if any.
    pub fn resolve(&self, checkpoints: &Checkpoints) -> Result<Option<PathBuf>> {
        match self {
            Resume::Fresh => {
                if let Some(latest) = checkpoints.latest()? {
                    bail!(
                        "the run directory already has checkpoints (newest: {}); pass --resume to continue it, or choose another run.out_dir",
                        latest.display()
                    );
                }
                Ok(None)
            }
            Resume::Latest => match checkpoints.latest()? {
                Some(dir) => Ok(Some(dir)),
                None => bail!("--resume: no complete checkpoint under {}", checkpoints.root().display()),
            },
            Resume::From(dir) => {
                if !is_complete(dir) {
                    bail!("--resume {}: not a complete checkpoint (no trainer_state)", dir.display());
                }
                Ok(Some(dir.clone()))
            }
        }
    }
}

/// Loads the optimiser state of checkpoint `dir` and puts the sampler where it was; returns
/// the rest of the state (counters, guard) for the loop. A changed data plan is reported,
/// not refused.
pub fn restore(dir: &Path, optimizer: &mut Optimizer, sampler: &mut Sampler, device: &Device) -> Result<TrainerState> {
    let state = load_checkpoint(dir, optimizer, device)?;
    let sampler_state: SamplerState = serde_json::from_value(state.sampler.clone())
        .with_context(|| format!("{}: the sampler state does not parse", dir.display()))?;
    let report = sampler.restore(&sampler_state)?;
    if !report.is_exact() {
        eprintln!("resume: the data plan changed since the checkpoint:\n  {}", report.changes.join("\n  "));
    }
    Ok(state)
}
