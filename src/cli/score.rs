//! `cpt score`: per-document loss/perplexity written back into the corpus for the
//! curriculum, and MindLLM's data-entropy selection (`--select-entropy`).
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use cpt::eval::documents::{read_documents, Document, TextSplit};
use cpt::eval::entropy::select_by_entropy;
use cpt::eval::perplexity::score_documents;
use cpt::eval::requests::TextEncoder;
use cpt::eval::score::{score_prepared_source, summarize, write_scored_jsonl, ScoreFields};
use super::scoring_model::{ScoringModel, ScoringModelArgs};

#[derive(clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ScoringModelArgs,
    /// Corpus files: JSONL (`.jsonl`, `.json`) or text, optionally `.gz`/`.zst`.
    #[arg(long = "input", required_unless_present = "shards")]
    inputs: Vec<PathBuf>,
    /// Prepared sources (`cpt prepare` output folders, one per source): scores are written
    /// into their document index.
    #[arg(long = "shards")]
    shards: Vec<PathBuf>,
    /// Output folder: `<file name>.scored.jsonl` per input.
    #[arg(long, required_unless_present = "shards")]
    out: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Plain-text files: `file` (one document) or `blank-line` (paragraphs).
    #[arg(long, default_value = "file")]
    text_split: String,
    /// Field that receives the perplexity (the data config's `score_field`).
    #[arg(long, default_value = "score")]
    score_field: String,
    /// MindLLM data-entropy selection: cluster the documents' mean losses with k-means and
    /// write the band above the model's entropy to `selected.jsonl`.
    #[arg(long)]
    select_entropy: bool,
    #[arg(long, default_value_t = 8)]
    clusters: usize,
    /// Band of cluster centres to keep, in nats above the model's entropy: LOW,HIGH.
    #[arg(long, default_value = "1.0,1.5")]
    band: String,
    /// The model's own entropy in nats (default: mean predictive entropy on the inputs).
    #[arg(long)]
    model_entropy: Option<f64>,
}

fn windows_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("windows {bar:30} {pos}/{len} {per_sec} eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let text_split = match args.text_split.as_str() {
        "file" => TextSplit::File,
        "blank-line" => TextSplit::BlankLine,
        other => bail!("--text-split {other:?}: expected file or blank-line"),
    };
    let band = match args.band.split_once(',').map(|(a, b)| (a.trim().parse::<f64>(), b.trim().parse::<f64>())) {
        Some((Ok(lo), Ok(hi))) if lo <= hi => (lo, hi),
        _ => bail!("--band {:?}: expected LOW,HIGH in nats, e.g. 1.0,1.5", args.band),
    };
    if args.select_entropy && args.inputs.is_empty() {
        bail!("--select-entropy works on --input files (it writes the selected samples)");
    }
    let mut per_file: Vec<(PathBuf, Vec<Document>)> = Vec::new();
    for p in &args.inputs {
        per_file.push((p.clone(), read_documents(p, &args.text_field, text_split)?));
    }
    let ScoringModel { lm, tokenizer: tok, engine } = args.model.load()?;
    for dir in &args.shards {
        let bar = windows_bar();
        let scores = score_prepared_source(&lm, dir, tok.prefix_token(), usize::MAX, engine, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        let s = summarize(&scores);
        println!(
            "{}: {} documents, {} tokens, mean loss {:.4} (p10 {:.4}, median {:.4}, p90 {:.4}); scores written to its document index",
            dir.display(), s.documents, s.tokens, s.mean_loss, s.p10_loss, s.median_loss, s.p90_loss
        );
    }
    if args.inputs.is_empty() {
        return Ok(());
    }
    let out_dir = args.out.clone().context("--out is needed with --input")?;
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let fields = ScoreFields { score: args.score_field.clone(), text: args.text_field.clone() };

    let mut all_docs: Vec<Document> = Vec::new();
    let mut all_scores = Vec::new();
    for (path, docs) in per_file {
        let bar = windows_bar();
        let texts: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
        let scores = score_documents(&lm, &tok, &texts, usize::MAX, engine, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "input".into());
        let out = out_dir.join(format!("{}.scored.jsonl", name.trim_end_matches(".gz").trim_end_matches(".zst")));
        write_scored_jsonl(&out, &docs, &scores, &fields)?;
        let s = summarize(&scores);
        println!(
            "{}: {} documents, {} tokens, mean loss {:.4} (p10 {:.4}, median {:.4}, p90 {:.4}) -> {}",
            path.display(), s.documents, s.tokens, s.mean_loss, s.p10_loss, s.median_loss, s.p90_loss, out.display()
        );
        all_docs.extend(docs);
        all_scores.extend(scores);
    }

    if args.select_entropy {
        let data_entropy: Vec<f64> = all_scores.iter().map(|s| s.mean_loss()).collect();
        let model_entropy = args.model_entropy.unwrap_or_else(|| {
            let tokens: usize = all_scores.iter().map(|s| s.tokens).sum();
            all_scores.iter().map(|s| s.entropy).sum::<f64>() / tokens.max(1) as f64
        });
        let sel = select_by_entropy(&data_entropy, model_entropy, args.clusters, band);
        let chosen_docs: Vec<Document> = sel.selected.iter().map(|&i| all_docs[i].clone()).collect();
        let chosen_scores: Vec<_> = sel.selected.iter().map(|&i| all_scores[i].clone()).collect();
        write_scored_jsonl(&out_dir.join("selected.jsonl"), &chosen_docs, &chosen_scores, &fields)?;
        std::fs::write(out_dir.join("entropy.json"), serde_json::to_string_pretty(&serde_json::json!({
            "model_entropy": sel.model_entropy, "band": sel.band, "clusters": sel.clusters,
            "selected": sel.selected.len(), "documents": data_entropy.len(), "nearest_fallback": sel.nearest_fallback,
        }))? + "\n")?;
        println!("model entropy {:.4} nats; clusters (centre, size, above model):", sel.model_entropy);
        for c in &sel.clusters {
            println!("  {:8.4} {:6} {:+8.4}{}", c.centre, c.size, c.above_model, if c.selected { "  selected" } else { "" });
        }
        if sel.nearest_fallback {
            println!("warning: no cluster centre lies {:.2}..{:.2} nats above the model's entropy; took the nearest", band.0, band.1);
        }
        println!("selected {} of {} documents -> {}", sel.selected.len(), data_entropy.len(), out_dir.join("selected.jsonl").display());
    }
    Ok(())
}
