//! Choosing the next token from a row of logits, as transformers' `generate` does: the
//! repetition penalty first (a logits processor), then, when sampling, temperature, top-k
//! and top-p (its warpers, in that order), then a draw from the softmax. Greedy decoding
//! takes the first maximum, like `torch.argmax`.
//!
//! Draws come from a [`SplitMix64`] stream per row, seeded by the request: the same seed
//! gives the same text whatever the batch around it. (They cannot match PyTorch's
//! `multinomial` draws; greedy decoding is what is checked token for token against it.)
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::util::rng::SplitMix64;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    #[serde(default)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    #[serde(default)]
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1: off).
    #[serde(default = "one")]
    pub top_p: f32,
    /// CTRL's repetition penalty on every token of the prompt and the output so far (1: off):
    /// positive logits are divided by it, negative ones multiplied.
    #[serde(default = "one")]
    pub repetition_penalty: f32,
}

fn one() -> f32 {
    1.0
}

impl Default for Sampling {
    fn default() -> Self {
        Self::greedy()
    }
}

impl Sampling {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Rejects values transformers would reject (or that mean nothing).
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!("temperature must be >= 0 (0: greedy), got {}", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            bail!("repetition_penalty must be positive, got {}", self.repetition_penalty);
        }
        Ok(())
    }
}

/// Picks the next token of one row: `logits` is the row's next-token logits (changed in
/// place), `seen` the tokens the repetition penalty applies to.
pub fn next_token(logits: &mut [f32], seen: &[u32], s: &Sampling, rng: &mut SplitMix64) -> u32 {
    if s.repetition_penalty != 1.0 {
        apply_repetition_penalty(logits, seen, s.repetition_penalty);
    }
    if s.is_greedy() {
        return argmax(logits) as u32;
    }
    for l in logits.iter_mut() {
        *l /= s.temperature;
    }
    if s.top_k > 0 && s.top_k < logits.len() {
        apply_top_k(logits, s.top_k);
    }
    if s.top_p < 1.0 {
        apply_top_p(logits, s.top_p);
    }
    draw(logits, rng) as u32
}

/// Index of the first maximum.
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// transformers' `RepetitionPenaltyLogitsProcessor`: each distinct seen token once.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    let mut done = vec![false; logits.len()];
    for &t in seen {
        let t = t as usize;
        if t < logits.len() && !done[t] {
            done[t] = true;
            let l = logits[t];
            logits[t] = if l < 0.0 { l * penalty } else { l / penalty };
        }
    }
}

/// transformers' `TopKLogitsWarper`: everything below the k-th largest logit is removed
/// (ties with it stay).
pub fn apply_top_k(logits: &mut [f32], k: usize) {
    let mut sorted: Vec<f32> = logits.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let threshold = sorted[k - 1];
    for l in logits.iter_mut() {
        if *l < threshold {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// transformers' `TopPLogitsWarper`: sorted ascending, tokens whose cumulative probability
/// is at most `1 - p` are removed; the most likely token always stays.
pub fn apply_top_p(logits: &mut [f32], p: f32) {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable ascending sort, as torch.sort(descending=False) orders equal values by index.
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    let mut cumulative = 0.0f32;
    let last = order.len() - 1;
    for (rank, &i) in order.iter().enumerate() {
        cumulative += probs[i];
        if cumulative <= 1.0 - p && rank != last {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// Softmax in f64 internally, returned as f32 probabilities.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits.iter().map(|&l| ((l - m) as f64).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| (x / z) as f32).collect()
}

/// One draw from softmax(logits) by inverting the cumulative distribution.
fn draw(logits: &[f32], rng: &mut SplitMix64) -> usize {
    let probs = softmax(logits);
    let u = rng.next_unit() as f32;
    let mut cumulative = 0.0f32;
    let mut last_possible = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cumulative += p;
            last_possible = i;
            if u <= cumulative {
                return i;
            }
        }
    }
    // Rounding left the total a hair below u.
    last_possible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits_once() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 0, 0], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_k_keeps_ties_at_the_threshold() {
        let mut l = vec![1.0, 3.0, 2.0, 2.0, 0.0];
        apply_top_k(&mut l, 2);
        assert_eq!(l, vec![f32::NEG_INFINITY, 3.0, 2.0, 2.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probs 0.5, 0.3, 0.2 (ln of them): p = 0.7 keeps 0.5 and 0.3; p = 0.5 keeps 0.5 alone.
        let base: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        let mut l = base.clone();
        apply_top_p(&mut l, 0.7);
        assert!(l[0].is_finite() && l[1].is_finite() && l[2] == f32::NEG_INFINITY);
        let mut l = base.clone();
        apply_top_p(&mut l, 0.4);
        assert!(l[0].is_finite() && l[1] == f32::NEG_INFINITY && l[2] == f32::NEG_INFINITY);
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let s = Sampling { temperature: 1.0, ..Sampling::greedy() };
        let logits: Vec<f32> = [0.7f32, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let mut rng = SplitMix64::new(7);
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[next_token(&mut logits.clone(), &[], &s, &mut rng) as usize] += 1;
        }
        let freq: Vec<f64> = counts.iter().map(|&c| c as f64 / 20_000.0).collect();
        assert!((freq[0] - 0.7).abs() < 0.015 && (freq[1] - 0.2).abs() < 0.015, "{freq:?}");
        let draws = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..32).map(|_| next_token(&mut logits.clone(), &[], &s, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut l = vec![1.0, 5.0, 5.0];
        assert_eq!(next_token(&mut l, &[], &Sampling::greedy(), &mut SplitMix64::new(0)), 1);
    }
}
