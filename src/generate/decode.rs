//! The decode loop: a batch of left-padded prompts goes through the model once (prefill),
//! then one token per row per step through the key/value cache, until every row has hit an
//! end-of-sequence token, a stop string or `max_new_tokens`.
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;

use super::sampling::{next_token, Sampling};
use super::stop::StopStrings;
use super::TokenText;
use crate::model::kv_cache::{step_inputs, KvCache};
use crate::model::CausalLm;
use crate::util::rng::SplitMix64;

/// What to generate and when to stop.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Text that ends a row (cut from its output).
    pub stop: StopStrings,
    /// Token ids that end a row (kept in its tokens, not in its text).
    pub eos_ids: Vec<u32>,
    /// Rows per forward pass.
    pub batch_size: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self { max_new_tokens: 256, sampling: Sampling::greedy(), stop: StopStrings::default(), eos_ids: Vec::new(), batch_size: 8 }
    }
}

/// One prompt, tokenized, with the seed of its sampling stream.
#[derive(Debug, Clone)]
pub struct Request {
    pub ids: Vec<u32>,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token.
    Eos,
    /// A stop string.
    Stop,
    /// `max_new_tokens`.
    Length,
}

/// What one request produced.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// Every generated id (the end-of-sequence token included when it ended the row).
    pub tokens: Vec<u32>,
    /// The decoded output (special tokens skipped), cut before the first stop string.
    pub text: String,
    pub finish: FinishReason,
}

/// Time spent in prefill (the prompts' forward) and decode (the steps after it).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GenerationStats {
    /// Prompt tokens processed, padding excluded.
    pub prefill_tokens: usize,
    pub prefill_s: f64,
    /// Tokens computed by decode steps: rows x steps (rows that already finished count,
    /// as their slots are computed too).
    pub decode_tokens: usize,
    pub decode_s: f64,
}

impl GenerationStats {
    pub fn add(&mut self, o: &GenerationStats) {
        self.prefill_tokens += o.prefill_tokens;
        self.prefill_s += o.prefill_s;
        self.decode_tokens += o.decode_tokens;
        self.decode_s += o.decode_s;
    }

    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_s.max(1e-12)
    }

    pub fn decode_tokens_per_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_s.max(1e-12)
    }
}

/// Receives each request's output as it settles: `(request index, new text)`.
pub type OnText<'a> = dyn FnMut(usize, &str) + 'a;

/// Generates for every request, `cfg.batch_size` rows at a time (in request order), and
/// returns the outputs in request order.
pub fn generate(
    model: &CausalLm,
    text: &dyn TokenText,
    requests: &[Request],
    cfg: &GenerationConfig,
    on_text: &mut OnText<'_>,
) -> Result<(Vec<Generated>, GenerationStats)> {
    cfg.sampling.validate()?;
    let mut out = Vec::with_capacity(requests.len());
    let mut stats = GenerationStats::default();
    for (i, batch) in requests.chunks(cfg.batch_size.max(1)).enumerate() {
        let offset = i * cfg.batch_size.max(1);
        let (generated, s) = generate_batch(model, text, batch, cfg, &mut |row, t| on_text(offset + row, t))?;
        out.extend(generated);
        stats.add(&s);
    }
    Ok((out, stats))
}

/// The state of one row while it decodes.
struct Row {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    rng: SplitMix64,
    finish: Option<FinishReason>,
    /// Decoded output so far (cut at a stop string once one appears).
    text: String,
    /// Bytes of `text` already handed to the caller.
    shown: usize,
}

fn generate_batch(
    model: &CausalLm,
    text: &dyn TokenText,
    requests: &[Request],
    cfg: &GenerationConfig,
    on_text: &mut OnText<'_>,
) -> Result<(Vec<Generated>, GenerationStats)> {
    let device = model.device().clone();
    let longest = requests.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    if requests.iter().any(|r| r.ids.is_empty()) {
        bail!("generate: an empty prompt (give at least one token, e.g. BOS)");
    }
    let pad: Vec<usize> = requests.iter().map(|r| longest - r.ids.len()).collect();
    let mut rows: Vec<Row> = requests
        .iter()
        .map(|r| Row { prompt: r.ids.clone(), tokens: Vec::new(), rng: SplitMix64::new(r.seed), finish: None, text: String::new(), shown: 0 })
        .collect();
    let mut stats = GenerationStats { prefill_tokens: requests.iter().map(|r| r.ids.len()).sum(), ..Default::default() };
    if cfg.max_new_tokens == 0 {
        return Ok((rows.into_iter().map(finished_output).collect(), stats));
    }

    // Padding slots hold token 0: they are never visible to a real token.
    let mut ids = Vec::with_capacity(requests.len() * longest);
    for (r, &p) in requests.iter().zip(&pad) {
        ids.extend(std::iter::repeat_n(0u32, p));
        ids.extend_from_slice(&r.ids);
    }
    let mut cache = KvCache::new(model.config().num_hidden_layers, longest + cfg.max_new_tokens);
    let started = Instant::now();
    let input = Tensor::from_vec(ids, (requests.len(), longest), &device)?;
    let (positions, mask) = step_inputs(&pad, 0, longest, &device)?;
    let mut logits = model.forward_cached(&input, &positions, &mask, &mut cache).context("generate: prefill")?;
    stats.prefill_s = started.elapsed().as_secs_f64();

    let decode_started = Instant::now();
    for step in 0..cfg.max_new_tokens {
        let rows_logits: Vec<Vec<f32>> = logits.to_device(&Device::Cpu)?.to_vec2()?;
        let mut next = Vec::with_capacity(rows.len());
        for (i, (row, mut l)) in rows.iter_mut().zip(rows_logits).enumerate() {
            if row.finish.is_some() {
                next.push(row.tokens.last().copied().unwrap_or(0));
                continue;
            }
            let seen: Vec<u32> = if cfg.sampling.repetition_penalty != 1.0 {
                row.prompt.iter().chain(&row.tokens).copied().collect()
            } else {
                Vec::new()
            };
            let token = next_token(&mut l, &seen, &cfg.sampling, &mut row.rng);
            row.tokens.push(token);
            next.push(token);
            advance_row(row, token, text, cfg, step + 1 == cfg.max_new_tokens)?;
            let settled = match row.finish {
                Some(_) => row.text.len(),
                None => cfg.stop.settled_len(&row.text),
            };
            if settled > row.shown {
                on_text(i, &row.text[row.shown..settled]);
                row.shown = settled;
            }
        }
        if rows.iter().all(|r| r.finish.is_some()) {
            break;
        }
        let start = longest + step;
        let input = Tensor::from_vec(next, (rows.len(), 1), &device)?;
        let (positions, mask) = step_inputs(&pad, start, 1, &device)?;
        logits = model.forward_cached(&input, &positions, &mask, &mut cache).context("generate: decode step")?;
        stats.decode_tokens += rows.len();
    }
    stats.decode_s = decode_started.elapsed().as_secs_f64();
    Ok((rows.into_iter().map(finished_output).collect(), stats))
}

/// Updates a row after it took `token`: its text, and whether it is done.
fn advance_row(row: &mut Row, token: u32, text: &dyn TokenText, cfg: &GenerationConfig, last_step: bool) -> Result<()> {
    if cfg.eos_ids.contains(&token) {
        row.finish = Some(FinishReason::Eos);
        return Ok(());
    }
    row.text = text.decode(&row.tokens)?;
    if let Some(cut) = cfg.stop.find(&row.text) {
        row.text.truncate(cut);
        row.finish = Some(FinishReason::Stop);
    } else if last_step {
        row.finish = Some(FinishReason::Length);
    }
    Ok(())
}

fn finished_output(row: Row) -> Generated {
    Generated { tokens: row.tokens, text: row.text, finish: row.finish.unwrap_or(FinishReason::Length) }
}
