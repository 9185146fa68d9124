//! `cpt prepare`: sources -> token shards, one directory per source in the cache.
//! A reader thread streams records in batches; each batch is deduplicated, then tokenized
//! in parallel (rayon) and appended in order, so the shards are the same on any core count.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::{DataConfig, MalformedPolicy, SourceConfig};
use super::manifest::{source_dir, Decision, InputIdentity, ShardSpecialTokens, SourceManifest, StoredManifest, TokenSettings};
use super::shards::{DocLabels, ShardReader, ShardWriter, SourceSummary, TokenWidth};
use super::source::{read_file, resolve_files, Malformed, RawDoc, Record};
use crate::tokenizer::Tokenizer;

/// How many malformed-record examples a summary keeps.
const MAX_EXAMPLES: usize = 5;
/// A batch handed to the tokenizer: whichever limit comes first.
const BATCH_DOCS: usize = 4096;
const BATCH_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub cache_dir: PathBuf,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Rebuild every source even when its manifest matches.
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceReport {
    pub name: String,
    pub decision: Decision,
    pub dir: PathBuf,
    pub width: TokenWidth,
    pub summary: SourceSummary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareReport {
    pub cache_dir: PathBuf,
    pub tokenizer_hash: String,
    pub sources: Vec<SourceReport>,
}

/// Prepares every source of `config` (reusing those whose manifest still matches).
pub fn prepare(config: &DataConfig, tokenizer: &Tokenizer, opts: &PrepareOptions) -> Result<PrepareReport> {
    if config.add_eos && tokenizer.eos_id().is_none() {
        bail!("data.add_eos: tokenizer {} names no EOS token; set `data.eos_token`", tokenizer.path().display());
    }
    if config.add_bos && tokenizer.bos_id().is_none() {
        bail!("data.add_bos: tokenizer {} names no BOS token; set `data.bos_token`", tokenizer.path().display());
    }
    std::fs::create_dir_all(&opts.cache_dir).with_context(|| format!("creating cache dir {}", opts.cache_dir.display()))?;
    let mut reports = Vec::new();
    for (i, source) in config.sources.iter().enumerate() {
        let report = prepare_source(config, i, source, tokenizer, opts)
            .with_context(|| format!("preparing source `{}` (data.sources[{i}])", source.name))?;
        reports.push(report);
    }
    Ok(PrepareReport { cache_dir: opts.cache_dir.clone(), tokenizer_hash: tokenizer.content_hash().to_string(), sources: reports })
}

/// The manifest `config`'s source `index` should have with this tokenizer.
pub fn wanted_manifest(config: &DataConfig, index: usize, tokenizer: &Tokenizer) -> Result<(SourceManifest, Vec<PathBuf>)> {
    let source = &config.sources[index];
    let files = resolve_files(source, &format!("data.sources[{index}]"))?;
    let inputs = files.iter().map(|f| InputIdentity::of(f)).collect::<Result<Vec<_>>>()?;
    let settings = TokenSettings::new(source, config.add_bos, config.add_eos, config.dedup);
    let manifest = SourceManifest {
        version: super::manifest::MANIFEST_VERSION,
        source: source.name.clone(),
        tokenizer_hash: tokenizer.content_hash().to_string(),
        tokenizer_path: tokenizer.path().display().to_string(),
        special_tokens: ShardSpecialTokens::new(tokenizer, config.add_bos, config.add_eos),
        settings,
        inputs,
    };
    Ok((manifest, files))
}

fn prepare_source(config: &DataConfig, index: usize, source: &SourceConfig, tokenizer: &Tokenizer, opts: &PrepareOptions) -> Result<SourceReport> {
    let dir = source_dir(&opts.cache_dir, &source.name);
    let (wanted, files) = wanted_manifest(config, index, tokenizer)?;
    let existing = SourceManifest::read(&dir)?;
    let mut decision = SourceManifest::decide(existing.as_ref(), &wanted, config.on_tokenizer_change, &dir)?;
    if let Decision::Rebuild(why) = &decision {
        // Said before the work starts (training prints no prepare report).
        eprintln!("data.sources[{index}] `{}`: rebuilding the shards in {}: {why}", source.name, dir.display());
    }
    if decision == Decision::Reuse {
        match ShardReader::open(&dir) {
            Ok(reader) if !opts.force => {
                return Ok(SourceReport {
                    name: source.name.clone(),
                    decision,
                    dir,
                    width: reader.meta().width,
                    summary: reader.meta().summary.clone(),
                });
            }
            Ok(_) => decision = Decision::Rebuild("--force".into()),
            Err(e) => decision = Decision::Rebuild(format!("the shards are unreadable: {e:#}")),
        }
    }
    let tmp = opts.cache_dir.join(format!(".{}.tmp-{}", source.name, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let built = build_shards(config, source, &files, tokenizer, &tmp, opts.progress).and_then(|meta| {
        wanted.write(&tmp)?;
        Ok(meta)
    });
    let meta = match built {
        Ok(meta) => meta,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // Swap the finished directory in; the old one (if any) goes only once the new is whole.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing old shards {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    Ok(SourceReport { name: source.name.clone(), decision, dir, width: meta.width, summary: meta.summary })
}

/// A batch of records from the reader thread, in file order.
type Batch = Vec<Record>;

fn build_shards(
    config: &DataConfig,
    source: &SourceConfig,
    files: &[PathBuf],
    tokenizer: &Tokenizer,
    out_dir: &Path,
    progress: bool,
) -> Result<super::shards::ShardMeta> {
    let started = Instant::now();
    let mut writer = ShardWriter::create(out_dir, tokenizer.vocab_size())?;
    let mut summary = SourceSummary { files: files.len(), ..Default::default() };
    let mut seen: HashSet<u128> = HashSet::new();
    let bar = progress_bar(progress, &source.name);
    let bos = tokenizer.bos_id().filter(|_| config.add_bos);
    let eos = tokenizer.eos_id().filter(|_| config.add_eos);

    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = sync_channel::<Result<Batch>>(2);
        let reader = scope.spawn(move || {
            let mut batch: Batch = Vec::new();
            let mut batch_bytes = 0usize;
            for file in files {
                let records = match read_file(file, source) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                for record in records {
                    match record {
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                        Ok(r) => {
                            batch_bytes += r.as_ref().map(|d| d.text.len()).unwrap_or(0);
                            batch.push(r);
                        }
                    }
                    if batch.len() >= BATCH_DOCS || batch_bytes >= BATCH_BYTES {
                        if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                            return; // the consumer stopped on an error
                        }
                        batch_bytes = 0;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(Ok(batch));
            }
        });
        for batch in rx {
            let batch = batch?;
            let mut docs: Vec<(RawDoc, u128)> = Vec::with_capacity(batch.len());
            for record in batch {
                match record {
                    Ok(doc) => {
                        summary.bytes += doc.text.len() as u64;
                        let key = xxhash_rust::xxh3::xxh3_128(doc.text.as_bytes());
                        if config.dedup && !seen.insert(key) {
                            summary.duplicates += 1;
                            continue;
                        }
                        docs.push((doc, key));
                    }
                    Err(bad) => note_malformed(&mut summary, bad, config.on_malformed)?,
                }
            }
            let encoded: Vec<Result<Vec<u32>>> = docs
                .par_iter()
                .map(|(doc, _)| {
                    let mut ids = Vec::with_capacity(doc.text.len() / 3 + 2);
                    ids.extend(bos);
                    ids.extend(tokenizer.encode(&doc.text, false).with_context(|| doc.location.clone())?);
                    ids.extend(eos);
                    Ok(ids)
                })
                .collect();
            for ((doc, key), ids) in docs.iter().zip(encoded) {
                let ids = ids?;
                if ids.is_empty() {
                    note_malformed(
                        &mut summary,
                        Malformed {
                            reason: super::source::MalformedReason::EmptyText,
                            location: doc.location.clone(),
                            detail: "no tokens".into(),
                        },
                        config.on_malformed,
                    )?;
                    continue;
                }
                let labels = DocLabels { lang: doc.lang.as_deref(), topic: doc.topic.as_deref(), id: doc.id.as_deref(), score: doc.score };
                writer.push(&ids, &labels, *key as u64)
                    .with_context(|| doc.location.clone())?;
                summary.documents += 1;
                summary.tokens += ids.len() as u64;
            }
            update_bar(&bar, &summary, started);
        }
        reader.join().map_err(|_| anyhow!("the reader thread panicked"))?;
        Ok(())
    })?;
    summary.seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    writer.finish(summary)
}

fn note_malformed(summary: &mut SourceSummary, bad: Malformed, policy: MalformedPolicy) -> Result<()> {
    if policy == MalformedPolicy::Fail {
        bail!("malformed record at {bad} (data.on_malformed: fail)");
    }
    *summary.skipped.entry(bad.reason.to_string()).or_default() += 1;
    if summary.examples.len() < MAX_EXAMPLES {
        summary.examples.push(bad.to_string());
    }
    Ok(())
}

fn progress_bar(enabled: bool, name: &str) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_prefix(name.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

fn update_bar(bar: &indicatif::ProgressBar, s: &SourceSummary, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    bar.set_message(format!(
        "{} docs, {} tokens, {:.1} MB | {:.1} MB/s, {:.0} docs/s",
        s.documents,
        s.tokens,
        s.bytes as f64 / 1e6,
        s.bytes as f64 / 1e6 / secs,
        s.documents as f64 / secs
    ));
}

/// Human-readable per-source summary lines.
pub fn format_report(report: &PrepareReport) -> String {
    let mut out = String::new();
    for s in &report.sources {
        let action = match &s.decision {
            Decision::Reuse => "reused".to_string(),
            Decision::Build => "built".to_string(),
            Decision::Rebuild(why) => format!("rebuilt ({why})"),
        };
        let m = &s.summary;
        let rate = if m.seconds > 0.0 && s.decision != Decision::Reuse {
            format!(", {:.1} MB/s", m.bytes as f64 / 1e6 / m.seconds)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{}: {action}: {} files, {} documents, {} tokens ({:?}), {:.1} MB text, {} duplicates dropped{rate}\n",
            s.name, m.files, m.documents, m.tokens, s.width, m.bytes as f64 / 1e6, m.duplicates
        ));
        for (reason, n) in &m.skipped {
            out.push_str(&format!("  skipped {n}: {reason}\n"));
        }
        for ex in &m.examples {
            out.push_str(&format!("  e.g. {ex}\n"));
        }
        if m.documents == 0 {
            out.push_str("  warning: no usable documents\n");
        }
    }
    out
}

/// The prepared shards of every configured source, opened for reading, in `data.sources`
/// order.
pub struct PreparedData {
    readers: Vec<ShardReader>,
    tokenizer_hash: String,
}

impl PreparedData {
    /// Opens the cache. With `tokenizer`, shards made with another tokenizer or other special
    /// tokens are an error naming both.
    pub fn open(cache_dir: &Path, config: &DataConfig, tokenizer: Option<&Tokenizer>) -> Result<Self> {
        let mut readers = Vec::new();
        let mut hash = String::new();
        for (i, source) in config.sources.iter().enumerate() {
            let dir = source_dir(cache_dir, &source.name);
            let manifest = match SourceManifest::read(&dir)? {
                Some(StoredManifest::Current(m)) => m,
                None => bail!("data.sources[{i}] `{}`: not prepared in {} (run `cpt prepare --config ...`)", source.name, cache_dir.display()),
                Some(StoredManifest::Outdated(why) | StoredManifest::Unreadable(why)) => {
                    bail!("data.sources[{i}] `{}`: the shards in {} cannot be used: {why}; run `cpt prepare` again", source.name, dir.display())
                }
            };
            if let Some(tokenizer) = tokenizer {
                let want = tokenizer.content_hash();
                if manifest.tokenizer_hash != want {
                    bail!(
                        "data.sources[{i}] `{}`: the shards in {} were made with tokenizer {} (hash {}..), not the model's (hash {}..); run `cpt prepare` again",
                        source.name,
                        dir.display(),
                        manifest.tokenizer_path,
                        &manifest.tokenizer_hash[..manifest.tokenizer_hash.len().min(12)],
                        &want[..want.len().min(12)]
                    );
                }
                let special = ShardSpecialTokens::new(tokenizer, config.add_bos, config.add_eos);
                if !manifest.special_tokens.same_as(&special) {
                    bail!(
                        "data.sources[{i}] `{}`: the shards in {} hold other special tokens than the configured tokenizer gives ({}); run `cpt prepare` again",
                        source.name,
                        dir.display(),
                        special.changes_from(&manifest.special_tokens)
                    );
                }
            }
            if i > 0 && manifest.tokenizer_hash != hash {
                bail!("data.sources[{i}] `{}`: prepared with a different tokenizer than `{}`; run `cpt prepare` again", source.name, config.sources[0].name);
            }
            hash = manifest.tokenizer_hash.clone();
            readers.push(ShardReader::open(&dir).with_context(|| format!("data.sources[{i}] `{}`", source.name))?);
        }
        Ok(PreparedData { readers, tokenizer_hash: hash })
    }

    pub fn len(&self) -> usize {
        self.readers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.readers.is_empty()
    }
    pub fn source(&self, i: usize) -> &ShardReader {
        &self.readers[i]
    }
    pub fn tokenizer_hash(&self) -> &str {
        &self.tokenizer_hash
    }
}
