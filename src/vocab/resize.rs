//! Growing a checkpoint's `embed_tokens` (and an untied `lm_head`) to a larger vocabulary.
//!
//! Rows of existing tokens are copied unchanged. A new token's row is the mean of the rows
//! of the pieces the old tokenizer spelled it with (`piece-mean`, as Chinese-LLaMA and
//! transformers' `mean_resizing` motivate: the model starts out reading the new token as it
//! read its pieces), or the mean of all old token rows (`mean`). Padding rows beyond the
//! tokenizer get the overall mean.
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use crate::model::io;

pub const EMBED: &str = "model.embed_tokens.weight";
pub const LM_HEAD: &str = "lm_head.weight";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InitMethod {
    /// Mean of the rows of the old pieces of the new token.
    PieceMean,
    /// Mean of all old token rows.
    Mean,
}

/// What the resize needs to know about the vocabulary change.
pub struct ResizePlan<'a> {
    /// Ids below this are the old tokenizer's: their rows are kept.
    pub old_id_space: usize,
    /// Rows of the new matrices (new id space padded to the multiple).
    pub new_rows: usize,
    /// (new id, old piece ids) for every new token.
    pub new_tokens: &'a [(u32, Vec<u32>)],
    pub init: InitMethod,
}

/// Rounds `n` up to a multiple of `multiple` (0 or 1: unchanged).
pub fn pad_to_multiple(n: usize, multiple: usize) -> usize {
    if multiple <= 1 {
        n
    } else {
        n.div_ceil(multiple) * multiple
    }
}

/// One resized matrix: old token rows, then new-token and padding rows.
pub fn resize_matrix(old: &Tensor, plan: &ResizePlan, name: &str) -> Result<Tensor> {
    let (rows, _hidden) = old.dims2().with_context(|| format!("tensor `{name}` is not a matrix"))?;
    if rows < plan.old_id_space {
        bail!("tensor `{name}` has {rows} rows but the tokenizer uses ids up to {}", plan.old_id_space - 1);
    }
    let old = old.to_dtype(DType::F32)?;
    let kept = old.narrow(0, 0, plan.old_id_space)?;
    let overall_mean = kept.mean_keepdim(0)?; // [1, H]
    let extra = plan.new_rows - plan.old_id_space;
    let mut blocks: Vec<Tensor> = (0..extra).map(|_| overall_mean.clone()).collect();
    for (id, pieces) in plan.new_tokens {
        let slot = (*id as usize)
            .checked_sub(plan.old_id_space)
            .filter(|s| *s < extra)
            .with_context(|| format!("new token id {id} is outside the new rows of `{name}`"))?;
        blocks[slot] = match plan.init {
            InitMethod::Mean => overall_mean.clone(),
            InitMethod::PieceMean => {
                if let Some(bad) = pieces.iter().find(|p| (**p as usize) >= plan.old_id_space) {
                    bail!("piece id {bad} of new token {id} is not an old token");
                }
                let index = Tensor::new(pieces.as_slice(), old.device())?;
                kept.index_select(&index, 0)?.mean_keepdim(0)?
            }
        };
    }
    if blocks.is_empty() {
        return Ok(kept);
    }
    let mut all = vec![kept];
    all.push(Tensor::cat(&blocks, 0)?);
    Ok(Tensor::cat(&all, 0)?)
}

/// Rewrites the checkpoint in `src` into `dst` with resized embeddings and `config.json`.
/// Returns whether the embeddings are tied.
pub fn resize_checkpoint(src: &Path, dst: &Path, plan: &ResizePlan) -> Result<bool> {
    let config_path = src.join("config.json");
    let config = crate::model::config::ModelConfig::from_file(&config_path)?;
    let mut tensors = io::load_safetensors_dir(src).with_context(|| format!("loading weights from {}", src.display()))?;
    let embed = tensors
        .get(EMBED)
        .with_context(|| format!("{}: no tensor `{EMBED}`", src.display()))?;
    let (rows, _) = embed.dims2().with_context(|| format!("{}: `{EMBED}` is not a matrix", src.display()))?;
    if rows != config.vocab_size {
        bail!(
            "{}: `{EMBED}` has {rows} rows but config.json vocab_size is {}",
            src.display(),
            config.vocab_size
        );
    }
    let dtype = embed.dtype();
    let has_head = tensors.contains_key(LM_HEAD);
    if !has_head && !config.tie_word_embeddings {
        bail!("{}: no tensor `{LM_HEAD}` and config.json tie_word_embeddings is false", src.display());
    }
    let tied = !has_head;
    for name in [EMBED, LM_HEAD] {
        if let Some(old) = tensors.get(name) {
            let new = resize_matrix(old, plan, name)?;
            tensors.insert(name.to_string(), new);
        }
    }
    // Stable order: as transformers writes them, sorted by name.
    let mut named: Vec<(String, Tensor)> = tensors.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let shard_bytes = largest_shard_bytes(src)?;
    io::save_safetensors_dir(dst, &named, dtype, shard_bytes)?;
    write_config(&config_path, &dst.join("config.json"), plan.new_rows)?;
    Ok(tied)
}

/// Keeps a sharded checkpoint sharded at about the same size (0 = single file).
fn largest_shard_bytes(src: &Path) -> Result<u64> {
    let files = io::checkpoint_files(src)?;
    if files.len() <= 1 {
        return Ok(0);
    }
    let mut largest = 0;
    for f in files {
        largest = largest.max(std::fs::metadata(&f).with_context(|| format!("reading {}", f.display()))?.len());
    }
    Ok(largest)
}

/// Copies config.json with `vocab_size` set (top level and `text_config` where present),
/// leaving every other field as it was.
fn write_config(src: &Path, dst: &Path, vocab_size: usize) -> Result<()> {
    let text = std::fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", src.display()))?;
    let obj = value.as_object_mut().with_context(|| format!("{} is not a JSON object", src.display()))?;
    obj.insert("vocab_size".into(), vocab_size.into());
    if let Some(text_config) = obj.get_mut("text_config").and_then(|t| t.as_object_mut()) {
        text_config.insert("vocab_size".into(), vocab_size.into());
    }
    std::fs::write(dst, serde_json::to_string_pretty(&value)?).with_context(|| format!("writing {}", dst.display()))
}
