//! `crate::model` behind the evaluation traits: `CausalLm` answers log-probability
//! queries from one batched forward; `Tokenizer` encodes as Hugging Face's
//! `tokenizer(text, add_special_tokens=...)` does (tokenizer.json's own post-processor).
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::model::{CausalLm, Tokenizer};

use super::loglik::{LogitsModel, ScoreRow, TokenScore};
use super::requests::TextEncoder;

impl TextEncoder for Tokenizer {
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner().encode(text, add_special).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    fn prefix_token(&self) -> u32 {
        // lm-evaluation-harness: BOS where the tokenizer has one, else EOS.
        self.bos_id().or(self.eos_id()).unwrap_or(0)
    }
}

/// Scores rows with a borrowed `CausalLm` (the training loop keeps ownership of its model),
/// in batches of right-padded rows: padding sits after every queried position, so a
/// causal model never sees it.
pub struct ModelScorer<'a> {
    model: &'a CausalLm,
    max_len: usize,
}

impl<'a> ModelScorer<'a> {
    /// `max_len`: the context length to evaluate at (default and cap: the model's
    /// `max_position_embeddings`).
    pub fn new(model: &'a CausalLm, max_len: Option<usize>) -> Self {
        let native = model.config().max_position_embeddings;
        ModelScorer { model, max_len: max_len.unwrap_or(native).min(native).max(1) }
    }
}

/// A model loaded for evaluation (owns its `CausalLm`).
pub struct CandleLm {
    pub model: CausalLm,
    max_len: Option<usize>,
}

impl CandleLm {
    pub fn new(model: CausalLm, max_len: Option<usize>) -> Self {
        CandleLm { model, max_len }
    }

    pub fn load(dir: &std::path::Path, device: &Device, dtype: DType, max_len: Option<usize>) -> Result<Self> {
        Self::load_with_adapter(dir, None, device, dtype, max_len)
    }

    /// The model of `dir`, with the PEFT adapter of `adapter` applied (unmerged) when given.
    pub fn load_with_adapter(dir: &std::path::Path, adapter: Option<&std::path::Path>, device: &Device, dtype: DType, max_len: Option<usize>) -> Result<Self> {
        let model = CausalLm::from_pretrained_with_adapter(dir, adapter, device, dtype)
            .with_context(|| format!("loading model {}", dir.display()))?;
        Ok(Self::new(model, max_len))
    }

    pub fn scorer(&self) -> ModelScorer<'_> {
        ModelScorer::new(&self.model, self.max_len)
    }
}

impl LogitsModel for CandleLm {
    fn max_len(&self) -> usize {
        self.scorer().max_len
    }

    fn score_batch(&self, rows: &[ScoreRow]) -> Result<Vec<Vec<TokenScore>>> {
        self.scorer().score_batch(rows)
    }
}

impl LogitsModel for ModelScorer<'_> {
    fn max_len(&self) -> usize {
        self.max_len
    }

    fn score_batch(&self, rows: &[ScoreRow]) -> Result<Vec<Vec<TokenScore>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let t = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        if t == 0 || t > self.max_len {
            bail!("batch rows of {t} tokens (context length {})", self.max_len);
        }
        let b = rows.len();
        let mut ids = vec![0u32; b * t];
        let mut flat_positions = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            ids[i * t..i * t + r.tokens.len()].copy_from_slice(&r.tokens);
            for q in &r.queries {
                if q.position >= r.tokens.len() {
                    bail!("query position {} outside a row of {} tokens", q.position, r.tokens.len());
                }
                flat_positions.push((i * t + q.position) as u32);
            }
        }
        let device = self.model.device();
        let input = Tensor::from_vec(ids, (b, t), device)?;
        let logits = self.model.forward_no_grad(&input, None)?;
        let v = logits.dim(2)?;
        let index = Tensor::from_vec(flat_positions, (rows.iter().map(|r| r.queries.len()).sum::<usize>(),), device)?;
        let picked = logits.reshape((b * t, v))?.index_select(&index, 0)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let picked: Vec<Vec<f32>> = picked.to_vec2()?;

        let mut out = Vec::with_capacity(b);
        let mut k = 0;
        for r in rows {
            let mut scores = Vec::with_capacity(r.queries.len());
            for q in &r.queries {
                let row = &picked[k];
                k += 1;
                let target = q.target as usize;
                if target >= row.len() {
                    bail!("target token {target} outside the vocabulary ({})", row.len());
                }
                scores.push(score_row(row, target));
            }
            out.push(scores);
        }
        Ok(out)
    }
}

/// Log-softmax of one logit row, in f64: the target's log-probability, whether it is the
/// argmax, and the distribution's entropy.
fn score_row(logits: &[f32], target: usize) -> TokenScore {
    let mut best = 0;
    let mut m = f64::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if (l as f64) > m {
            m = l as f64;
            best = i;
        }
    }
    let sum: f64 = logits.iter().map(|&l| (l as f64 - m).exp()).sum();
    let lse = m + sum.ln();
    let entropy = -logits
        .iter()
        .map(|&l| {
            let lp = l as f64 - lse;
            lp.exp() * lp
        })
        .sum::<f64>();
    TokenScore { logprob: logits[target] as f64 - lse, greedy: best == target, entropy }
}

