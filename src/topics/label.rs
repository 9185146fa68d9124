//! Labelling with a trained classifier: JSONL files in and out (the record's fields kept,
//! `topic` and `topic_prob` set), or prepared shards, whose document index gets each
//! document's topic without re-tokenising: the texts are read again from the inputs listed
//! in the source's manifest and matched to documents by their content hash.
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};

use super::model::{Classifier, PredictBuf};
use crate::data::config::{SourceConfig, SourceFormat};
use crate::data::manifest::{InputIdentity, SourceManifest, StoredManifest};
use crate::data::shards::{write_topics, ShardReader};
use crate::data::source::{format_from_name, open_decompressed, read_file, read_line_bytes, CompressedWriter};
use crate::util::atomic::AtomicFile;

/// Lines (JSONL) or documents (shards) classified per parallel batch.
const BATCH: usize = 8192;
/// Malformed-record examples kept for the summary.
const MAX_EXAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OnMalformed {
    /// Stop at the first record without a usable text, naming its file and line.
    Fail,
    /// Copy such records through unchanged and count them.
    Skip,
}

#[derive(Debug, Clone)]
pub struct LabelOptions {
    pub text_field: String,
    /// Receives the topic (`null` below `min_prob`); `<topic_field>_prob` its probability.
    pub topic_field: String,
    pub min_prob: f32,
    pub on_malformed: OnMalformed,
}

impl LabelOptions {
    pub fn prob_field(&self) -> String {
        format!("{}_prob", self.topic_field)
    }
}

/// What one labelling pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LabelStats {
    pub documents: u64,
    /// Documents given a topic (probability at least `min_prob`).
    pub labelled: u64,
    pub below_min_prob: u64,
    /// JSONL records without a usable text, copied through (`OnMalformed::Skip`).
    pub malformed: u64,
    pub examples: Vec<String>,
    pub per_topic: BTreeMap<String, u64>,
    pub seconds: f64,
}

impl LabelStats {
    fn count(&mut self, clf: &Classifier, label: Option<usize>) {
        self.documents += 1;
        match label {
            Some(l) => {
                self.labelled += 1;
                *self.per_topic.entry(clf.labels[l].clone()).or_default() += 1;
            }
            None => self.below_min_prob += 1,
        }
    }
}

/// The topic of one text: `(Some(label) or None below min_prob, probability of the best label)`.
fn classify(clf: &Classifier, text: &str, min_prob: f32, buf: &mut PredictBuf) -> (Option<usize>, f32) {
    match clf.predict(text, buf) {
        Some(p) if p.prob >= min_prob => (Some(p.label), p.prob),
        Some(p) => (None, p.prob),
        None => (None, 0.0),
    }
}

enum Line {
    Labelled { json: String, label: Option<usize> },
    /// Blank lines pass through.
    Blank,
    Malformed(String),
}

fn label_line(clf: &Classifier, raw: &[u8], opts: &LabelOptions, prob_field: &str, buf: &mut PredictBuf) -> Line {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Line::Blank;
    }
    let text = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(e) => return Line::Malformed(format!("invalid UTF-8 ({e})")),
    };
    let mut record: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Line::Malformed("not a JSON object".into()),
        Err(e) => return Line::Malformed(format!("bad JSON ({e})")),
    };
    let field = &opts.text_field;
    let (label, prob) = match record.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => classify(clf, s, opts.min_prob, buf),
        Some(Value::String(_)) => return Line::Malformed(format!("empty text (`{field}` is empty)")),
        None | Some(Value::Null) => return Line::Malformed(format!("missing text (no `{field}` field)")),
        Some(_) => return Line::Malformed(format!("`{field}` is not a string")),
    };
    record.insert(opts.topic_field.clone(), label.map(|l| Value::String(clf.labels[l].clone())).unwrap_or(Value::Null));
    record.insert(prob_field.to_string(), serde_json::json!((prob as f64 * 1e6).round() / 1e6));
    match serde_json::to_string(&Value::Object(record)) {
        Ok(json) => Line::Labelled { json, label },
        Err(e) => Line::Malformed(format!("cannot write the record back ({e})")),
    }
}

/// Labels every record of the JSONL file `input` into `output` (compressed as its name
/// says). The output appears only once complete. `progress(documents)` after each batch.
pub fn label_jsonl(clf: &Classifier, input: &Path, output: &Path, opts: &LabelOptions, progress: &dyn Fn(u64)) -> Result<LabelStats> {
    if format_from_name(input) != Some(SourceFormat::Jsonl) {
        bail!(
            "{}: `cpt topics label --input` reads JSONL (.jsonl/.json/.ndjson, optionally .gz/.zst); label other formats after `cpt prepare` with --shards",
            input.display()
        );
    }
    let started = Instant::now();
    let mut reader = open_decompressed(input)?;
    let target = AtomicFile::create(output)?;
    let file = target.file().try_clone().with_context(|| format!("opening {}", output.display()))?;
    let mut writer = CompressedWriter::new(file, output)?;
    let prob_field = opts.prob_field();
    let mut stats = LabelStats::default();
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    let mut done = false;
    while !done {
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        while batch.len() < BATCH {
            match read_line_bytes(&mut *reader, &mut buf, input)? {
                Some(()) => batch.push(std::mem::take(&mut buf)),
                None => {
                    done = true;
                    break;
                }
            }
        }
        let lines: Vec<Line> = batch.par_iter().map_init(PredictBuf::default, |pb, raw| label_line(clf, raw, opts, &prob_field, pb)).collect();
        for (raw, line) in batch.iter().zip(lines) {
            line_no += 1;
            match line {
                Line::Labelled { json, label } => {
                    writer.write_all(json.as_bytes())?;
                    stats.count(clf, label);
                }
                Line::Blank => writer.write_all(raw)?,
                Line::Malformed(why) => {
                    let at = format!("{}:{line_no}: {why}", input.display());
                    if opts.on_malformed == OnMalformed::Fail {
                        bail!("{at} (--on-malformed skip copies such records through unlabelled)");
                    }
                    stats.malformed += 1;
                    if stats.examples.len() < MAX_EXAMPLES {
                        stats.examples.push(at);
                    }
                    writer.write_all(raw)?;
                }
            }
            writer.write_all(b"\n")?;
        }
        progress(stats.documents);
    }
    writer.finish().with_context(|| format!("writing {}", output.display()))?;
    target.commit()?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// The source settings a prepared source was read with, from its manifest.
fn source_of(manifest: &SourceManifest, dir: &Path) -> Result<SourceConfig> {
    let settings = &manifest.settings;
    let mut source = SourceConfig::from_paths(&manifest.source, manifest.inputs.iter().map(|i| i.path.clone()).collect());
    // The manifest stores these settings by their config names (`jsonl`, `blank_line`).
    let named = |name: &str| serde_json::Value::String(name.to_string());
    if let Some(f) = &settings.format {
        source.format = Some(serde_json::from_value(named(f)).with_context(|| format!("{}: unknown format `{f}` in its manifest", dir.display()))?);
    }
    source.text_mode = serde_json::from_value(named(&settings.text_mode))
        .with_context(|| format!("{}: unknown text_mode `{}` in its manifest", dir.display(), settings.text_mode))?;
    source.text_field = settings.text_field.clone();
    source.lang_field = settings.lang_field.clone();
    source.topic_field = settings.topic_field.clone();
    source.id_field = settings.id_field.clone();
    source.score_field = settings.score_field.clone();
    source.language = settings.language.clone();
    Ok(source)
}

/// Labels every document of a prepared source (a `cpt prepare` output folder) and writes
/// the topics into its document index, where the sampler's topic mixing reads them.
/// Documents below `min_prob` get no topic. `progress(documents)` after each batch.
pub fn label_shards(clf: &Classifier, dir: &Path, min_prob: f32, progress: &dyn Fn(u64)) -> Result<LabelStats> {
    let started = Instant::now();
    let reader = ShardReader::open(dir)?;
    let manifest = match SourceManifest::read(dir)? {
        Some(StoredManifest::Current(m)) => m,
        Some(StoredManifest::Outdated(why)) => {
            bail!("{}: these shards were prepared by an older cpt ({why}); run `cpt prepare` again, then label", dir.display())
        }
        Some(StoredManifest::Unreadable(e)) => bail!("{}: manifest.json is unreadable ({e}); run `cpt prepare` again", dir.display()),
        None => bail!("{}: no manifest.json; is it a `cpt prepare` output folder?", dir.display()),
    };
    for recorded in &manifest.inputs {
        let path = Path::new(&recorded.path);
        let now = InputIdentity::of(path).with_context(|| {
            format!("{}: input {} of this source is missing (paths are relative to where `cpt prepare` ran)", dir.display(), recorded.path)
        })?;
        if &now != recorded {
            bail!("{}: input {} changed since `cpt prepare`; prepare again, then label", dir.display(), recorded.path);
        }
    }
    // Documents by content hash, as `cpt prepare` keys them.
    let mut by_hash: HashMap<u64, Vec<u32>> = HashMap::new();
    for i in 0..reader.num_docs() {
        by_hash.entry(reader.doc(i).hash).or_default().push(i as u32);
    }
    let num_docs = reader.num_docs();
    drop(reader);
    let source = source_of(&manifest, dir)?;
    let mut topics: Vec<Option<Option<u16>>> = vec![None; num_docs];
    let mut stats = LabelStats::default();
    let mut pending: Vec<(u64, String)> = Vec::new();
    let flush = |pending: &mut Vec<(u64, String)>, topics: &mut Vec<Option<Option<u16>>>, stats: &mut LabelStats| {
        let labels: Vec<Option<usize>> =
            pending.par_iter().map_init(PredictBuf::default, |pb, (_, text)| classify(clf, text, min_prob, pb).0).collect();
        for ((hash, _), label) in pending.drain(..).zip(labels) {
            for &d in &by_hash[&hash] {
                topics[d as usize] = Some(label.map(|l| l as u16));
                stats.count(clf, label);
            }
        }
        progress(stats.documents);
    };
    let mut queued: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for recorded in &manifest.inputs {
        for record in read_file(Path::new(&recorded.path), &source)? {
            let Ok(doc) = record? else { continue }; // malformed records were never prepared
            let hash = xxhash_rust::xxh3::xxh3_128(doc.text.as_bytes()) as u64;
            if by_hash.contains_key(&hash) && queued.insert(hash) {
                pending.push((hash, doc.text));
                if pending.len() >= BATCH {
                    flush(&mut pending, &mut topics, &mut stats);
                }
            }
        }
    }
    flush(&mut pending, &mut topics, &mut stats);
    let topics: Vec<Option<u16>> = topics
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.with_context(|| format!("{}: document {i} is not in the source's inputs any more; prepare again, then label", dir.display())))
        .collect::<Result<_>>()?;
    if clf.labels.len() > u16::MAX as usize {
        bail!("{} topics do not fit the shard index", clf.labels.len());
    }
    write_topics(dir, &clf.labels, &topics)?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}
