//! A benchmark run: prompts for every question, one log-likelihood per choice, results.
use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::benchmarks::Benchmark;
use super::loglik::{encode_pair, loglikelihoods, EngineOptions, LogitsModel};
use super::metrics::{predict, summarize, AccuracyReport, QuestionResult};
use super::requests::{build_request, Fit, TextEncoder};
use super::subjects::categories;
use super::templates::{PromptStyle, Template};

#[derive(Debug, Clone)]
pub struct McOptions {
    pub style: PromptStyle,
    /// Few-shot examples from the dev split (default 5).
    pub shots: usize,
    /// Tokenize prompts with the tokenizer's special tokens (BOS). `None`: the style's
    /// reference behaviour: yes for the official scripts (the HF tokenizer's default),
    /// no for lm-evaluation-harness (its `HFLM` default `add_bos_token=False`).
    pub add_special: Option<bool>,
    /// Context length for shot dropping and truncation (default: the model's).
    pub max_len: Option<usize>,
    /// Evaluate at most this many questions per subject (first ones in file order).
    pub limit: Option<usize>,
    pub engine: EngineOptions,
}

impl Default for McOptions {
    fn default() -> Self {
        McOptions { style: PromptStyle::Official, shots: 5, add_special: None, max_len: None, limit: None, engine: EngineOptions::default() }
    }
}

impl McOptions {
    pub fn add_special(&self) -> bool {
        self.add_special.unwrap_or(self.style == PromptStyle::Official)
    }
}

/// Everything one benchmark run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct McRun {
    pub benchmark: String,
    pub split: String,
    pub style: PromptStyle,
    pub shots: usize,
    pub report: AccuracyReport,
    #[serde(skip)]
    pub results: Vec<QuestionResult>,
}

/// Scores every question of `bench`; `progress(done, total)` counts questions.
pub fn evaluate_benchmark(
    model: &dyn LogitsModel,
    enc: &dyn TextEncoder,
    bench: &Benchmark,
    opts: &McOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<McRun> {
    let max_len = opts.max_len.unwrap_or(usize::MAX).min(model.max_len());
    let add_special = opts.add_special();
    let fit = Fit { encoder: enc, max_len, add_special };

    struct Pending {
        subject: usize,
        question: usize,
        shots: usize,
        first_request: usize,
        choices: usize,
        choice_texts: Vec<String>,
    }
    let mut pending = Vec::new();
    let mut requests = Vec::new();
    for (si, subject) in bench.subjects.iter().enumerate() {
        let tpl = Template::new(bench.kind, opts.style, &subject.name);
        let take = opts.limit.unwrap_or(usize::MAX).min(subject.questions.len());
        for (qi, q) in subject.questions[..take].iter().enumerate() {
            let req = build_request(&tpl, &subject.dev, opts.shots, q, Some(&fit))?;
            pending.push(Pending { subject: si, question: qi, shots: req.shots_used, first_request: requests.len(), choices: req.continuations.len(), choice_texts: req.choice_texts.clone() });
            for cont in &req.continuations {
                requests.push(encode_pair(enc, &req.context, cont, add_special)?);
            }
        }
    }
    let total_questions = pending.len();
    let per_question = (requests.len() / total_questions.max(1)).max(1);
    let scored = loglikelihoods(model, &requests, opts.engine, &mut |done| progress(done / per_question, total_questions))?;

    let mut results = Vec::with_capacity(pending.len());
    for p in &pending {
        let subject = &bench.subjects[p.subject];
        let q = &subject.questions[p.question];
        let s = &scored[p.first_request..p.first_request + p.choices];
        let loglik: Vec<f64> = s.iter().map(|r| r.logprob).collect();
        let labels = &q.labels;
        let (pred, pred_norm) = predict(&loglik, &p.choice_texts);
        results.push(QuestionResult {
            benchmark: bench.kind.name().to_string(),
            subject: subject.name.clone(),
            id: q.id.clone(),
            line: q.line,
            shots: p.shots,
            greedy: s.iter().map(|r| r.greedy).collect(),
            loglik,
            prediction: labels[pred].clone(),
            prediction_norm: labels[pred_norm].clone(),
            answer: labels[q.answer].clone(),
            correct: pred == q.answer,
            correct_norm: pred_norm == q.answer,
        });
    }
    let kind = bench.kind;
    let report = summarize(&results, &|s| categories(kind, s));
    // ARC and HellaSwag (no dev split here) run zero-shot whatever was asked.
    let shots = if bench.subjects.iter().all(|s| s.dev.is_empty()) { 0 } else { opts.shots };
    Ok(McRun { benchmark: kind.name().to_string(), split: bench.split.clone(), style: opts.style, shots, report, results })
}
