//! Accuracy: per question (acc and acc_norm), per subject, per category, overall.
//! Overall and per-category accuracy are given both micro (every question counts once:
//! MMLU's "weighted accuracy", lm-evaluation-harness' group score) and macro (every
//! subject counts once: CMMLU's and C-Eval's official average).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Index of the first maximum (numpy's argmax tie rule).
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// (prediction, length-normalised prediction): acc_norm divides each choice's
/// log-likelihood by the choice's length in characters, as lm-evaluation-harness does.
pub fn predict(loglik: &[f64], choices: &[String]) -> (usize, usize) {
    let normed: Vec<f64> = loglik
        .iter()
        .zip(choices)
        .map(|(l, c)| l / (c.chars().count().max(1) as f64))
        .collect();
    (argmax(loglik), argmax(&normed))
}

/// One scored question, as written to the per-question JSONL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionResult {
    pub benchmark: String,
    pub subject: String,
    pub id: String,
    /// Line of the question in its file.
    pub line: usize,
    pub shots: usize,
    /// Log-likelihood of each choice's continuation, in choice order.
    pub loglik: Vec<f64>,
    /// Whether each choice is what greedy decoding would produce.
    pub greedy: Vec<bool>,
    pub prediction: String,
    pub prediction_norm: String,
    pub answer: String,
    pub correct: bool,
    pub correct_norm: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub questions: usize,
    pub acc: f64,
    pub acc_norm: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupAccuracy {
    pub subjects: usize,
    pub questions: usize,
    pub acc_micro: f64,
    pub acc_macro: f64,
    pub acc_norm_micro: f64,
    pub acc_norm_macro: f64,
}

/// A benchmark's accuracy at every level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccuracyReport {
    pub subjects: BTreeMap<String, Accuracy>,
    pub categories: BTreeMap<String, GroupAccuracy>,
    pub overall: GroupAccuracy,
}

fn group(subjects: &[&Accuracy]) -> GroupAccuracy {
    let n: usize = subjects.iter().map(|s| s.questions).sum();
    let k = subjects.len();
    let micro = |f: fn(&Accuracy) -> f64| {
        if n == 0 {
            0.0
        } else {
            subjects.iter().map(|s| f(s) * s.questions as f64).sum::<f64>() / n as f64
        }
    };
    let macro_ = |f: fn(&Accuracy) -> f64| if k == 0 { 0.0 } else { subjects.iter().map(|s| f(s)).sum::<f64>() / k as f64 };
    GroupAccuracy {
        subjects: k,
        questions: n,
        acc_micro: micro(|s| s.acc),
        acc_macro: macro_(|s| s.acc),
        acc_norm_micro: micro(|s| s.acc_norm),
        acc_norm_macro: macro_(|s| s.acc_norm),
    }
}

/// Aggregates results; `categories_of` names the categories a subject counts towards.
pub fn summarize(results: &[QuestionResult], categories_of: &dyn Fn(&str) -> Vec<String>) -> AccuracyReport {
    let mut per_subject: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for r in results {
        let e = per_subject.entry(r.subject.clone()).or_default();
        e.0 += 1;
        e.1 += r.correct as usize;
        e.2 += r.correct_norm as usize;
    }
    let subjects: BTreeMap<String, Accuracy> = per_subject
        .into_iter()
        .map(|(s, (n, c, cn))| {
            (s, Accuracy { questions: n, acc: c as f64 / n as f64, acc_norm: cn as f64 / n as f64 })
        })
        .collect();
    let mut by_category: BTreeMap<String, Vec<&Accuracy>> = BTreeMap::new();
    for (name, acc) in &subjects {
        for c in categories_of(name) {
            by_category.entry(c).or_default().push(acc);
        }
    }
    let categories = by_category.into_iter().map(|(c, accs)| (c, group(&accs))).collect();
    let all: Vec<&Accuracy> = subjects.values().collect();
    let overall = group(&all);
    AccuracyReport { subjects, categories, overall }
}
