//! Multiple-choice requests: the prompt context and one continuation per choice, with
//! shots dropped when the prompt is longer than the model's context, as each official
//! script does it:
//! - MMLU (`evaluate_hf.py`): while the tokenized prompt is longer than the context,
//!   use one shot fewer (the last shot goes first). C-Eval's scripts have no rule; the
//!   same one is used.
//! - CMMLU (`mp_utils.gen_prompt`): if description + question alone do not fit, the
//!   prompt is the question alone; otherwise, while the shots' tokens reach the room
//!   left, every shot of the longest length is removed.
//! - lm-evaluation-harness drops nothing: the log-likelihood engine keeps the last
//!   `max_len` tokens, as its `HFLM` does.
use anyhow::Result;

use super::benchmarks::{BenchmarkKind, Question};
use super::templates::{PromptStyle, Template};

/// What the request builder and the log-likelihood engine need from a tokenizer.
pub trait TextEncoder {
    /// Token ids of `text`; `add_special` adds what the tokenizer adds by default (BOS for Llama).
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>>;
    /// The token lm-evaluation-harness puts before a document or an empty context:
    /// BOS where the tokenizer has one, else EOS.
    fn prefix_token(&self) -> u32;
}

/// One question turned into a context and its scored continuations.
#[derive(Debug, Clone, PartialEq)]
pub struct McRequest {
    pub context: String,
    pub continuations: Vec<String>,
    /// Each choice's text for `acc_norm`'s length normalisation.
    pub choice_texts: Vec<String>,
    /// Number of shots that made it into the context.
    pub shots_used: usize,
}

/// Which shot-dropping rule a benchmark/style pair follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShotDropping {
    DropLast,
    DropLongest,
    None,
}

pub fn shot_dropping(kind: BenchmarkKind, style: PromptStyle) -> ShotDropping {
    match (style, kind) {
        (PromptStyle::LmEval, _) | (_, BenchmarkKind::Arc | BenchmarkKind::Hellaswag) => ShotDropping::None,
        (PromptStyle::Official, BenchmarkKind::Cmmlu) => ShotDropping::DropLongest,
        (PromptStyle::Official, _) => ShotDropping::DropLast,
    }
}

/// Context limits for shot dropping: the tokenizer, the model's context length, and
/// whether prompts are tokenized with special tokens (BOS).
pub struct Fit<'a> {
    pub encoder: &'a dyn TextEncoder,
    pub max_len: usize,
    pub add_special: bool,
}

/// Builds the request for `q` with up to `k` shots taken in order from `dev` (the
/// `first_n` sampler both the official scripts and lm-evaluation-harness use).
pub fn build_request(
    tpl: &Template,
    dev: &[Question],
    k: usize,
    q: &Question,
    fit: Option<&Fit>,
) -> Result<McRequest> {
    let pool: Vec<&Question> = dev.iter().take(k).collect();
    let continuations = (0..q.choices.len()).map(|i| tpl.continuation(q, i)).collect();
    let choice_texts = (0..q.choices.len()).map(|i| tpl.choice_text(q, i)).collect();
    let (context, shots_used) = match (fit, shot_dropping(tpl.kind, tpl.style)) {
        (None, _) | (_, ShotDropping::None) => (tpl.context(&pool, q), pool.len()),
        (Some(fit), ShotDropping::DropLast) => {
            let mut n = pool.len();
            loop {
                let ctx = tpl.context(&pool[..n], q);
                if n == 0 || fit.encoder.encode(&ctx, fit.add_special)?.len() <= fit.max_len {
                    break (ctx, n);
                }
                n -= 1;
            }
        }
        (Some(fit), ShotDropping::DropLongest) => drop_longest(tpl, &pool, q, fit)?,
    };
    Ok(McRequest { context, continuations, choice_texts, shots_used })
}

fn drop_longest(tpl: &Template, pool: &[&Question], q: &Question, fit: &Fit) -> Result<(String, usize)> {
    let description = tpl.description();
    let question = tpl.question_text(q);
    let fixed = fit.encoder.encode(&description, fit.add_special)?.len()
        + fit.encoder.encode(&question, fit.add_special)?.len();
    if fixed > fit.max_len {
        return Ok((question, 0));
    }
    let mut shots: Vec<(String, usize)> = Vec::with_capacity(pool.len());
    for s in pool {
        let text = tpl.shot(s);
        let len = fit.encoder.encode(&text, fit.add_special)?.len();
        shots.push((text, len));
    }
    while !shots.is_empty() && shots.iter().map(|s| s.1).sum::<usize>() >= fit.max_len - fixed {
        let longest = shots.iter().map(|s| s.1).max().unwrap_or(0);
        shots.retain(|s| s.1 != longest);
    }
    let mut ctx = description;
    for (text, _) in &shots {
        ctx.push_str(text);
    }
    ctx.push_str(&question);
    Ok((ctx, shots.len()))
}
