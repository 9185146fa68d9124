//! `cpt lora merge`: a base model plus an adapter -> a plain Hugging Face model directory
//! (W + scaling · B A per adapted layer, saved modules in place), written atomically.
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use crate::model::io;
use crate::model::{CausalLm, SaveOptions};
use crate::util::atomic::AtomicDir;

/// What a merge wrote.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub adapted_layers: usize,
    pub dtype: DType,
    /// A tied base became untied (its embeddings and head were trained as separate copies).
    pub untied: bool,
}

/// Merges `adapter` into `base` and writes the result to `out` in `dtype` (default: the
/// dtype the base's weights are stored in). The sum is taken in f32; `out`
/// appears complete or not at all.
pub fn merge_to_dir(base: &Path, adapter: &Path, out: &Path, dtype: Option<DType>, max_shard_bytes: u64) -> Result<MergeReport> {
    for input in [base, adapter] {
        if same_path(input, out) {
            bail!("--out {} is an input directory; write the merged model elsewhere", out.display());
        }
    }
    let dtype = match dtype {
        Some(d) => d,
        None => io::stored_dtype(base).with_context(|| format!("reading the dtype of {}", base.display()))?,
    };
    let model = CausalLm::from_pretrained_with_adapter(base, Some(adapter), &Device::Cpu, dtype)?;
    let adapted_layers = super::targets::resolve(model.config(), &model.lora_settings().context("adapter settings")?.targets)?.len();
    let (_, untied) = model.merged_weights()?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let staging = AtomicDir::create(out)?;
    let opts = SaveOptions { dtype, max_shard_bytes, assets_from: Some(base.to_path_buf()) };
    model.save_pretrained(staging.path(), &opts)?;
    staging.commit()?;
    Ok(MergeReport { adapted_layers, dtype, untied })
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
