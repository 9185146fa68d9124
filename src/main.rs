//! The `cpt` binary: parses arguments and hands each subcommand to `cli::<name>::run`.
use clap::{Parser, Subcommand};

mod cli;

/// mimalloc instead of glibc malloc: a training step allocates and frees thousands of
/// activation-sized buffers, and glibc hands large ones back to the kernel on free (mmap /
/// trim), so every step paid for them again in page faults and zeroing (docs/bench_train.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same index in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process instead of purging it back to the kernel 10 ms after
/// a free (mimalloc's default): the next training step allocates the same sizes again, and
/// a purged page costs a page fault and a zeroing when it is touched again. The resident set
/// stays at the run's peak, which it reaches every step anyway.
fn configure_allocator() {
    // SAFETY: sets an integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Continual pre-training for Llama-family language models.
#[derive(Parser)]
#[command(name = "cpt", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a randomly initialised model in Hugging Face layout (with a tokenizer).
    Init(cli::init::InitArgs),
    /// Tokenize corpus sources into memory-mapped token shards (cached by a manifest).
    Prepare(cli::prepare::PrepareArgs),
    /// Inspect the data plan of a training config without training.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Continue pre-training a model as a YAML config describes.
    Train(cli::train::TrainArgs),
    /// Predict per-device memory of a training config for ZeRO 0/1/3 on N devices.
    Plan(cli::plan::PlanArgs),
    /// Score a checkpoint on multiple-choice benchmarks or perplexity sets.
    Eval(cli::eval::EvalArgs),
    /// Generate text with a model: one prompt streamed, or a JSONL file of prompts.
    Generate(cli::generate::GenerateArgs),
    /// Per-document loss / perplexity under a model, for curricula and data selection.
    Score(cli::score::ScoreArgs),
    /// Turn a metrics JSONL file into PNG/SVG charts.
    Plot(cli::plot::PlotArgs),
    /// Extend a tokenizer's vocabulary and resize the model to match.
    #[command(subcommand)]
    Vocab(cli::vocab::VocabCommand),
    /// LoRA adapters: merge one into its base model.
    #[command(subcommand)]
    Lora(cli::lora::LoraCommand),
    /// Run a grid of proxy training runs (mixture ratio x learning rate, sizes, budgets).
    Sweep(cli::sweep::SweepArgs),
    /// Fit mixing laws, the LR-ratio relation and compute laws to sweep results.
    Fit(cli::fit::FitArgs),
    /// Train a topic classifier and label documents by topic for topic mixing.
    #[command(subcommand)]
    Topics(cli::topics::TopicsCommand),
}

fn main() {
    configure_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(a) => cli::init::run(a),
        Command::Prepare(a) => cli::prepare::run(a),
        Command::Data(c) => cli::data::run(c),
        Command::Train(a) => cli::train::run(a),
        Command::Plan(a) => cli::plan::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Score(a) => cli::score::run(a),
        Command::Plot(a) => cli::plot::run(a),
        Command::Vocab(c) => cli::vocab::run(c),
        Command::Lora(c) => cli::lora::run(c),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::Fit(a) => cli::fit::run(a),
        Command::Topics(c) => cli::topics::run(c),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
