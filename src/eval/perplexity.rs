//! Perplexity and bits per byte with lm-evaluation-harness' rolling-window rule
//! (`loglikelihood_rolling`: `get_rolling_token_windows` + `make_disjoint_window`, with
//! one token of context): every token of a document is predicted exactly once; the first
//! window starts from the prefix token (BOS, else EOS), each later window predicts the
//! next `max_len` tokens and sees only what fits before them.
use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::loglik::{loglikelihoods, EngineOptions, LogitsModel, LoglikRequest};
use super::requests::TextEncoder;

/// Splits a document's tokens into disjoint scoring windows.
pub fn rolling_windows(tokens: &[u32], prefix_token: u32, max_len: usize) -> Vec<LoglikRequest> {
    let mut out = Vec::new();
    if tokens.is_empty() || max_len == 0 {
        return out;
    }
    let first = max_len.min(tokens.len());
    out.push(LoglikRequest { context: vec![prefix_token], continuation: tokens[..first].to_vec() });
    let mut predicted = first;
    while predicted < tokens.len() {
        let pred_len = (tokens.len() - predicted).min(max_len);
        let end = predicted + pred_len;
        // The window holds max_len inputs ending just before `end`; what is not predicted is context.
        let ctx_start = end - max_len - 1;
        out.push(LoglikRequest {
            context: tokens[ctx_start..predicted].to_vec(),
            continuation: tokens[predicted..end].to_vec(),
        });
        predicted = end;
    }
    out
}

/// Whitespace-separated words as lm-evaluation-harness counts them: `len(re.split(r"\s+", doc))`.
pub fn count_words(text: &str) -> usize {
    let mut runs = 0;
    let mut in_ws = false;
    for c in text.chars() {
        let ws = c.is_whitespace();
        if ws && !in_ws {
            runs += 1;
        }
        in_ws = ws;
    }
    runs + 1
}

/// One document's totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocScore {
    pub tokens: usize,
    pub bytes: usize,
    pub words: usize,
    /// Sum of the tokens' log-probabilities (nats).
    pub logprob: f64,
    /// Sum of the predicted distributions' entropies over the same positions (nats).
    pub entropy: f64,
}

impl DocScore {
    /// Mean negative log-likelihood per token (nats); 0 for an empty document.
    pub fn mean_loss(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            -self.logprob / self.tokens as f64
        }
    }
}

/// Scores documents (tokenized without special tokens, as lm-evaluation-harness does).
pub fn score_documents(
    model: &dyn LogitsModel,
    enc: &dyn TextEncoder,
    docs: &[String],
    max_len: usize,
    opts: EngineOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<DocScore>> {
    let max_len = max_len.min(model.max_len());
    let mut requests = Vec::new();
    let mut owner = Vec::new();
    let mut scores: Vec<DocScore> = Vec::with_capacity(docs.len());
    for (d, text) in docs.iter().enumerate() {
        let tokens = enc.encode(text, false)?;
        scores.push(DocScore { tokens: tokens.len(), bytes: text.len(), words: count_words(text), ..Default::default() });
        for w in rolling_windows(&tokens, enc.prefix_token(), max_len) {
            requests.push(w);
            owner.push(d);
        }
    }
    let total = requests.len();
    let results = loglikelihoods(model, &requests, opts, &mut |done| progress(done, total))?;
    for (r, d) in results.iter().zip(owner) {
        scores[d].logprob += r.logprob;
        scores[d].entropy += r.entropies.iter().sum::<f64>();
    }
    Ok(scores)
}

/// Corpus-level perplexities of a set of documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityReport {
    pub name: String,
    pub documents: usize,
    pub tokens: usize,
    pub bytes: usize,
    pub words: usize,
    /// Mean negative log-likelihood per token (nats).
    pub token_loss: f64,
    pub token_perplexity: f64,
    pub word_perplexity: f64,
    pub byte_perplexity: f64,
    /// -sum(loglik) / sum(utf8 bytes) / ln 2.
    pub bits_per_byte: f64,
}

pub fn aggregate(name: &str, docs: &[DocScore]) -> PerplexityReport {
    let tokens: usize = docs.iter().map(|d| d.tokens).sum();
    let bytes: usize = docs.iter().map(|d| d.bytes).sum();
    let words: usize = docs.iter().map(|d| d.words).sum();
    let nll = -docs.iter().map(|d| d.logprob).sum::<f64>();
    let per = |n: usize| if n == 0 { f64::NAN } else { nll / n as f64 };
    PerplexityReport {
        name: name.to_string(),
        documents: docs.len(),
        tokens,
        bytes,
        words,
        token_loss: per(tokens),
        token_perplexity: per(tokens).exp(),
        word_perplexity: per(words).exp(),
        byte_perplexity: per(bytes).exp(),
        bits_per_byte: per(bytes) / std::f64::consts::LN_2,
    }
}
