//! Log-likelihood scoring, lm-evaluation-harness style, over any model that maps token
//! rows to per-position log-probabilities.
//!
//! A request is (context tokens, continuation tokens). The engine
//! - keeps the last `max_len + 1` tokens of context+continuation and feeds all but the
//!   last one (lm-evaluation-harness' left truncation);
//! - shares forwards: a row whose input is a prefix of another row's input is read from
//!   the longer row (a causal model gives the same logits there), so the four letter
//!   choices of a question, which share one input, cost one forward;
//! - packs rows into batches of at most `batch_tokens` padded tokens, longest first.
use anyhow::{bail, Result};

use super::requests::TextEncoder;

/// One log-probability read from a forward: `target` at `position` (the logits there
/// predict the token at `position + 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenQuery {
    pub position: usize,
    pub target: u32,
}

/// What one query returns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenScore {
    /// log p(target | tokens[..=position]) in nats.
    pub logprob: f64,
    /// Whether `target` is the argmax at that position.
    pub greedy: bool,
    /// Entropy of the predicted distribution at that position, in nats.
    pub entropy: f64,
}

/// A row of tokens to run and the positions to read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    pub tokens: Vec<u32>,
    pub queries: Vec<TokenQuery>,
}

/// The one thing evaluation needs from a model: a batched forward that answers queries.
pub trait LogitsModel {
    /// Longest row the model accepts (its context length).
    fn max_len(&self) -> usize;
    /// Runs `rows` (each at most `max_len` tokens) and answers every row's queries, in order.
    fn score_batch(&self, rows: &[ScoreRow]) -> Result<Vec<Vec<TokenScore>>>;
}

/// Context and continuation tokens of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct LoglikRequest {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// The score of one continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct LoglikResult {
    /// Sum of the continuation tokens' log-probabilities.
    pub logprob: f64,
    /// Whether greedy decoding would have produced the continuation.
    pub greedy: bool,
    pub token_logprobs: Vec<f64>,
    pub entropies: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Most padded tokens (rows x longest row) per forward.
    pub batch_tokens: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { batch_tokens: 4096 }
    }
}

/// lm-evaluation-harness' `_encode_pair`: trailing whitespace of the context moves to the
/// continuation; context+continuation is tokenized together and the continuation is the
/// tokens after the context's own tokenization. An empty context becomes the prefix token.
pub fn encode_pair(
    enc: &dyn TextEncoder,
    context: &str,
    continuation: &str,
    add_special: bool,
) -> Result<LoglikRequest> {
    if context.is_empty() {
        return Ok(LoglikRequest {
            context: vec![enc.prefix_token()],
            continuation: enc.encode(continuation, false)?,
        });
    }
    let trimmed = context.trim_end();
    let (context, continuation) = if trimmed.len() < context.len() {
        (trimmed.to_string(), format!("{}{}", &context[trimmed.len()..], continuation))
    } else {
        (context.to_string(), continuation.to_string())
    };
    let whole = enc.encode(&format!("{context}{continuation}"), add_special)?;
    let ctx = enc.encode(&context, add_special)?;
    // The context keeps its own tokenization; the continuation is whatever follows it.
    let continuation = whole.get(ctx.len()..).map(<[u32]>::to_vec).unwrap_or_default();
    Ok(LoglikRequest { context: ctx, continuation })
}

/// Scores every request; `progress` is called with the number of requests finished so far.
pub fn loglikelihoods(
    model: &dyn LogitsModel,
    requests: &[LoglikRequest],
    opts: EngineOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<LoglikResult>> {
    let max_len = model.max_len();
    if max_len == 0 {
        bail!("model reports a context length of 0");
    }
    // Inputs and query positions after left truncation.
    let mut inputs: Vec<Vec<u32>> = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        if r.continuation.is_empty() {
            bail!("request {i}: empty continuation (nothing to score)");
        }
        if r.continuation.len() > max_len {
            bail!("request {i}: continuation of {} tokens is longer than the context length {max_len}", r.continuation.len());
        }
        let mut full: Vec<u32> = r.context.iter().chain(r.continuation.iter()).copied().collect();
        if full.len() > max_len + 1 {
            full.drain(..full.len() - (max_len + 1));
        }
        full.pop();
        inputs.push(full);
    }

    // Prefix sharing: in lexicographic order a row's extensions follow it directly, so a
    // row is served by the row after it whenever it is that row's prefix.
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by(|&a, &b| inputs[a].cmp(&inputs[b]));
    let mut owner = vec![0usize; inputs.len()];
    for k in (0..order.len()).rev() {
        let i = order[k];
        owner[i] = if k + 1 < order.len() && inputs[order[k + 1]].starts_with(&inputs[i]) {
            owner[order[k + 1]]
        } else {
            i
        };
    }
    // One row per owner, with the queries of every request it serves.
    let mut row_of_owner = vec![usize::MAX; inputs.len()];
    let mut rows: Vec<ScoreRow> = Vec::new();
    let mut members: Vec<Vec<(usize, usize)>> = Vec::new(); // (request, first query index)
    for i in 0..inputs.len() {
        let o = owner[i];
        if row_of_owner[o] == usize::MAX {
            row_of_owner[o] = rows.len();
            rows.push(ScoreRow { tokens: inputs[o].clone(), queries: Vec::new() });
            members.push(Vec::new());
        }
        let r = row_of_owner[o];
        let n = requests[i].continuation.len();
        let start = inputs[i].len() - n;
        members[r].push((i, rows[r].queries.len()));
        for (j, &t) in requests[i].continuation.iter().enumerate() {
            rows[r].queries.push(TokenQuery { position: start + j, target: t });
        }
    }

    // Longest rows first, packed up to the padded-token budget.
    let mut row_order: Vec<usize> = (0..rows.len()).collect();
    row_order.sort_by(|&a, &b| rows[b].tokens.len().cmp(&rows[a].tokens.len()).then(a.cmp(&b)));
    let mut results: Vec<Option<LoglikResult>> = vec![None; requests.len()];
    let mut done = 0usize;
    let mut k = 0usize;
    while k < row_order.len() {
        let longest = rows[row_order[k]].tokens.len().max(1);
        let fit = (opts.batch_tokens / longest).max(1);
        let batch_ids: Vec<usize> = row_order[k..(k + fit).min(row_order.len())].to_vec();
        k += batch_ids.len();
        let batch: Vec<ScoreRow> = batch_ids.iter().map(|&r| rows[r].clone()).collect();
        let scores = model.score_batch(&batch)?;
        if scores.len() != batch.len() {
            bail!("model answered {} rows of a batch of {}", scores.len(), batch.len());
        }
        for (&r, row_scores) in batch_ids.iter().zip(scores) {
            if row_scores.len() != rows[r].queries.len() {
                bail!("model answered {} queries of {}", row_scores.len(), rows[r].queries.len());
            }
            for &(req, first) in &members[r] {
                let n = requests[req].continuation.len();
                let s = &row_scores[first..first + n];
                results[req] = Some(LoglikResult {
                    logprob: s.iter().map(|t| t.logprob).sum(),
                    greedy: s.iter().all(|t| t.greedy),
                    token_logprobs: s.iter().map(|t| t.logprob).collect(),
                    entropies: s.iter().map(|t| t.entropy).collect(),
                });
                done += 1;
            }
        }
        progress(done);
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| anyhow::anyhow!("request {i} was never scored")))
        .collect()
}
