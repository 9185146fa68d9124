//! The warm-up after a vocabulary extension: for the first `steps` optimiser steps only the
//! new embedding rows (or only the embeddings and lm_head) are updated, then everything,
//! as CPT recipes after vocabulary extension do (Chinese-LLaMA's two-stage pre-training
//! trains embeddings first with the transformer frozen).
//!
//! Training YAML (a section the trainer reads):
//! ```yaml
//! freeze:
//!   steps: 200          # optimiser steps of the warm-up
//!   train: new_rows     # new_rows | embeddings
//!   # old_vocab_size: 32000   # default: from vocab_extension.json in the model directory
//! ```
//! [`update_masks`] turns this into one [`UpdateMask`] per named parameter; the optimiser
//! multiplies gradients (before the moment updates, so frozen entries keep zero moments)
//! and the final update (so weight decay spares them too) by [`UpdateMask::to_tensor`].
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::resize::{EMBED, LM_HEAD};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    /// Optimiser steps of the warm-up; from this step on everything trains.
    pub steps: u64,
    /// What trains during the warm-up.
    pub train: FreezeTarget,
    /// First id of the new rows; when absent, read from `vocab_extension.json`.
    #[serde(default)]
    pub old_vocab_size: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreezeTarget {
    /// Only rows `old_vocab_size..` of embed_tokens and lm_head.
    NewRows,
    /// embed_tokens and lm_head entirely.
    Embeddings,
}

/// How one parameter may change in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMask {
    All,
    Frozen,
    /// Only rows `start..` (dimension 0) change.
    RowsFrom(usize),
}

impl UpdateMask {
    /// The mask as a tensor that broadcasts against a parameter of `shape`: `None` for
    /// `All` (nothing to do), zeros for `Frozen` (shape [1; rank]), and a [rows, 1, ..]
    /// column of 0/1 for `RowsFrom`.
    pub fn to_tensor(&self, shape: &[usize], device: &Device) -> Result<Option<Tensor>> {
        let mut mask_shape = vec![1usize; shape.len().max(1)];
        match *self {
            UpdateMask::All => Ok(None),
            UpdateMask::Frozen => Ok(Some(Tensor::zeros(mask_shape, DType::F32, device)?)),
            UpdateMask::RowsFrom(start) => {
                let rows = *shape.first().context("a row mask needs a parameter with rows")?;
                let values: Vec<f32> = (0..rows).map(|r| if r >= start { 1.0 } else { 0.0 }).collect();
                mask_shape[0] = rows;
                Ok(Some(Tensor::from_vec(values, mask_shape, device)?))
            }
        }
    }
}

impl FreezeConfig {
    /// Checks the section; `model_dir` supplies `old_vocab_size` when the config does not.
    pub fn resolve_old_vocab_size(&self, model_dir: &Path) -> Result<usize> {
        if let Some(n) = self.old_vocab_size {
            return Ok(n);
        }
        super::extend::recorded_old_id_space(model_dir)?.with_context(|| {
            format!(
                "freeze.old_vocab_size is not set and {} has no {} (written by `cpt vocab extend`)",
                model_dir.display(),
                super::extend::EXTENSION_FILE
            )
        })
    }

    /// Masks for optimiser step `step` (0-based): the warm-up masks before `steps`, then all `All`.
    pub fn masks_at_step(&self, step: u64, params: &[(String, Var)], old_vocab_size: usize) -> Result<Vec<UpdateMask>> {
        if step >= self.steps {
            return Ok(vec![UpdateMask::All; params.len()]);
        }
        update_masks(params, self.train, old_vocab_size)
    }
}

/// The warm-up masks for the model's named parameters (HF names), in the same order.
pub fn update_masks(params: &[(String, Var)], target: FreezeTarget, old_vocab_size: usize) -> Result<Vec<UpdateMask>> {
    let shapes: Vec<(String, Vec<usize>)> = params.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
    update_masks_for_shapes(&shapes, target, old_vocab_size)
}

/// [`update_masks`] on names and shapes alone.
pub fn update_masks_for_shapes(
    params: &[(String, Vec<usize>)],
    target: FreezeTarget,
    old_vocab_size: usize,
) -> Result<Vec<UpdateMask>> {
    let is_embedding = |name: &str| name == EMBED || name == LM_HEAD;
    if !params.iter().any(|(n, _)| is_embedding(n)) {
        bail!("freeze: the model has no `{EMBED}` or `{LM_HEAD}` parameter");
    }
    params
        .iter()
        .map(|(name, shape)| {
            if !is_embedding(name) {
                return Ok(UpdateMask::Frozen);
            }
            match target {
                FreezeTarget::Embeddings => Ok(UpdateMask::All),
                FreezeTarget::NewRows => {
                    let rows = shape.first().copied().unwrap_or(0);
                    if old_vocab_size >= rows {
                        bail!(
                            "freeze.train = new_rows, but `{name}` has {rows} rows and old_vocab_size is \
                             {old_vocab_size}: there are no new rows to train"
                        );
                    }
                    Ok(UpdateMask::RowsFrom(old_vocab_size))
                }
            }
        })
        .collect()
}
