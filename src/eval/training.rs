//! Evaluation during training: the `eval:` section of the training YAML names benchmark
//! and perplexity tasks. The training config keeps the tasks as raw YAML values
//! (`config::EvalConfig::tasks`); the loop turns them into `EvalTask`s with
//! `parse_tasks`, loads their files once with `PreparedEvalTasks::from_tasks`, and calls
//! `run` every `every_steps` steps, logging the returned metrics as an
//! `{"kind":"eval", "step":.., "tokens":.., ...}` record.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::benchmarks::{load_benchmark, Benchmark, BenchmarkKind};
use super::documents::{read_documents, TextSplit};
use super::loglik::{EngineOptions, LogitsModel};
use super::multiple_choice::{evaluate_benchmark, McOptions};
use super::perplexity::{aggregate, score_documents};
use super::requests::TextEncoder;
use super::templates::PromptStyle;

fn default_shots() -> usize {
    5
}
fn default_text_field() -> String {
    "text".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvalTask {
    /// A multiple-choice benchmark in its released layout.
    Benchmark {
        /// Metric name (default: the benchmark's name).
        #[serde(default)]
        name: Option<String>,
        benchmark: BenchmarkKind,
        path: PathBuf,
        #[serde(default)]
        split: Option<String>,
        #[serde(default = "default_shots")]
        shots: usize,
        #[serde(default)]
        style: PromptStyle,
        #[serde(default)]
        subjects: Option<Vec<String>>,
        /// At most this many questions per subject, to keep in-training evaluation quick.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Token loss, perplexity and bits per byte of JSONL/text files.
    Perplexity {
        name: String,
        paths: Vec<PathBuf>,
        #[serde(default = "default_text_field")]
        text_field: String,
        #[serde(default)]
        text_split: TextSplit,
        /// Window length (default: the model's context length).
        #[serde(default)]
        max_len: Option<usize>,
        #[serde(default)]
        max_docs: Option<usize>,
    },
}

enum Prepared {
    Mc { name: String, bench: Benchmark, opts: McOptions },
    Ppl { name: String, docs: Vec<String>, max_len: Option<usize> },
}

/// Tasks with their files read, ready to run against the current weights.
pub struct PreparedEvalTasks {
    tasks: Vec<Prepared>,
    engine: EngineOptions,
}

/// Types the raw YAML task values of the training config; errors name
/// `eval.tasks[i]` and the offending key.
pub fn parse_tasks(values: &[serde_yaml::Value]) -> Result<Vec<EvalTask>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            serde_path_to_error::deserialize(v.clone()).map_err(|e| {
                let path = e.path().to_string();
                let at = if path == "." { format!("eval.tasks[{i}]") } else { format!("eval.tasks[{i}].{path}") };
                anyhow::anyhow!("{at}: {}", e.into_inner())
            })
        })
        .collect()
}

impl PreparedEvalTasks {
    /// Reads every task's files (`batch_tokens`: padded tokens per forward, e.g. 4096); errors
    /// name the task by its position in `eval.tasks`.
    pub fn from_tasks(task_list: &[EvalTask], batch_tokens: usize) -> Result<Self> {
        let engine = EngineOptions { batch_tokens: batch_tokens.max(1) };
        let mut tasks = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, t) in task_list.iter().enumerate() {
            let at = format!("eval.tasks[{i}]");
            let prepared = match t {
                EvalTask::Benchmark { name, benchmark, path, split, shots, style, subjects, limit } => {
                    let bench = load_benchmark(*benchmark, path, split.as_deref(), subjects.as_deref())
                        .with_context(|| format!("{at}.path"))?;
                    let opts = McOptions { style: *style, shots: *shots, limit: *limit, engine, ..Default::default() };
                    Prepared::Mc { name: name.clone().unwrap_or_else(|| benchmark.name().to_string()), bench, opts }
                }
                EvalTask::Perplexity { name, paths, text_field, text_split, max_len, max_docs } => {
                    if paths.is_empty() {
                        bail!("{at}.paths: give at least one file");
                    }
                    let mut docs = Vec::new();
                    for p in paths {
                        let read = read_documents(p, text_field, *text_split).with_context(|| format!("{at}.paths"))?;
                        docs.extend(read.into_iter().map(|d| d.text));
                    }
                    if let Some(m) = max_docs {
                        docs.truncate(*m);
                    }
                    Prepared::Ppl { name: name.clone(), docs, max_len: *max_len }
                }
            };
            let name = match &prepared {
                Prepared::Mc { name, .. } | Prepared::Ppl { name, .. } => name.clone(),
            };
            if !names.insert(name.clone()) {
                bail!("{at}: a second task named `{name}` (names must be unique)");
            }
            tasks.push(prepared);
        }
        Ok(PreparedEvalTasks { tasks, engine })
    }

    /// Runs every task; returns `{task name: metrics}` to merge into the eval record.
    pub fn run(&self, model: &dyn LogitsModel, enc: &dyn TextEncoder) -> Result<Value> {
        let mut out = BTreeMap::new();
        for t in &self.tasks {
            match t {
                Prepared::Mc { name, bench, opts } => {
                    let run = evaluate_benchmark(model, enc, bench, opts, &mut |_, _| {})?;
                    let o = &run.report.overall;
                    let cats: BTreeMap<_, _> = run.report.categories.iter().map(|(c, g)| (c.clone(), g.acc_micro)).collect();
                    out.insert(
                        name.clone(),
                        json!({"acc": o.acc_micro, "acc_macro": o.acc_macro, "acc_norm": o.acc_norm_micro,
                               "questions": o.questions, "categories": cats}),
                    );
                }
                Prepared::Ppl { name, docs, max_len } => {
                    let max_len = max_len.unwrap_or(usize::MAX);
                    let scores = score_documents(model, enc, docs, max_len, self.engine, &mut |_, _| {})?;
                    let r = aggregate(name, &scores);
                    out.insert(
                        name.clone(),
                        json!({"loss": r.token_loss, "ppl": r.token_perplexity, "bits_per_byte": r.bits_per_byte, "tokens": r.tokens}),
                    );
                }
            }
        }
        Ok(serde_json::to_value(out)?)
    }
}
