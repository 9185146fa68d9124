//! The freeze warm-up after a vocabulary extension (`freeze:`): for its first steps, of the
//! base model's weights only the embeddings and lm_head train, or only the rows `cpt vocab
//! extend` added (with LoRA, the saved modules' new rows, beside the adapters).
use anyhow::{bail, Context, Result};

use crate::config::{FreezeConfig, FreezeTarget, TrainConfig};
use crate::model::causal_lm::CausalLm;
use crate::dist::optimizer::ParallelOptimizer;

/// Whether the optimiser's freeze masks are on.
#[derive(Default)]
pub struct FreezePhase {
    masked: bool,
}

impl FreezePhase {
    /// Before step `step` (0-based): masks on for steps `0..freeze.steps` (set again on a
    /// resume inside the warm-up), cleared at `freeze.steps`.
    pub fn apply(&mut self, cfg: &TrainConfig, model: &CausalLm, optimizer: &mut ParallelOptimizer, step: u64) -> Result<()> {
        let Some(freeze) = &cfg.freeze else { return Ok(()) };
        let warm_up = step < freeze.steps.get();
        if warm_up && !self.masked {
            start_freeze(cfg, model, optimizer, freeze)?;
            self.masked = true;
        } else if !warm_up && self.masked {
            optimizer.clear_masks();
            self.masked = false;
        }
        Ok(())
    }
}

/// Starts the freeze warm-up: only the embeddings and lm_head train, or only the rows of
/// the vocabulary added by `cpt vocab extend`.
fn start_freeze(cfg: &TrainConfig, model: &CausalLm, optimizer: &mut ParallelOptimizer, freeze: &FreezeConfig) -> Result<()> {
    let new_rows: Vec<u32> = match freeze.train_only {
        FreezeTarget::Embeddings => Vec::new(),
        FreezeTarget::NewVocabRows => {
            let old = freeze_old_vocab_size(cfg, freeze)?;
            let rows = model.config().vocab_size;
            if old >= rows {
                bail!("freeze.train_only: new_vocab_rows, but the model has {rows} vocabulary rows and the old vocabulary {old}: no new rows to train");
            }
            (old as u32..rows as u32).collect()
        }
    };
    optimizer.freeze_for(freeze.train_only, &new_rows)
}

fn freeze_old_vocab_size(cfg: &TrainConfig, freeze: &FreezeConfig) -> Result<usize> {
    if let Some(n) = freeze.old_vocab_size {
        return Ok(n);
    }
    crate::vocab::extend::recorded_old_id_space(&cfg.model.path)?.with_context(|| {
        format!(
            "freeze.old_vocab_size is not set and {} records no vocabulary extension (written by `cpt vocab extend`)",
            cfg.model.path.display()
        )
    })
}
