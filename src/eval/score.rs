//! `cpt score`: per-document loss and perplexity under a model, written back into the
//! corpus as a field the data sampler's curriculum reads (`score` by default: a source's
//! `score_field`). JSONL records keep every field they had; plain-text documents become
//! `{"text": ..., "score": ...}` records.
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::documents::Document;
use super::perplexity::DocScore;

/// Field names written beside each document.
#[derive(Debug, Clone)]
pub struct ScoreFields {
    /// Perplexity, exp(mean token loss): what the curriculum orders by.
    pub score: String,
    pub text: String,
}

impl Default for ScoreFields {
    fn default() -> Self {
        ScoreFields { score: "score".into(), text: "text".into() }
    }
}

/// Writes one JSON record per document with `score` (perplexity), `<score>_loss` (mean
/// token loss, nats) and `<score>_tokens` added.
pub fn write_scored_jsonl(path: &Path, docs: &[Document], scores: &[DocScore], fields: &ScoreFields) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for (doc, s) in docs.iter().zip(scores) {
        let mut record = doc.record.clone().unwrap_or_else(|| {
            let mut m = serde_json::Map::new();
            m.insert(fields.text.clone(), Value::String(doc.text.clone()));
            m
        });
        let loss = s.mean_loss();
        record.insert(fields.score.clone(), json!(loss.exp()));
        record.insert(format!("{}_loss", fields.score), json!(loss));
        record.insert(format!("{}_tokens", fields.score), json!(s.tokens));
        serde_json::to_writer(&mut w, &Value::Object(record))?;
        w.write_all(b"\n")?;
    }
    w.flush().with_context(|| format!("writing {}", path.display()))
}

/// Distribution of per-document losses, for the summary line.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreSummary {
    pub documents: usize,
    pub tokens: usize,
    pub mean_loss: f64,
    pub p10_loss: f64,
    pub median_loss: f64,
    pub p90_loss: f64,
}

pub fn summarize(scores: &[DocScore]) -> ScoreSummary {
    let mut losses: Vec<f64> = scores.iter().filter(|s| s.tokens > 0).map(|s| s.mean_loss()).collect();
    losses.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| if losses.is_empty() { f64::NAN } else { losses[((losses.len() - 1) as f64 * p).round() as usize] };
    let tokens: usize = scores.iter().map(|s| s.tokens).sum();
    let nll: f64 = -scores.iter().map(|s| s.logprob).sum::<f64>();
    ScoreSummary {
        documents: scores.len(),
        tokens,
        mean_loss: if tokens == 0 { f64::NAN } else { nll / tokens as f64 },
        p10_loss: q(0.1),
        median_loss: q(0.5),
        p90_loss: q(0.9),
    }
}
