//! Token shards of one prepared source, memory-mapped:
//! - `tokens.bin`: every document's tokens back to back, little-endian u16 (when the
//!   vocabulary fits) or u32;
//! - `docs.bin`: one 32-byte record per document (token offset, length, language, topic,
//!   score, content hash);
//! - `meta.json`: token width, counts, the language/topic label tables and the summary.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

pub const SHARD_FORMAT_VERSION: u32 = 1;
pub const TOKENS_FILE: &str = "tokens.bin";
pub const DOCS_FILE: &str = "docs.bin";
pub const META_FILE: &str = "meta.json";
/// One JSON string (or `null`) per line: each document's id from the corpus.
pub const IDS_FILE: &str = "ids.jsonl";
const DOC_RECORD_BYTES: usize = 32;
/// Label id meaning "no label".
pub const NO_LABEL: u16 = u16::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    /// u16 when every id (< vocab_size) fits.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= u16::MAX as usize + 1 {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }
}

/// Per-document metadata, as stored in `docs.bin`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DocMeta {
    /// Offset of the first token in `tokens.bin`, in tokens.
    pub start: u64,
    /// Tokens, BOS/EOS included.
    pub len: u32,
    /// Index into `ShardMeta::langs`, or `NO_LABEL`.
    pub lang: u16,
    /// Index into `ShardMeta::topics`, or `NO_LABEL`.
    pub topic: u16,
    /// NaN when the document has no score.
    pub score: f32,
    /// xxh3-64 of the text: the stable key of the validation split.
    pub hash: u64,
}

impl DocMeta {
    fn encode(&self) -> [u8; DOC_RECORD_BYTES] {
        let mut b = [0u8; DOC_RECORD_BYTES];
        b[0..8].copy_from_slice(&self.start.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.lang.to_le_bytes());
        b[14..16].copy_from_slice(&self.topic.to_le_bytes());
        b[16..20].copy_from_slice(&self.score.to_le_bytes());
        b[24..32].copy_from_slice(&self.hash.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or([0; 2]));
        DocMeta {
            start: u64_at(0),
            len: u32_at(8),
            lang: u16_at(12),
            topic: u16_at(14),
            score: f32::from_bits(u32_at(16)),
            hash: u64_at(24),
        }
    }
}

/// What a source's documents were skipped for, with examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub files: usize,
    pub documents: u64,
    pub tokens: u64,
    /// Bytes of input read (after decompression: text as read).
    pub bytes: u64,
    pub duplicates: u64,
    /// Malformed records by reason.
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// A few `file:line: reason (detail)` examples.
    pub examples: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub format_version: u32,
    pub width: TokenWidth,
    pub num_docs: u64,
    pub num_tokens: u64,
    pub vocab_size: usize,
    pub langs: Vec<String>,
    pub topics: Vec<String>,
    /// How many documents carry a score.
    pub scored_docs: u64,
    pub summary: SourceSummary,
}

/// The labels a document carries into the shards.
#[derive(Debug, Clone, Copy, Default)]
pub struct DocLabels<'a> {
    pub lang: Option<&'a str>,
    pub topic: Option<&'a str>,
    pub id: Option<&'a str>,
    pub score: Option<f64>,
}

/// Appends documents to a shard directory being built.
pub struct ShardWriter {
    dir: PathBuf,
    width: TokenWidth,
    vocab_size: usize,
    tokens: BufWriter<File>,
    docs: BufWriter<File>,
    ids: BufWriter<File>,
    num_docs: u64,
    num_tokens: u64,
    scored_docs: u64,
    langs: Labels,
    topics: Labels,
    scratch: Vec<u8>,
}

#[derive(Default)]
struct Labels {
    names: Vec<String>,
    index: std::collections::HashMap<String, u16>,
}

impl Labels {
    fn id(&mut self, name: Option<&str>, what: &str) -> Result<u16> {
        let Some(name) = name else { return Ok(NO_LABEL) };
        if let Some(&i) = self.index.get(name) {
            return Ok(i);
        }
        if self.names.len() >= NO_LABEL as usize {
            bail!("more than {} distinct {what} labels in one source", NO_LABEL);
        }
        let i = self.names.len() as u16;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        Ok(i)
    }
}

impl ShardWriter {
    pub fn create(dir: &Path, vocab_size: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |name: &str| -> Result<BufWriter<File>> {
            let p = dir.join(name);
            Ok(BufWriter::with_capacity(1 << 20, File::create(&p).with_context(|| format!("creating {}", p.display()))?))
        };
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            width: TokenWidth::for_vocab(vocab_size),
            vocab_size,
            tokens: open(TOKENS_FILE)?,
            docs: open(DOCS_FILE)?,
            ids: open(IDS_FILE)?,
            num_docs: 0,
            num_tokens: 0,
            scored_docs: 0,
            langs: Labels::default(),
            topics: Labels::default(),
            scratch: Vec::new(),
        })
    }

    /// Writes one document's tokens (BOS/EOS already added) and its metadata.
    pub fn push(&mut self, ids: &[u32], labels: &DocLabels, hash: u64) -> Result<()> {
        let DocLabels { lang, topic, id, score } = *labels;
        if ids.is_empty() {
            bail!("internal: empty document");
        }
        let len = u32::try_from(ids.len()).context("a document longer than 4G tokens")?;
        self.scratch.clear();
        match self.width {
            TokenWidth::U16 => {
                for &t in ids {
                    self.scratch.extend_from_slice(&(t as u16).to_le_bytes());
                }
            }
            TokenWidth::U32 => {
                for &t in ids {
                    self.scratch.extend_from_slice(&t.to_le_bytes());
                }
            }
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.vocab_size) {
            bail!("token id {bad} is outside the tokenizer's vocabulary ({})", self.vocab_size);
        }
        self.tokens.write_all(&self.scratch).context("writing tokens")?;
        let meta = DocMeta {
            start: self.num_tokens,
            len,
            lang: self.langs.id(lang, "language")?,
            topic: self.topics.id(topic, "topic")?,
            score: score.map(|s| s as f32).unwrap_or(f32::NAN),
            hash,
        };
        self.docs.write_all(&meta.encode()).context("writing the document index")?;
        serde_json::to_writer(&mut self.ids, &id).context("writing document ids")?;
        self.ids.write_all(b"\n").context("writing document ids")?;
        self.num_docs += 1;
        self.num_tokens += ids.len() as u64;
        if score.is_some() {
            self.scored_docs += 1;
        }
        Ok(())
    }

    pub fn num_docs(&self) -> u64 {
        self.num_docs
    }

    /// Flushes the files and writes `meta.json`.
    pub fn finish(mut self, summary: SourceSummary) -> Result<ShardMeta> {
        self.tokens.flush().context("writing tokens")?;
        self.docs.flush().context("writing the document index")?;
        self.ids.flush().context("writing document ids")?;
        let meta = ShardMeta {
            format_version: SHARD_FORMAT_VERSION,
            width: self.width,
            num_docs: self.num_docs,
            num_tokens: self.num_tokens,
            vocab_size: self.vocab_size,
            langs: std::mem::take(&mut self.langs.names),
            topics: std::mem::take(&mut self.topics.names),
            scored_docs: self.scored_docs,
            summary,
        };
        let path = self.dir.join(META_FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(&meta)?).with_context(|| format!("writing {}", path.display()))?;
        Ok(meta)
    }
}

/// A prepared source opened for reading.
pub struct ShardReader {
    dir: PathBuf,
    meta: ShardMeta,
    tokens: Option<Mmap>,
    docs: Option<Mmap>,
}

/// A run of tokens borrowed from the map.
pub enum TokenSlice<'a> {
    U16(&'a [u16]),
    U32(&'a [u32]),
}

impl ShardReader {
    pub fn open(dir: &Path) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&meta_path)
            .with_context(|| format!("reading {} (run `cpt prepare` first)", meta_path.display()))?;
        let meta: ShardMeta =
            serde_json::from_str(&text).with_context(|| format!("{}: not a shard description", meta_path.display()))?;
        if meta.format_version != SHARD_FORMAT_VERSION {
            bail!("{}: shard format {} (this cpt reads {}); run `cpt prepare` again", meta_path.display(), meta.format_version, SHARD_FORMAT_VERSION);
        }
        if cfg!(target_endian = "big") {
            bail!("token shards are little-endian; this machine is big-endian");
        }
        let map = |name: &str, expected: u64| -> Result<Option<Mmap>> {
            let p = dir.join(name);
            let file = File::open(&p).with_context(|| format!("opening {}", p.display()))?;
            let len = file.metadata().with_context(|| format!("reading {}", p.display()))?.len();
            if len != expected {
                bail!("{}: {} bytes where {} were expected (truncated or stale shards; run `cpt prepare` again)", p.display(), len, expected);
            }
            if len == 0 {
                return Ok(None);
            }
            // SAFETY: the shard files are written once by `cpt prepare` and then only read;
            // mapping a file that another process truncates is the usual mmap caveat.
            let m = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", p.display()))?;
            Ok(Some(m))
        };
        let tokens = map(TOKENS_FILE, meta.num_tokens * meta.width.bytes() as u64)?;
        let docs = map(DOCS_FILE, meta.num_docs * DOC_RECORD_BYTES as u64)?;
        let reader = ShardReader { dir: dir.to_path_buf(), meta, tokens, docs };
        reader.check_index()?;
        Ok(reader)
    }

    /// Documents must tile `tokens.bin` exactly; anything else is a damaged index.
    fn check_index(&self) -> Result<()> {
        let mut next = 0u64;
        for i in 0..self.num_docs() {
            let d = self.doc(i);
            if d.start != next || d.len == 0 {
                bail!("{}: document {i} is damaged (offset {}, length {}); run `cpt prepare` again", self.dir.join(DOCS_FILE).display(), d.start, d.len);
            }
            let unknown = |id: u16, table: &[String]| id != NO_LABEL && id as usize >= table.len();
            if unknown(d.topic, &self.meta.topics) || unknown(d.lang, &self.meta.langs) {
                bail!("{}: document {i} has a label outside the tables of meta.json; run `cpt prepare` again", self.dir.join(DOCS_FILE).display());
            }
            next += d.len as u64;
        }
        if next != self.meta.num_tokens {
            bail!("{}: documents cover {next} tokens, meta.json says {}; run `cpt prepare` again", self.dir.join(DOCS_FILE).display(), self.meta.num_tokens);
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn meta(&self) -> &ShardMeta {
        &self.meta
    }
    pub fn num_docs(&self) -> usize {
        self.meta.num_docs as usize
    }
    pub fn num_tokens(&self) -> u64 {
        self.meta.num_tokens
    }

    pub fn doc(&self, i: usize) -> DocMeta {
        let docs = self.docs.as_deref().unwrap_or(&[]);
        DocMeta::decode(&docs[i * DOC_RECORD_BYTES..(i + 1) * DOC_RECORD_BYTES])
    }

    pub fn lang_name(&self, id: u16) -> Option<&str> {
        self.meta.langs.get(id as usize).map(String::as_str)
    }
    pub fn topic_name(&self, id: u16) -> Option<&str> {
        self.meta.topics.get(id as usize).map(String::as_str)
    }

    /// Tokens `[start, start + len)` of the whole shard.
    pub fn tokens(&self, start: u64, len: usize) -> TokenSlice<'_> {
        let bytes = self.tokens.as_deref().unwrap_or(&[]);
        let w = self.meta.width.bytes();
        let from = start as usize * w;
        let raw = &bytes[from..from + len * w];
        // SAFETY: the map is page-aligned and `from` is a multiple of the element size, so
        // the pointer is aligned; the length is checked against the file size in `open`.
        unsafe {
            match self.meta.width {
                TokenWidth::U16 => TokenSlice::U16(std::slice::from_raw_parts(raw.as_ptr() as *const u16, len)),
                TokenWidth::U32 => TokenSlice::U32(std::slice::from_raw_parts(raw.as_ptr() as *const u32, len)),
            }
        }
    }

    /// Appends tokens `[start, start + len)` to `out` as u32.
    pub fn extend_tokens(&self, start: u64, len: usize, out: &mut Vec<u32>) {
        match self.tokens(start, len) {
            TokenSlice::U16(s) => out.extend(s.iter().map(|&t| t as u32)),
            TokenSlice::U32(s) => out.extend_from_slice(s),
        }
    }

    /// Every document's corpus id (`None` where the record had none), read from
    /// `ids.jsonl` on demand: maps scores written per id back to documents.
    pub fn doc_ids(&self) -> Result<Vec<Option<String>>> {
        let path = self.dir.join(IDS_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let ids: Vec<Option<String>> = text
            .lines()
            .enumerate()
            .map(|(i, line)| serde_json::from_str(line).with_context(|| format!("{}:{}: not a JSON string", path.display(), i + 1)))
            .collect::<Result<_>>()?;
        if ids.len() != self.num_docs() {
            bail!("{}: {} ids for {} documents; run `cpt prepare` again", path.display(), ids.len(), self.num_docs());
        }
        Ok(ids)
    }

    /// A document's tokens as u32.
    pub fn doc_tokens(&self, i: usize) -> Vec<u32> {
        let d = self.doc(i);
        let mut out = Vec::with_capacity(d.len as usize);
        self.extend_tokens(d.start, d.len as usize, &mut out);
        out
    }
}

/// Replaces every document's score in a prepared source (`cpt score --shards`): one score
/// per document in index order (NaN: no score). The tokens are untouched.
pub fn write_scores(dir: &Path, scores: &[f32]) -> Result<()> {
    let reader = ShardReader::open(dir)?;
    if scores.len() != reader.num_docs() {
        bail!("{}: {} scores for {} documents", dir.display(), scores.len(), reader.num_docs());
    }
    let mut docs = Vec::with_capacity(scores.len() * DOC_RECORD_BYTES);
    for (i, &s) in scores.iter().enumerate() {
        let mut d = reader.doc(i);
        d.score = s;
        docs.extend_from_slice(&d.encode());
    }
    let mut meta = reader.meta().clone();
    meta.scored_docs = scores.iter().filter(|s| !s.is_nan()).count() as u64;
    drop(reader);
    replace_index(dir, &docs, &meta)
}

/// Replaces every document's topic in a prepared source (`cpt topics label --shards`):
/// `doc_topics[i]` is document i's index into `topics`, or `None` for no topic. The label
/// table becomes the topics in use, in the order of `topics`. The tokens are untouched.
pub fn write_topics(dir: &Path, topics: &[String], doc_topics: &[Option<u16>]) -> Result<()> {
    let reader = ShardReader::open(dir)?;
    if doc_topics.len() != reader.num_docs() {
        bail!("{}: {} topics for {} documents", dir.display(), doc_topics.len(), reader.num_docs());
    }
    let mut used = vec![false; topics.len()];
    for t in doc_topics.iter().flatten() {
        *used.get_mut(*t as usize).with_context(|| format!("topic index {t} outside the {} topics", topics.len()))? = true;
    }
    let mut table = Vec::new();
    let mut new_id = vec![NO_LABEL; topics.len()];
    for (i, name) in topics.iter().enumerate().filter(|(i, _)| used[*i]) {
        new_id[i] = table.len() as u16;
        table.push(name.clone());
    }
    let mut docs = Vec::with_capacity(doc_topics.len() * DOC_RECORD_BYTES);
    for (i, t) in doc_topics.iter().enumerate() {
        let mut d = reader.doc(i);
        d.topic = t.map(|t| new_id[t as usize]).unwrap_or(NO_LABEL);
        docs.extend_from_slice(&d.encode());
    }
    let mut meta = reader.meta().clone();
    meta.topics = table;
    drop(reader);
    replace_index(dir, &docs, &meta)
}

/// Swaps in a new `docs.bin` and `meta.json` as one step: a copy of the source directory
/// (its other files hard-linked, so the tokens are not copied) is built beside it and
/// renamed into place, so readers see the old index or the new one, never a mix.
fn replace_index(dir: &Path, docs: &[u8], meta: &ShardMeta) -> Result<()> {
    let staging = crate::util::atomic::AtomicDir::create(dir)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        if name == DOCS_FILE || name == META_FILE {
            continue;
        }
        let (from, to) = (entry.path(), staging.path().join(&name));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    std::fs::write(staging.path().join(DOCS_FILE), docs).context("writing the document index")?;
    std::fs::write(staging.path().join(META_FILE), serde_json::to_vec_pretty(meta)?).context("writing meta.json")?;
    staging.commit()?;
    Ok(())
}
