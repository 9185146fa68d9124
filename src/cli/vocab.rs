//! `cpt vocab extend` and `cpt vocab stats`.
use std::path::{Path, PathBuf};

use anyhow::Result;
use cpt::tokenizer::Tokenizer;
use cpt::vocab::{corpus, extend, resize::InitMethod, stats};

#[derive(clap::Subcommand)]
pub enum VocabCommand {
    /// Learn new tokens from a corpus, add them to tokenizer.json (existing ids unchanged)
    /// and write the model with embed_tokens / lm_head grown to match.
    Extend(ExtendArgs),
    /// Characters and bytes per token, per language, for one tokenizer or two side by side.
    Stats(StatsArgs),
}

#[derive(clap::Args)]
pub struct ExtendArgs {
    /// Hugging Face model directory (config.json, tokenizer.json, safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Corpus files, directories or glob patterns (.jsonl with `text`, or .txt; .gz/.zst).
    #[arg(long, num_args = 1.., required = true)]
    corpus: Vec<PathBuf>,
    /// Number of tokens to add.
    #[arg(long)]
    add: usize,
    /// Output model directory (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// How new embedding rows start.
    #[arg(long, value_enum, default_value = "piece-mean")]
    init: InitMethod,
    /// Pad the vocabulary size (embedding rows) up to a multiple of this.
    #[arg(long, default_value_t = 64)]
    pad_to_multiple: usize,
    /// A new token must occur at least this many times in the corpus.
    #[arg(long, default_value_t = 2)]
    min_count: u64,
    /// How many of the added tokens to list.
    #[arg(long, default_value_t = 20)]
    show: usize,
}

#[derive(clap::Args)]
pub struct StatsArgs {
    /// tokenizer.json, or a directory holding one.
    #[arg(long)]
    tokenizer: PathBuf,
    /// A second tokenizer to compare with (e.g. the extended one).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Corpus files, directories or glob patterns.
    #[arg(long, num_args = 1.., required = true)]
    corpus: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(command: VocabCommand) -> Result<()> {
    match command {
        VocabCommand::Extend(a) => run_extend(a),
        VocabCommand::Stats(a) => run_stats(a),
    }
}

fn run_extend(a: ExtendArgs) -> Result<()> {
    let report = extend::extend(&extend::ExtendOptions {
        model: a.model,
        corpus: a.corpus,
        add: a.add,
        min_count: a.min_count,
        init: a.init,
        pad_to_multiple: a.pad_to_multiple,
        out: a.out.clone(),
    })?;
    println!(
        "added {} tokens ({:?}): ids {}..{}; vocab_size {} -> {} ({} embeddings, init {:?})",
        report.tokens.len(),
        report.flavor,
        report.old_id_space,
        report.new_id_space,
        report.old_vocab_size,
        report.new_vocab_size,
        if report.tied_embeddings { "tied" } else { "untied" },
        report.init,
    );
    for t in report.tokens.iter().take(a.show) {
        println!(
            "  {:>7}  {:<16} occurs {:>7}  saves {:>7} tokens  (was {} pieces)",
            t.id,
            format!("{:?}", t.learned.text),
            t.learned.count,
            t.learned.saved,
            t.learned.old_pieces.len()
        );
    }
    for f in &report.skipped_files {
        println!("not copied: {f} (cannot hold the new tokens; tokenizer.json is the tokenizer)");
    }
    println!("wrote {}", a.out.display());
    Ok(())
}

fn load_tokenizer(path: &Path) -> Result<(String, Tokenizer)> {
    let tokenizer = Tokenizer::load(path, &Default::default())?;
    // Name it by its directory when given one, else by the file.
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "tokenizer".into());
    Ok((name, tokenizer))
}

fn run_stats(a: StatsArgs) -> Result<()> {
    let mut names = Vec::new();
    let mut tokenizers = Vec::new();
    for path in std::iter::once(&a.tokenizer).chain(a.compare.as_ref()) {
        let (name, t) = load_tokenizer(path)?;
        names.push(name);
        tokenizers.push(t);
    }
    if names.len() == 2 && names[0] == names[1] {
        names = vec!["before".into(), "after".into()];
    }
    let files = corpus::expand_paths(&a.corpus)?;
    let docs = corpus::read_documents(&files)?;
    let refs: Vec<&Tokenizer> = tokenizers.iter().collect();
    let measured = stats::measure(&refs, &docs)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"tokenizers": names, "languages": measured}))?);
    } else {
        print!("{}", stats::format_table(&names, &measured));
    }
    Ok(())
}
