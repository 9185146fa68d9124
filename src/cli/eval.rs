//! `cpt eval`: multiple-choice benchmarks, generative benchmarks and perplexity sets against
//! one model.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use cpt::eval::benchmarks::{load_benchmark, BenchmarkKind};
use cpt::eval::documents::{read_documents, TextSplit};
use cpt::eval::multiple_choice::{evaluate_benchmark, McOptions};
use cpt::eval::generative::{evaluate_generative, load_generative, GenKind, GenOptions};
use cpt::eval::perplexity::{aggregate, score_documents};
use cpt::eval::report::{format_table, write_generative_jsonl, write_json, write_questions_jsonl, EvalReport, Timing};
use cpt::eval::sandbox::{Limits, Sandbox};
use super::generation_args::SamplingArgs;
use cpt::eval::templates::PromptStyle;
use super::scoring_model::{ScoringModel, ScoringModelArgs};

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ScoringModelArgs,
    /// `mmlu=DIR`, `ceval=DIR`, `cmmlu=DIR`, `arc=FILE`, `hellaswag=FILE` (multiple
    /// choice), `gsm8k=FILE`, `gsm8k_cot=FILE`, `math=DIR`, `humaneval=FILE`, `mbpp=FILE`
    /// (generative, released formats) or `ppl=FILE` (JSONL or text: loss, perplexity, bits
    /// per byte). Repeat for several.
    #[arg(long = "task", required = true)]
    tasks: Vec<String>,
    /// Few-shot examples (default: 5 from the dev split for multiple choice; the harness'
    /// number for generative tasks: gsm8k 5, gsm8k_cot 8, math 4, mbpp 3, humaneval 0).
    #[arg(long)]
    shots: Option<usize>,
    /// Prompt template: `official` (the benchmark's own scripts) or `lm-eval`.
    #[arg(long, default_value = "official")]
    style: String,
    /// Split to evaluate (default: mmlu test, ceval val, cmmlu test).
    #[arg(long)]
    split: Option<String>,
    /// Only these subjects (comma-separated).
    #[arg(long, value_delimiter = ',')]
    subjects: Option<Vec<String>>,
    /// At most this many questions per subject.
    #[arg(long)]
    limit: Option<usize>,
    /// Tokenize prompts with special tokens (BOS): auto (official: yes, lm-eval: no), yes, no.
    #[arg(long, default_value = "auto")]
    add_bos: String,
    /// JSONL field holding the text of perplexity documents.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Plain-text perplexity files: `file` (one document) or `blank-line` (paragraphs).
    #[arg(long, default_value = "file")]
    text_split: String,
    /// Write report.json and per-question JSONL (`<benchmark>-questions.jsonl`) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print every subject in the table, not only categories.
    #[arg(long)]
    per_subject: bool,
    #[command(flatten)]
    generation: GenerativeArgs,
}

/// Options of the generative benchmarks.
#[derive(clap::Args)]
struct GenerativeArgs {
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Outputs per question (pass@k needs at least k; more than one needs --temperature).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// k of pass@k for humaneval and mbpp (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pass_k: Vec<usize>,
    /// Generation length (default: the harness' max_gen_toks, 256; humaneval 1024).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Prompts per forward pass while generating.
    #[arg(long, default_value_t = 8)]
    gen_batch_size: usize,
    /// Wall-clock limit of one generated program, in seconds.
    #[arg(long, default_value_t = 3.0)]
    code_timeout: f64,
    /// Memory limit of one generated program, in MiB.
    #[arg(long, default_value_t = 2048)]
    code_memory_mb: u64,
    /// Generated programs run at once (default: the number of CPUs).
    #[arg(long)]
    code_workers: Option<usize>,
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn run(args: EvalArgs) -> Result<()> {
    let style: PromptStyle = args.style.parse()?;
    let add_special = match args.add_bos.as_str() {
        "auto" => None,
        "yes" => Some(true),
        "no" => Some(false),
        other => bail!("--add-bos {other:?}: expected auto, yes or no"),
    };
    let text_split = match args.text_split.as_str() {
        "file" => TextSplit::File,
        "blank-line" => TextSplit::BlankLine,
        other => bail!("--text-split {other:?}: expected file or blank-line"),
    };
    // Check every task before loading the model.
    let mut parsed = Vec::new();
    for t in &args.tasks {
        let (name, path) = t.split_once('=').with_context(|| format!("--task {t:?}: expected NAME=PATH, e.g. cmmlu=data/cmmlu"))?;
        let path = PathBuf::from(path);
        if !path.exists() {
            bail!("--task {t}: {} does not exist", path.display());
        }
        parsed.push((name.to_string(), path));
    }
    let ScoringModel { lm, tokenizer: tok, engine } = args.model.load()?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }

    let mut sandbox: Option<Sandbox> = None;
    let mut report = EvalReport { model: args.model.model.display().to_string(), ..Default::default() };
    for (name, path) in parsed {
        if name == "ppl" {
            let docs: Vec<String> = read_documents(&path, &args.text_field, text_split)?.into_iter().map(|d| d.text).collect();
            let bar = progress(0, "windows");
            let start = Instant::now();
            let scores = score_documents(&lm, &tok, &docs, usize::MAX, engine, &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            let secs = start.elapsed().as_secs_f64();
            report.perplexity.push(aggregate(&path.display().to_string(), &scores));
            report.timing.push(Timing { task: format!("ppl {}", path.display()), seconds: secs, items: docs.len(), items_per_s: docs.len() as f64 / secs });
            continue;
        }
        if let Some(kind) = GenKind::parse(&name) {
            let run = run_generative(&args, kind, &path, &lm.model, &tok, add_special, &mut sandbox)?;
            report.timing.push(run.1);
            if let Some(out) = &args.out {
                write_generative_jsonl(&out.join(format!("{}-questions.jsonl", kind.name())), &run.0.results)?;
            }
            report.generative.push(run.0);
            continue;
        }
        let kind: BenchmarkKind = name.parse().with_context(|| format!("--task {name}=..."))?;
        let bench = load_benchmark(kind, &path, args.split.as_deref(), args.subjects.as_deref())?;
        let opts = McOptions { style, shots: args.shots.unwrap_or(5), add_special, max_len: args.model.max_len, limit: args.limit, engine };
        let bar = progress(0, kind.name());
        let start = Instant::now();
        let run = evaluate_benchmark(&lm, &tok, &bench, &opts, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        let n = run.results.len();
        report.timing.push(Timing { task: kind.name().to_string(), seconds: secs, items: n, items_per_s: n as f64 / secs });
        if let Some(out) = &args.out {
            write_questions_jsonl(&out.join(format!("{}-questions.jsonl", kind.name())), &run.results)?;
        }
        report.benchmarks.push(run);
    }
    print!("{}", format_table(&report, args.per_subject));
    if let Some(out) = &args.out {
        write_json(&out.join("report.json"), &report)?;
        println!("wrote {}", out.join("report.json").display());
    }
    Ok(())
}

/// Generates and scores one generative benchmark; its run and timing.
fn run_generative(
    args: &EvalArgs,
    kind: GenKind,
    path: &std::path::Path,
    model: &cpt::model::CausalLm,
    tok: &cpt::model::Tokenizer,
    add_special: Option<bool>,
    sandbox: &mut Option<Sandbox>,
) -> Result<(cpt::eval::generative::GenRun, Timing)> {
    let g = &args.generation;
    let bench = load_generative(kind, path, args.shots)?;
    if kind.is_code() && sandbox.is_none() {
        if !(g.code_timeout > 0.0 && g.code_timeout.is_finite()) {
            bail!("--code-timeout must be a positive number of seconds");
        }
        let limits = Limits {
            timeout: std::time::Duration::from_secs_f64(g.code_timeout),
            memory_bytes: g.code_memory_mb << 20,
            ..Limits::default()
        };
        let s = Sandbox::new(limits).context("the code benchmarks run generated programs")?;
        for w in s.warnings() {
            eprintln!("warning: sandbox: {w}");
        }
        *sandbox = Some(s);
    }
    let opts = GenOptions {
        sampling: g.sampling.sampling()?,
        samples: g.samples,
        seed: g.sampling.seed,
        pass_k: g.pass_k.clone(),
        batch_size: g.gen_batch_size,
        limit: args.limit,
        // lm-evaluation-harness' HFLM adds no BOS by default.
        add_bos: add_special.unwrap_or(false),
        max_new_tokens: g.max_new_tokens,
        max_len: args.model.max_len,
        workers: g.code_workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
        ..GenOptions::default()
    };
    let bar = progress(0, kind.name());
    let start = Instant::now();
    let run = evaluate_generative(model, tok, &bench, &opts, sandbox.as_ref(), &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let n = run.questions;
    Ok((run, Timing { task: kind.name().to_string(), seconds: secs, items: n, items_per_s: n as f64 / secs }))
}
