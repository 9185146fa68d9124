//! The data plan without training (`cpt data inspect`): per stage the planned and
//! realised tokens per source and group, epochs and repeats, and the first windows.
use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::config::{DataConfig, RepeatPolicy};
use super::prepare::PreparedData;
use super::sampler::{apportion, simulate_blend, Sampler};
use crate::tokenizer::Tokenizer;

/// Blending is simulated window by window up to this many (windows x sources) steps;
/// beyond it only the apportioned plan is shown.
const MAX_SIMULATION_STEPS: u64 = 200_000_000;
/// Characters of decoded text shown per window.
const PREVIEW_CHARS: usize = 600;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectReport {
    pub seq_len: usize,
    pub seed: u64,
    pub sources: Vec<SourceInfo>,
    pub stages: Vec<StageInfo>,
    /// Problems training would stop on (repeat caps under `on_repeat_excess: error`).
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub windows: Vec<WindowPreview>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceInfo {
    pub name: String,
    pub group: Option<String>,
    pub documents: u64,
    pub tokens: u64,
    pub train_tokens: u64,
    pub validation_documents: usize,
    pub topics: Vec<String>,
    pub scored_documents: u64,
    pub max_repeats: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageInfo {
    pub name: String,
    pub start_tokens: u64,
    /// `None` for an open-ended last stage.
    pub tokens: Option<u64>,
    pub windows: Option<u64>,
    pub sources: Vec<StageSource>,
    pub groups: BTreeMap<String, StageGroup>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSource {
    pub name: String,
    pub weight: f64,
    /// weight x budget.
    pub planned_tokens: Option<f64>,
    /// What the blending rule gives, window by window (`None` when too long to simulate or
    /// open-ended; then the apportioned plan is used for epochs).
    pub realised_tokens: Option<u64>,
    /// Epochs of this source read by the end of the stage (cumulative over stages).
    pub epochs_at_end: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageGroup {
    pub weight: f64,
    pub planned_tokens: Option<f64>,
    pub realised_tokens: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowPreview {
    pub index: u64,
    pub source: String,
    pub stage: String,
    pub doc_starts: Vec<u32>,
    pub topics: Vec<Option<String>>,
    pub text: String,
}

/// Builds the report. `tokenizer` decodes the preview windows (token ids otherwise).
pub fn inspect(
    config: &DataConfig,
    data: PreparedData,
    seq_len: usize,
    seed: u64,
    preview_windows: usize,
    tokenizer: Option<&Tokenizer>,
) -> Result<InspectReport> {
    // Inspect shows repeat problems instead of stopping on them.
    let mut relaxed = config.clone();
    relaxed.sampler.on_repeat_excess = RepeatPolicy::Warn;
    let mut sampler = Sampler::new(&relaxed, data, seq_len, seed)?;
    let (errors, warnings) = if config.sampler.on_repeat_excess == RepeatPolicy::Error {
        (sampler.warnings().to_vec(), Vec::new())
    } else {
        (Vec::new(), sampler.warnings().to_vec())
    };
    let sources: Vec<SourceInfo> = config
        .sources
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let shard = sampler.data().source(i);
            SourceInfo {
                name: sc.name.clone(),
                group: sc.group.clone(),
                documents: shard.num_docs() as u64,
                tokens: shard.num_tokens(),
                train_tokens: sampler.source_train_tokens(i),
                validation_documents: sampler.validation_docs(i).len(),
                topics: shard.meta().topics.clone(),
                scored_documents: shard.meta().scored_docs,
                max_repeats: sc.max_repeats.or(config.sampler.max_repeats),
            }
        })
        .collect();

    let t = seq_len as u64;
    let mut cumulative = vec![0u64; sources.len()];
    let mut stages = Vec::new();
    for st in sampler.stages() {
        let windows = st.end().map(|end| end.div_ceil(t) - st.start.div_ceil(t));
        let realised: Option<Vec<u64>> = windows
            .filter(|w| w.saturating_mul(sources.len() as u64) <= MAX_SIMULATION_STEPS)
            .map(|w| simulate_blend(&st.weights, w));
        let counted = realised.clone().or_else(|| windows.map(|w| apportion(w, &st.weights)));
        let mut rows = Vec::new();
        let mut groups: BTreeMap<String, StageGroup> = BTreeMap::new();
        for (i, s) in sources.iter().enumerate() {
            if let Some(c) = &counted {
                cumulative[i] += c[i] * t;
            }
            let row = StageSource {
                name: s.name.clone(),
                weight: st.weights[i],
                planned_tokens: st.tokens.map(|b| b as f64 * st.weights[i]),
                realised_tokens: realised.as_ref().map(|r| r[i] * t),
                epochs_at_end: counted.as_ref().filter(|_| s.train_tokens > 0).map(|_| cumulative[i] as f64 / s.train_tokens as f64),
            };
            if let Some(g) = &s.group {
                let e = groups.entry(g.clone()).or_default();
                e.weight += row.weight;
                e.planned_tokens = row.planned_tokens.map(|p| p + e.planned_tokens.unwrap_or(0.0));
                e.realised_tokens = row.realised_tokens.map(|r| r + e.realised_tokens.unwrap_or(0));
            }
            rows.push(row);
        }
        stages.push(StageInfo { name: st.name.clone(), start_tokens: st.start, tokens: st.tokens, windows, sources: rows, groups });
    }

    let mut previews = Vec::new();
    for _ in 0..preview_windows {
        let index = sampler.windows();
        let w = sampler.next_window()?;
        let text = match tokenizer {
            Some(tok) => tok.decode(&w.tokens).unwrap_or_else(|e| format!("<cannot decode: {e}>")),
            None => format!("{:?}", w.tokens),
        };
        let text: String = text.chars().take(PREVIEW_CHARS).collect();
        previews.push(WindowPreview {
            index,
            source: config.sources[w.source].name.clone(),
            stage: sampler.stages()[w.stage].name.clone(),
            doc_starts: w.doc_starts.clone(),
            topics: w.topics.iter().map(|t| t.and_then(|t| sampler.topic_name(t)).map(str::to_string)).collect(),
            text,
        });
    }
    let mut warnings = warnings;
    for w in sampler.warnings() {
        if !errors.contains(w) && !warnings.contains(w) {
            warnings.push(w.clone());
        }
    }
    Ok(InspectReport { seq_len, seed, sources, stages, errors, warnings, windows: previews })
}

fn tokens_h(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}B", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}K", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// The report as text for a terminal.
pub fn format_inspect(r: &InspectReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("seq_len {}, seed {}\n\nsources:\n", r.seq_len, r.seed));
    for s in &r.sources {
        out.push_str(&format!(
            "  {:<16} group {:<8} {:>9} docs {:>9} tokens ({} train, {} val docs){}{}{}\n",
            s.name,
            s.group.as_deref().unwrap_or("-"),
            s.documents,
            tokens_h(s.tokens as f64),
            tokens_h(s.train_tokens as f64),
            s.validation_documents,
            if s.topics.is_empty() { String::new() } else { format!(", {} topics", s.topics.len()) },
            if s.scored_documents > 0 { format!(", {} scored", s.scored_documents) } else { String::new() },
            s.max_repeats.map(|m| format!(", max {m} epochs")).unwrap_or_default(),
        ));
    }
    for st in &r.stages {
        let budget = st.tokens.map(|t| tokens_h(t as f64)).unwrap_or_else(|| "open-ended".into());
        out.push_str(&format!("\nstage {} (from token {}, budget {budget}):\n", st.name, tokens_h(st.start_tokens as f64)));
        out.push_str("  source             weight      planned     realised   epochs at end\n");
        for s in &st.sources {
            out.push_str(&format!(
                "  {:<16} {:>8.4} {:>12} {:>12} {:>14}\n",
                s.name,
                s.weight,
                s.planned_tokens.map(tokens_h).unwrap_or_else(|| "-".into()),
                s.realised_tokens.map(|x| tokens_h(x as f64)).unwrap_or_else(|| "-".into()),
                s.epochs_at_end.map(|e| format!("{e:.3}")).unwrap_or_else(|| "-".into()),
            ));
        }
        for (g, v) in &st.groups {
            out.push_str(&format!(
                "  group {:<10} {:>8.4} {:>12} {:>12}\n",
                g,
                v.weight,
                v.planned_tokens.map(tokens_h).unwrap_or_else(|| "-".into()),
                v.realised_tokens.map(|x| tokens_h(x as f64)).unwrap_or_else(|| "-".into()),
            ));
        }
    }
    for e in &r.errors {
        out.push_str(&format!("\nerror (training would stop): {e}\n"));
    }
    for w in &r.warnings {
        out.push_str(&format!("\nwarning: {w}\n"));
    }
    for w in &r.windows {
        let topics: Vec<&str> = w.topics.iter().map(|t| t.as_deref().unwrap_or("-")).collect();
        out.push_str(&format!(
            "\nwindow {} (source {}, stage {}, documents start at {:?}, topics {:?}):\n{}\n",
            w.index, w.source, w.stage, w.doc_starts, topics, w.text
        ));
    }
    out
}
