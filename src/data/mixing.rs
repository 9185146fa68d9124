//! Online topic re-weighting inside a source, from per-topic validation results.
//!
//! SynE rule (Llama-3-SynE, arXiv 2407.18743): per round t, with topic perplexities p_i,
//!   delta_i = p_i(t) - p_i(t-1), normalised across topics (we divide by sum_j |delta_j|,
//!   so the deltas lie in [-1, 1] whatever the perplexity scale),
//!   f_i = 1 + alpha * delta_i * w_i            (w_i a prior weight, alpha a step size),
//!   r_i(t) = r_i(t-1) * f_i / sum_j r_j(t-1) * f_j.
//! Topics whose perplexity stops falling (delta near 0 while others fall) gain weight.
//!
//! DoReMi rule (arXiv 2305.10429): r_i <- r_i * exp(eta * max(loss_i - ref_i, 0)),
//! normalised, then smoothed r <- (1 - c) r + c / k.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{MixingConfig, MixingRule};

/// Smallest factor the SynE rule may give (a large alpha * w_i could make it negative).
const MIN_FACTOR: f64 = 1e-3;

/// What one update computed for one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicSignal {
    /// The validation loss given (mean NLL per token).
    pub loss: f64,
    pub ppl: f64,
    /// SynE: normalised perplexity change; DoReMi: clipped excess loss.
    pub signal: f64,
    /// The multiplicative factor applied before normalisation.
    pub factor: f64,
}

/// One weight change, as logged and saved in the sampler state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixingUpdate {
    pub step: u64,
    pub tokens: u64,
    pub rule: MixingRule,
    pub topics: BTreeMap<String, TopicSignal>,
    /// source -> topic -> [old, new] share of that source's tokens.
    pub weights: BTreeMap<String, BTreeMap<String, [f64; 2]>>,
}

/// The rule's memory between rounds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MixingMemory {
    /// SynE: the previous round's perplexities.
    pub previous_ppl: BTreeMap<String, f64>,
    /// DoReMi: reference losses (configured, or the first seen).
    pub reference_loss: BTreeMap<String, f64>,
}

/// Per-topic multiplicative factors for one round; `None` while the rule is still
/// gathering its baseline (SynE's first round, DoReMi's first round without references).
pub fn round_factors(
    config: &MixingConfig,
    memory: &mut MixingMemory,
    losses: &BTreeMap<String, f64>,
) -> Option<BTreeMap<String, TopicSignal>> {
    let ppl: BTreeMap<String, f64> = losses.iter().map(|(t, l)| (t.clone(), l.exp())).collect();
    match config.rule {
        MixingRule::Syne => {
            let deltas: BTreeMap<&String, f64> = ppl
                .iter()
                .filter_map(|(t, p)| memory.previous_ppl.get(t).map(|prev| (t, p - prev)))
                .collect();
            for (t, p) in &ppl {
                memory.previous_ppl.insert(t.clone(), *p);
            }
            if deltas.is_empty() {
                return None;
            }
            let scale: f64 = deltas.values().map(|d| d.abs()).sum();
            let out = deltas
                .into_iter()
                .map(|(t, d)| {
                    let norm = if scale > 0.0 { d / scale } else { 0.0 };
                    let prior = config.priors.get(t).copied().unwrap_or(1.0);
                    let factor = (1.0 + config.alpha * norm * prior).max(MIN_FACTOR);
                    (t.clone(), TopicSignal { loss: losses[t], ppl: ppl[t], signal: norm, factor })
                })
                .collect();
            Some(out)
        }
        MixingRule::Doremi => {
            let mut fresh = false;
            for (t, l) in losses {
                if !memory.reference_loss.contains_key(t) {
                    let r = config.reference_losses.get(t).copied().unwrap_or(*l);
                    fresh |= !config.reference_losses.contains_key(t);
                    memory.reference_loss.insert(t.clone(), r);
                }
            }
            if fresh && losses.keys().all(|t| !config.reference_losses.contains_key(t)) {
                return None; // the first round only sets the references
            }
            let out = losses
                .iter()
                .map(|(t, l)| {
                    let excess = (l - memory.reference_loss[t]).max(0.0);
                    (t.clone(), TopicSignal { loss: *l, ppl: ppl[t], signal: excess, factor: (config.eta * excess).exp() })
                })
                .collect();
            Some(out)
        }
    }
}

/// New shares from old shares and per-stream factors (1 where a stream has no factor):
/// multiply, normalise, smooth (DoReMi), floor at `min_weight` and renormalise.
pub fn reweight(config: &MixingConfig, weights: &[f64], factors: &[f64]) -> Vec<f64> {
    let k = weights.len() as f64;
    let mut w: Vec<f64> = weights.iter().zip(factors).map(|(w, f)| w * f).collect();
    let total: f64 = w.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return weights.to_vec();
    }
    w.iter_mut().for_each(|x| *x /= total);
    if config.rule == MixingRule::Doremi {
        w.iter_mut().for_each(|x| *x = (1.0 - config.smoothing) * *x + config.smoothing / k);
    }
    if config.min_weight > 0.0 {
        w.iter_mut().for_each(|x| *x = x.max(config.min_weight));
        let total: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= total);
    }
    w
}
