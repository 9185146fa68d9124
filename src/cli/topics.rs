//! `cpt topics train | label | eval`: a fastText-style topic classifier for unlabelled web
//! text, and labels written into JSONL files or prepared shards for the sampler's topic mixing.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cpt::topics::build::{evaluate_classifier, train_classifier};
use cpt::topics::data::{label_set, read_labelled, stratified_split, LabelledDoc};
use cpt::topics::io::{self, TrainingInfo};
use cpt::topics::label::{label_jsonl, label_shards, LabelOptions, LabelStats, OnMalformed};
use cpt::topics::model::ModelSettings;
use cpt::topics::train::SgdOptions;
use cpt::util::cpu_time::process_cpu_seconds;

#[derive(clap::Subcommand)]
pub enum TopicsCommand {
    /// Train a topic classifier on labelled documents and evaluate it on a held-out split.
    Train(TrainArgs),
    /// Write each document's topic into JSONL files or prepared shards.
    Label(LabelArgs),
    /// Score a trained classifier on labelled documents.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
pub struct LabelledDataArgs {
    /// Labelled documents: JSONL (or Parquet / text) files, directories or globs; gz/zst.
    #[arg(long = "data", num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    #[arg(long, default_value = "text")]
    text_field: String,
    /// The field holding each document's topic.
    #[arg(long, default_value = "topic")]
    label_field: String,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    input: LabelledDataArgs,
    /// Output folder: model.safetensors, classifier.json, evaluation.json.
    #[arg(long)]
    out: PathBuf,
    /// Held-out documents in separate files (default: a seeded split of --data).
    #[arg(long = "valid", num_args = 1..)]
    valid: Vec<PathBuf>,
    /// Share of each topic's documents held out when --valid is not given (0: none).
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f64,
    /// Embedding size.
    #[arg(long, default_value_t = 100)]
    dim: usize,
    /// Passes over the training documents.
    #[arg(long, default_value_t = 20)]
    epoch: u32,
    /// Starting learning rate (falls linearly to 0).
    #[arg(long, default_value_t = 0.5)]
    lr: f32,
    /// Longest word n-gram (1: words only).
    #[arg(long, default_value_t = 2)]
    word_ngrams: u32,
    /// Shortest character n-gram, in characters.
    #[arg(long, default_value_t = 1)]
    minn: u32,
    /// Longest character n-gram (0: none).
    #[arg(long, default_value_t = 3)]
    maxn: u32,
    /// Hashed rows shared by all n-grams.
    #[arg(long, default_value_t = 2_000_000)]
    bucket: u32,
    /// Words seen fewer times get no row of their own (their n-grams still count).
    #[arg(long, default_value_t = 1)]
    min_count: u64,
    /// Training threads (default: all cores); 1 is deterministic.
    #[arg(long)]
    threads: Option<usize>,
    /// Seeds the held-out split, the initial weights and the example order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct LabelArgs {
    /// A `cpt topics train` output folder.
    #[arg(long)]
    model: PathBuf,
    /// JSONL files (optionally .gz/.zst) to label into --out.
    #[arg(long = "input", num_args = 1.., required_unless_present = "shards")]
    inputs: Vec<PathBuf>,
    /// Output folder: one file per input, same name and compression.
    #[arg(long, required_unless_present = "shards")]
    out: Option<PathBuf>,
    /// Prepared sources (`cpt prepare` output folders): topics are written into their
    /// document index, where topic mixing reads them.
    #[arg(long = "shards", num_args = 1..)]
    shards: Vec<PathBuf>,
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Field that receives the topic; `<field>_prob` receives its probability.
    #[arg(long, default_value = "topic")]
    topic_field: String,
    /// Documents whose best topic is less likely than this get no topic.
    #[arg(long, default_value_t = 0.0)]
    min_prob: f32,
    /// What to do with JSONL records without a usable text.
    #[arg(long, value_enum, default_value = "fail")]
    on_malformed: OnMalformed,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A `cpt topics train` output folder.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    input: LabelledDataArgs,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the evaluation as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: TopicsCommand) -> Result<()> {
    match command {
        TopicsCommand::Train(a) => with_threads(a.threads, || train(a)),
        TopicsCommand::Label(a) => with_threads(a.threads, || label(a)),
        TopicsCommand::Eval(a) => with_threads(a.threads, || eval(a)),
    }
}

fn thread_count(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1)
}

/// Runs `f` with rayon limited to `threads`, so that `--threads 1` means one core throughout.
fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(thread_count(threads)).build().context("starting threads")?;
    pool.install(f)
}

fn bar(enabled: bool, len: Option<u64>, template: &str) -> ProgressBar {
    let target = if enabled { ProgressDrawTarget::stderr_with_hz(4) } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(len, target);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn train(args: TrainArgs) -> Result<()> {
    let started = Instant::now();
    let LabelledDataArgs { data, text_field, label_field } = &args.input;
    let (docs, files) = read_labelled(data, text_field, label_field, "--data")?;
    let (train_docs, held_out, held_out_from): (Vec<&LabelledDoc>, Vec<LabelledDoc>, String) = if args.valid.is_empty() {
        if !(0.0..1.0).contains(&args.valid_fraction) {
            bail!("--valid-fraction {}: expected a share in [0, 1)", args.valid_fraction);
        }
        let (train_idx, held_idx) = stratified_split(&docs, args.valid_fraction, args.seed);
        let held = held_idx.iter().map(|&i| docs[i].clone()).collect();
        (train_idx.iter().map(|&i| &docs[i]).collect(), held, format!("fraction {} of each topic (seed {})", args.valid_fraction, args.seed))
    } else {
        let (valid, valid_files) = read_labelled(&args.valid, text_field, label_field, "--valid")?;
        let names: Vec<String> = valid_files.iter().map(|f| f.display().to_string()).collect();
        (docs.iter().collect(), valid, names.join(", "))
    };
    let labels = label_set(&docs);
    if labels.len() < 2 {
        bail!("--data: every document has the topic {:?}; a classifier needs at least two", labels.first().map(String::as_str).unwrap_or(""));
    }
    let read_s = started.elapsed().as_secs_f64();
    let settings = ModelSettings {
        dim: args.dim,
        word_ngrams: args.word_ngrams,
        minn: args.minn,
        maxn: args.maxn,
        bucket: args.bucket,
        min_count: args.min_count,
    };
    let sgd = SgdOptions { epoch: args.epoch, lr: args.lr, threads: thread_count(args.threads), seed: args.seed };
    let progress = bar(!args.quiet && !args.json, Some(1), "{elapsed_precise} [{wide_bar}] {percent}% | {msg} | ETA {eta}");
    let train_started = Instant::now();
    let train_cpu = process_cpu_seconds();
    let report = |done: u64, total: u64| {
        progress.set_length(total);
        progress.set_position(done);
        let secs = train_started.elapsed().as_secs_f64().max(1e-9);
        progress.set_message(format!("{:.0} words/s/thread", done as f64 / secs / sgd.threads as f64));
    };
    let trained = train_classifier(&train_docs, labels, settings, &sgd, &report)?;
    progress.finish_and_clear();
    let train_s = train_started.elapsed().as_secs_f64();
    let train_cpu_s = process_cpu_seconds() - train_cpu;
    let eval_started = Instant::now();
    let held_refs: Vec<&LabelledDoc> = held_out.iter().collect();
    let evaluation = if held_refs.is_empty() { None } else { Some(evaluate_classifier(&trained.classifier, &held_refs)?) };
    let eval_s = eval_started.elapsed().as_secs_f64();
    let info = TrainingInfo {
        data: files.iter().map(|f| f.display().to_string()).collect(),
        text_field: text_field.clone(),
        label_field: label_field.clone(),
        examples: train_docs.len() as u64,
        held_out: held_out.len() as u64,
        held_out_from,
        words: trained.words,
        sgd: sgd.clone(),
        last_epoch_loss: trained.last_epoch_loss,
        seconds: train_s,
    };
    let save_started = Instant::now();
    io::save(&args.out, &trained.classifier, &trained.settings, Some(info.clone()), evaluation.as_ref())?;
    let save_s = save_started.elapsed().as_secs_f64();
    if args.json {
        let timings = serde_json::json!({"read": read_s, "train": train_s, "train_cpu": train_cpu_s, "evaluate": eval_s, "save": save_s});
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"training": info, "settings": trained.settings, "evaluation": evaluation, "seconds": timings}))?);
        return Ok(());
    }
    println!(
        "trained on {} documents ({} words, {} topics, vocabulary {}) in {:.2} s with {} thread(s): {:.0} words/s/thread, last-epoch loss {:.4}",
        info.examples,
        info.words,
        trained.classifier.labels.len(),
        trained.classifier.featurizer.vocabulary().len(),
        train_s,
        sgd.threads,
        info.words as f64 * sgd.epoch as f64 / train_s.max(1e-9) / sgd.threads as f64,
        info.last_epoch_loss
    );
    match &evaluation {
        Some(e) => print!("{}", e.render()),
        None => println!("no held-out documents: nothing evaluated"),
    }
    println!("timings: read {read_s:.2} s, train {train_s:.2} s, evaluate {eval_s:.2} s, save {save_s:.2} s");
    println!("classifier written to {}", args.out.display());
    Ok(())
}

fn print_stats(what: &str, s: &LabelStats, min_prob: f32) {
    println!(
        "{what}: {} documents in {:.2} s ({:.0} docs/s), {} labelled, {} below --min-prob {min_prob}{}",
        s.documents,
        s.seconds,
        s.documents as f64 / s.seconds.max(1e-9),
        s.labelled,
        s.below_min_prob,
        if s.malformed > 0 { format!(", {} malformed copied through", s.malformed) } else { String::new() }
    );
    let topics: Vec<String> = s.per_topic.iter().map(|(t, n)| format!("{t} {n}")).collect();
    if !topics.is_empty() {
        println!("  topics: {}", topics.join(", "));
    }
    for e in &s.examples {
        println!("  e.g. {e}");
    }
}

fn label(args: LabelArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.min_prob) {
        bail!("--min-prob {}: expected a probability in [0, 1]", args.min_prob);
    }
    let (clf, _) = io::load(&args.model)?;
    let opts = LabelOptions { text_field: args.text_field.clone(), topic_field: args.topic_field.clone(), min_prob: args.min_prob, on_malformed: args.on_malformed };
    let progress = bar(!args.quiet && !args.json, None, "{spinner} {prefix}: {human_pos} docs | {per_sec} | {elapsed_precise}");
    progress.enable_steady_tick(std::time::Duration::from_millis(250));
    let mut results: Vec<(String, LabelStats)> = Vec::new();
    for dir in &args.shards {
        progress.set_prefix(dir.display().to_string());
        progress.reset();
        let stats = label_shards(&clf, dir, args.min_prob, &|n| progress.set_position(n))
            .with_context(|| format!("labelling {}", dir.display()))?;
        results.push((dir.display().to_string(), stats));
    }
    if !args.inputs.is_empty() {
        let out_dir = args.out.clone().context("--out is needed with --input")?;
        let mut outputs = std::collections::HashSet::new();
        let mut plan = Vec::new();
        for input in &args.inputs {
            let name = input.file_name().with_context(|| format!("{}: not a file", input.display()))?;
            let output = out_dir.join(name);
            if std::fs::canonicalize(input).ok() == std::fs::canonicalize(&output).ok() && output.exists() {
                bail!("{}: --out would overwrite the input; choose another folder", input.display());
            }
            if !outputs.insert(output.clone()) {
                bail!("{}: two inputs share this file name; label them into different --out folders", name.to_string_lossy());
            }
            plan.push((input, output));
        }
        for (input, output) in plan {
            progress.set_prefix(input.display().to_string());
            progress.reset();
            let stats = label_jsonl(&clf, input, &output, &opts, &|n| progress.set_position(n))?;
            results.push((format!("{} -> {}", input.display(), output.display()), stats));
        }
    }
    progress.finish_and_clear();
    if args.json {
        let all: Vec<serde_json::Value> = results.iter().map(|(w, s)| serde_json::json!({"what": w, "stats": s})).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for (what, s) in &results {
            print_stats(what, s, args.min_prob);
        }
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let (clf, _) = io::load(&args.model)?;
    let LabelledDataArgs { data, text_field, label_field } = &args.input;
    let (docs, _) = read_labelled(data, text_field, label_field, "--data")?;
    let refs: Vec<&LabelledDoc> = docs.iter().collect();
    let (started, cpu) = (Instant::now(), process_cpu_seconds());
    let evaluation = evaluate_classifier(&clf, &refs)?;
    let (predict_s, predict_cpu_s) = (started.elapsed().as_secs_f64(), process_cpu_seconds() - cpu);
    if args.json {
        let report = serde_json::json!({"evaluation": evaluation, "predict_seconds": predict_s, "predict_cpu_seconds": predict_cpu_s});
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", evaluation.render());
        println!("predicted {} documents in {:.3} s ({:.0} docs/s)", docs.len(), predict_s, docs.len() as f64 / predict_s.max(1e-9));
    }
    Ok(())
}
