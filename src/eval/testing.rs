//! Deterministic stand-ins for a model and a tokenizer, so the evaluation machinery can
//! be tested without weights: `ToyLm` is a causal model whose next-token distribution
//! is a fixed function of the whole prefix; `ByteEncoder` maps UTF-8 bytes to ids.
use anyhow::{bail, Result};

use super::loglik::{LogitsModel, ScoreRow, TokenScore};
use super::requests::TextEncoder;

/// A causal "language model" over `vocab` ids: logits at position t depend on every token
/// up to t (through a rolling hash), so prefix sharing and truncation bugs show up.
pub struct ToyLm {
    pub vocab: usize,
    pub max_len: usize,
}

impl ToyLm {
    /// Log-probabilities over the vocabulary after `prefix`.
    pub fn log_probs(&self, prefix: &[u32]) -> Vec<f64> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &t in prefix {
            h = (h ^ (t as u64 + 1)).wrapping_mul(0x0100_0000_01b3);
        }
        let logits: Vec<f64> = (0..self.vocab)
            .map(|v| {
                let x = (h ^ ((v as u64 + 7).wrapping_mul(0x9e37_79b9_7f4a_7c15))).wrapping_mul(0xff51_afd7_ed55_8ccd);
                ((x >> 40) as f64 / (1u64 << 24) as f64) * 4.0 - 2.0
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        logits.iter().map(|l| l - lse).collect()
    }
}

impl LogitsModel for ToyLm {
    fn max_len(&self) -> usize {
        self.max_len
    }

    fn score_batch(&self, rows: &[ScoreRow]) -> Result<Vec<Vec<TokenScore>>> {
        rows.iter()
            .map(|row| {
                if row.tokens.len() > self.max_len {
                    bail!("row of {} tokens exceeds max_len {}", row.tokens.len(), self.max_len);
                }
                row.queries
                    .iter()
                    .map(|q| {
                        if q.position >= row.tokens.len() {
                            bail!("query position {} outside a row of {}", q.position, row.tokens.len());
                        }
                        let lp = self.log_probs(&row.tokens[..=q.position]);
                        let target = q.target as usize;
                        if target >= lp.len() {
                            bail!("target {target} outside the vocabulary");
                        }
                        let best = (0..lp.len()).fold(0, |b, i| if lp[i] > lp[b] { i } else { b });
                        let entropy = -lp.iter().map(|l| l.exp() * l).sum::<f64>();
                        Ok(TokenScore { logprob: lp[target], greedy: best == target, entropy })
                    })
                    .collect()
            })
            .collect()
    }
}

/// Byte-level "tokenizer": ids 0..=255 are bytes, 256 is BOS (added with `add_special`).
pub struct ByteEncoder;

pub const BYTE_BOS: u32 = 256;

impl TextEncoder for ByteEncoder {
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() + 1);
        if add_special {
            ids.push(BYTE_BOS);
        }
        ids.extend(text.bytes().map(u32::from));
        Ok(ids)
    }

    fn prefix_token(&self) -> u32 {
        BYTE_BOS
    }
}
