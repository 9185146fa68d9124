//! Generative benchmarks: the model writes an answer and it is checked, as
//! lm-evaluation-harness does it for `gsm8k`, `gsm8k_cot`, `minerva_math`, `humaneval` and
//! `mbpp`: its prompts byte for byte, its stop strings, its answer extraction and metrics.
//!
//! - `gsm8k`, `math`, `code`: formats, prompts, extraction and scoring of each benchmark
//! - `pyrandom`: Python's seeded `random.sample`, which picks gsm8k's few-shot examples
//!
//! Generation goes through `crate::generate`; code runs in `crate::eval::sandbox`.
pub mod code;
pub mod gsm8k;
pub mod math;
pub mod pyrandom;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use super::sandbox::{run_all, Limits, Sandbox, Verdict};
use crate::generate::{generate, FinishReason, GenerationConfig, Request, Sampling, StopStrings, TokenText};
use crate::model::CausalLm;
use crate::util::rng::SplitMix64;
use code::CodeProblem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GenKind {
    Gsm8k,
    Gsm8kCot,
    Math,
    Humaneval,
    Mbpp,
}

impl GenKind {
    pub fn name(self) -> &'static str {
        match self {
            GenKind::Gsm8k => "gsm8k",
            GenKind::Gsm8kCot => "gsm8k_cot",
            GenKind::Math => "math",
            GenKind::Humaneval => "humaneval",
            GenKind::Mbpp => "mbpp",
        }
    }

    /// The task name of `cpt eval --task NAME=PATH`, if generative.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "gsm8k" => GenKind::Gsm8k,
            "gsm8k_cot" => GenKind::Gsm8kCot,
            "math" | "minerva_math" => GenKind::Math,
            "humaneval" => GenKind::Humaneval,
            "mbpp" => GenKind::Mbpp,
            _ => return None,
        })
    }

    /// The harness' `num_fewshot`.
    pub fn default_shots(self) -> usize {
        match self {
            GenKind::Gsm8k => 5,
            GenKind::Gsm8kCot => 8,
            GenKind::Math => 4,
            GenKind::Humaneval => 0,
            GenKind::Mbpp => 3,
        }
    }

    fn max_shots(self) -> usize {
        match self {
            GenKind::Gsm8k => usize::MAX,
            GenKind::Gsm8kCot => gsm8k::max_cot_shots(),
            GenKind::Math => math::max_shots(),
            GenKind::Humaneval => 0,
            GenKind::Mbpp => code::max_mbpp_shots(),
        }
    }

    pub fn is_code(self) -> bool {
        matches!(self, GenKind::Humaneval | GenKind::Mbpp)
    }
}

impl fmt::Display for GenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an output is checked.
#[derive(Debug, Clone)]
enum Check {
    Gsm8k { answer: String, cot: bool },
    Math { answer: String },
    Code(CodeProblem),
}

/// One question: its prompt and how its answer is checked.
#[derive(Debug, Clone)]
pub struct GenItem {
    pub id: String,
    pub subject: String,
    pub line: usize,
    pub prompt: String,
    check: Check,
}

/// A generative benchmark, read and prompted.
#[derive(Debug, Clone)]
pub struct GenBenchmark {
    pub kind: GenKind,
    pub shots: usize,
    pub items: Vec<GenItem>,
    pub stop: Vec<String>,
    /// The harness' `max_gen_toks` (256, humaneval 1024).
    pub max_new_tokens: usize,
}

/// Reads a benchmark in its released format and builds the harness' prompts
/// (`shots`: default the harness' `num_fewshot`).
pub fn load_generative(kind: GenKind, path: &Path, shots: Option<usize>) -> Result<GenBenchmark> {
    let shots = shots.unwrap_or(kind.default_shots());
    if shots > kind.max_shots() {
        bail!("{kind}: at most {} shots (the harness' exemplars), {shots} asked", kind.max_shots());
    }
    let (items, stop, max_new_tokens) = match kind {
        GenKind::Gsm8k | GenKind::Gsm8kCot => {
            let test = gsm8k::read_problems(path)?;
            let cot = kind == GenKind::Gsm8kCot;
            let prompts = if cot {
                test.iter().map(|p| gsm8k::cot_prompt(p, shots)).collect()
            } else if shots == 0 {
                gsm8k::prompts(&test, &[], 0)?
            } else {
                let train_path = path.with_file_name("train.jsonl");
                if !train_path.is_file() {
                    bail!(
                        "gsm8k: the {shots} shots come from the train split, expected at {} (beside the evaluated file); \
                         or use --shots 0, or the gsm8k_cot task",
                        train_path.display()
                    );
                }
                gsm8k::prompts(&test, &gsm8k::read_problems(&train_path)?, shots)?
            };
            let items = test
                .iter()
                .zip(prompts)
                .enumerate()
                .map(|(i, (p, prompt))| GenItem {
                    id: i.to_string(),
                    subject: kind.name().into(),
                    line: p.line,
                    prompt,
                    check: Check::Gsm8k { answer: p.answer.clone(), cot },
                })
                .collect();
            (items, gsm8k::stop_strings(cot), 256)
        }
        GenKind::Math => {
            let items = math::read_problems(path)?
                .into_iter()
                .map(|p| GenItem {
                    id: format!("{}/{}", p.subject, p.id),
                    prompt: math::prompt(&p, shots),
                    subject: p.subject.clone(),
                    line: 1,
                    check: Check::Math { answer: p.answer },
                })
                .collect();
            (items, math::stop_strings(), 256)
        }
        GenKind::Humaneval | GenKind::Mbpp => {
            let (problems, stop, max_new) = if kind == GenKind::Humaneval {
                (code::read_humaneval(path)?, code::humaneval_stop(), code::HUMANEVAL_MAX_NEW_TOKENS)
            } else {
                (code::read_mbpp(path, shots)?, code::mbpp_stop(), 256)
            };
            let items = problems
                .into_iter()
                .map(|p| GenItem { id: p.id.clone(), subject: kind.name().into(), line: p.line, prompt: p.prompt.clone(), check: Check::Code(p) })
                .collect();
            (items, stop, max_new)
        }
    };
    Ok(GenBenchmark { kind, shots, items, stop, max_new_tokens })
}

impl GenItem {
    /// The program that checks `completion` (code benchmarks).
    pub fn program(&self, completion: &str) -> Option<String> {
        match &self.check {
            Check::Code(p) => Some(p.program(completion)),
            _ => None,
        }
    }
}

impl GenBenchmark {
    /// The reference solutions as programs (code benchmarks), for checking the sandbox.
    pub fn reference_programs(&self) -> Vec<String> {
        self.items
            .iter()
            .filter_map(|i| match &i.check {
                Check::Code(p) => Some(p.program(&p.reference)),
                _ => None,
            })
            .collect()
    }
}

/// How to generate and score.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub sampling: Sampling,
    /// Outputs per question (pass@k needs n >= k; more than 1 needs sampling).
    pub samples: usize,
    pub seed: u64,
    /// k of pass@k (code); those above `samples` are skipped.
    pub pass_k: Vec<usize>,
    pub batch_size: usize,
    pub limit: Option<usize>,
    /// Prepend BOS to prompts (the harness' `HFLM` default is no).
    pub add_bos: bool,
    /// Overrides the benchmark's generation length.
    pub max_new_tokens: Option<usize>,
    /// Context length (default: the model's); prompts keep their last tokens.
    pub max_len: Option<usize>,
    pub sandbox: Limits,
    /// Programs run at once.
    pub workers: usize,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            sampling: Sampling::greedy(),
            samples: 1,
            seed: 0,
            pass_k: vec![1],
            batch_size: 8,
            limit: None,
            add_bos: false,
            max_new_tokens: None,
            max_len: None,
            sandbox: Limits::default(),
            workers: 2,
        }
    }
}

/// One question's outputs and verdicts, as written to the per-question JSONL.
#[derive(Debug, Clone, Serialize)]
pub struct GenResult {
    pub benchmark: String,
    pub subject: String,
    pub id: String,
    pub line: usize,
    pub outputs: Vec<String>,
    pub finish: Vec<FinishReason>,
    /// Per extraction (`strict-match`, `flexible-extract`, `minerva`): the answer read from
    /// each output.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extracted: BTreeMap<String, Vec<String>>,
    /// The reference answer (gsm8k, math).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Per metric: whether each output is right (for code: the program passed).
    pub correct: BTreeMap<String, Vec<bool>>,
    /// Code: how each program ended, and the tail of its stderr.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<(Verdict, String)>,
}

/// A benchmark's scores, as written to `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct GenRun {
    pub benchmark: String,
    pub shots: usize,
    pub samples: usize,
    pub sampling: Sampling,
    pub questions: usize,
    /// `exact_match,strict-match`, `exact_match,flexible-extract` (gsm8k), `exact_match`
    /// (math), `pass@k` (code): the harness' metric names.
    pub metrics: BTreeMap<String, f64>,
    /// The same per subject (math).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subjects: BTreeMap<String, BTreeMap<String, f64>>,
    #[serde(skip)]
    pub results: Vec<GenResult>,
}

/// Generates and scores every question of `bench` (the first `limit`); `progress(done,
/// total)` counts generated outputs.
pub fn evaluate_generative(
    model: &CausalLm,
    tok: &dyn TokenText,
    bench: &GenBenchmark,
    opts: &GenOptions,
    sandbox: Option<&Sandbox>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GenRun> {
    opts.sampling.validate()?;
    let n = opts.samples.max(1);
    if n > 1 && opts.sampling.is_greedy() {
        bail!("{}: {n} samples per question need sampling (a temperature above 0): greedy outputs are all the same", bench.kind);
    }
    let items = &bench.items[..opts.limit.unwrap_or(usize::MAX).min(bench.items.len())];
    let max_new = opts.max_new_tokens.unwrap_or(bench.max_new_tokens);
    let context = opts.max_len.unwrap_or(usize::MAX).min(model.config().max_position_embeddings);
    if max_new >= context {
        bail!("{}: {max_new} new tokens do not fit a context of {context}", bench.kind);
    }
    // The harness keeps the last `max_length - max_gen_toks` tokens of a prompt.
    let keep = context - max_new;
    let mut requests = Vec::with_capacity(items.len() * n);
    for (i, item) in items.iter().enumerate() {
        let mut ids = tok.encode(&item.prompt, opts.add_bos)?;
        if ids.len() > keep {
            ids.drain(..ids.len() - keep);
        }
        for s in 0..n {
            requests.push(Request { ids: ids.clone(), seed: SplitMix64::keyed(&[opts.seed, i as u64, s as u64]).next_u64() });
        }
    }
    let cfg = GenerationConfig {
        max_new_tokens: max_new,
        sampling: opts.sampling,
        stop: StopStrings::new(&bench.stop),
        eos_ids: crate::generate::eos_ids(model, tok),
        batch_size: opts.batch_size.max(1),
    };
    // Longest prompts first, so each batch holds prompts of similar length.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&r| std::cmp::Reverse(requests[r].ids.len()));
    let mut outputs = vec![None; requests.len()];
    let total = requests.len();
    for chunk in order.chunks(cfg.batch_size) {
        let batch: Vec<Request> = chunk.iter().map(|&r| requests[r].clone()).collect();
        let (generated, _) = generate(model, tok, &batch, &cfg, &mut |_, _| {})?;
        for (&r, g) in chunk.iter().zip(generated) {
            outputs[r] = Some(g);
        }
        progress(outputs.iter().filter(|o| o.is_some()).count(), total);
    }
    let outputs: Vec<_> = outputs.into_iter().map(|o| o.expect("every request generated")).collect();

    let mut results: Vec<GenResult> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let outs = &outputs[i * n..(i + 1) * n];
            GenResult {
                benchmark: bench.kind.name().into(),
                subject: item.subject.clone(),
                id: item.id.clone(),
                line: item.line,
                outputs: outs.iter().map(|g| g.text.clone()).collect(),
                finish: outs.iter().map(|g| g.finish).collect(),
                extracted: BTreeMap::new(),
                answer: None,
                correct: BTreeMap::new(),
                runs: Vec::new(),
            }
        })
        .collect();
    if bench.kind.is_code() {
        let sandbox = sandbox.ok_or_else(|| anyhow::anyhow!("{}: running code needs a sandbox", bench.kind))?;
        let programs: Vec<String> = items
            .iter()
            .zip(&results)
            .flat_map(|(item, r)| match &item.check {
                Check::Code(p) => r.outputs.iter().map(|o| p.program(o)).collect::<Vec<_>>(),
                _ => Vec::new(),
            })
            .collect();
        let runs = run_all(sandbox, &programs, opts.workers, &|_| {})?;
        for (r, chunk) in results.iter_mut().zip(runs.chunks(n)) {
            r.correct.insert("pass".into(), chunk.iter().map(|x| x.verdict == Verdict::Passed).collect());
            r.runs = chunk.iter().map(|x| (x.verdict, x.stderr_tail.clone())).collect();
        }
    } else {
        for (item, r) in items.iter().zip(results.iter_mut()) {
            score_text(&item.check, r);
        }
    }
    let (metrics, subjects) = summarize(bench.kind, &results, n, &opts.pass_k);
    Ok(GenRun {
        benchmark: bench.kind.name().into(),
        shots: bench.shots,
        samples: n,
        sampling: opts.sampling,
        questions: results.len(),
        metrics,
        subjects,
        results,
    })
}

fn score_text(check: &Check, r: &mut GenResult) {
    match check {
        Check::Gsm8k { answer, cot } => {
            let (strict, flexible): (Vec<String>, Vec<String>) = r.outputs.iter().map(|o| gsm8k::extract(o, *cot)).unzip();
            let right = |xs: &[String]| xs.iter().map(|x| gsm8k::exact_match(x, answer)).collect::<Vec<_>>();
            r.correct.insert("strict-match".into(), right(&strict));
            r.correct.insert("flexible-extract".into(), right(&flexible));
            r.extracted.insert("strict-match".into(), strict);
            r.extracted.insert("flexible-extract".into(), flexible);
            r.answer = Some(answer.clone());
        }
        Check::Math { answer } => {
            let got: Vec<String> = r.outputs.iter().map(|o| math::normalize_final_answer(&math::get_unnormalized_answer(o))).collect();
            r.correct.insert("exact_match".into(), got.iter().map(|g| math::is_equiv(g, answer)).collect());
            r.extracted.insert("minerva".into(), got);
            r.answer = Some(answer.clone());
        }
        Check::Code(_) => {}
    }
}

type Metrics = BTreeMap<String, f64>;

/// The harness' metric names and values over `results` (means over questions, and over the
/// n outputs of each), overall and per subject.
fn summarize(kind: GenKind, results: &[GenResult], n: usize, pass_k: &[usize]) -> (Metrics, BTreeMap<String, Metrics>) {
    let score = |rs: &[&GenResult]| -> Metrics {
        let mut m = Metrics::new();
        if rs.is_empty() {
            return m;
        }
        let mean_of = |key: &str| {
            rs.iter().map(|r| r.correct[key].iter().filter(|&&c| c).count() as f64 / n as f64).sum::<f64>() / rs.len() as f64
        };
        match kind {
            GenKind::Gsm8k | GenKind::Gsm8kCot => {
                m.insert("exact_match,strict-match".into(), mean_of("strict-match"));
                m.insert("exact_match,flexible-extract".into(), mean_of("flexible-extract"));
            }
            GenKind::Math => {
                m.insert("exact_match".into(), mean_of("exact_match"));
            }
            GenKind::Humaneval | GenKind::Mbpp => {
                for &k in pass_k.iter().filter(|&&k| k >= 1 && k <= n) {
                    let v = rs.iter().map(|r| code::pass_at_k(n, r.correct["pass"].iter().filter(|&&c| c).count(), k)).sum::<f64>()
                        / rs.len() as f64;
                    m.insert(format!("pass@{k}"), v);
                }
            }
        }
        m
    };
    let all: Vec<&GenResult> = results.iter().collect();
    let mut subjects = BTreeMap::new();
    if kind == GenKind::Math {
        let mut by: BTreeMap<&str, Vec<&GenResult>> = BTreeMap::new();
        for r in results {
            by.entry(r.subject.as_str()).or_default().push(r);
        }
        for (s, rs) in by {
            subjects.insert(s.to_string(), score(&rs));
        }
    }
    (score(&all), subjects)
}
