//! Corpus readers: JSONL, plain text and Parquet files (gzip/zstd where the extension says
//! so), found through files, directories and globs. Records stream one at a time; nothing
//! holds a whole file in memory except a plain-text document-per-file document.
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::{SourceConfig, SourceFormat, TextMode};

/// One document as read from a source, before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDoc {
    pub text: String,
    pub lang: Option<String>,
    pub topic: Option<String>,
    pub id: Option<String>,
    pub score: Option<f64>,
    /// `file:line` (JSONL, text) or `file:row N` (Parquet).
    pub location: String,
}

/// Why a record was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedReason {
    BadJson,
    MissingField,
    InvalidUtf8,
    EmptyText,
    BadFieldType,
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MalformedReason::BadJson => "bad JSON",
            MalformedReason::MissingField => "missing text field",
            MalformedReason::InvalidUtf8 => "invalid UTF-8",
            MalformedReason::EmptyText => "empty text",
            MalformedReason::BadFieldType => "field of the wrong type",
        })
    }
}

/// A record that could not become a document, with where it is and what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub reason: MalformedReason,
    pub location: String,
    pub detail: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.location, self.reason, self.detail)
    }
}

pub type Record = std::result::Result<RawDoc, Malformed>;

/// The files of a source, in a stable order: each `paths` entry's matches sorted, entries
/// in the order given, duplicates removed. An entry that matches nothing is an error.
pub fn resolve_files(source: &SourceConfig, at: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for (j, entry) in source.paths.iter().enumerate() {
        let mut found: Vec<PathBuf> = Vec::new();
        if entry.contains(['*', '?', '[']) {
            let paths = glob::glob(entry).map_err(|e| anyhow!("{at}.paths[{j}]: bad glob `{entry}`: {e}"))?;
            for p in paths {
                let p = p.map_err(|e| anyhow!("{at}.paths[{j}]: {e}"))?;
                if p.is_dir() {
                    walk_dir(&p, source.format, &mut found)?;
                } else if p.is_file() {
                    found.push(p);
                }
            }
        } else {
            let p = PathBuf::from(entry);
            if p.is_dir() {
                walk_dir(&p, source.format, &mut found)?;
            } else if p.is_file() {
                found.push(p);
            } else {
                bail!("{at}.paths[{j}]: `{entry}` does not exist");
            }
        }
        if found.is_empty() {
            bail!("{at}.paths[{j}]: `{entry}` matches no corpus files");
        }
        found.sort();
        for f in found {
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }
    Ok(files)
}

/// Files under `dir` (recursively) whose extension is a corpus format (or `format`'s, when
/// given); hidden files are skipped.
fn walk_dir(dir: &Path, format: Option<SourceFormat>, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk_dir(&path, format, out)?;
        } else if let Some(f) = format_from_name(&path) {
            if format.is_none_or(|want| want == f) {
                out.push(path);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn split_compression(path: &Path) -> (String, Compression) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_lowercase();
    if let Some(stem) = name.strip_suffix(".gz") {
        (stem.to_string(), Compression::Gzip)
    } else if let Some(stem) = name.strip_suffix(".zst").or_else(|| name.strip_suffix(".zstd")) {
        (stem.to_string(), Compression::Zstd)
    } else {
        (name, Compression::None)
    }
}

/// The format a file's name implies (`a.jsonl.zst` -> JSONL).
pub fn format_from_name(path: &Path) -> Option<SourceFormat> {
    let (stem, _) = split_compression(path);
    let ext = stem.rsplit_once('.').map(|(_, e)| e)?;
    match ext {
        "jsonl" | "json" | "ndjson" => Some(SourceFormat::Jsonl),
        "txt" | "text" | "md" => Some(SourceFormat::Text),
        "parquet" => Some(SourceFormat::Parquet),
        _ => None,
    }
}

/// Opens a file for reading, decompressing by extension.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (_, comp) = split_compression(path);
    const BUF: usize = 1 << 20;
    Ok(match comp {
        Compression::None => Box::new(BufReader::with_capacity(BUF, file)),
        Compression::Gzip => Box::new(BufReader::with_capacity(BUF, flate2::read::MultiGzDecoder::new(file))),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::new(file)
                .with_context(|| format!("{}: not a zstd stream", path.display()))?;
            Box::new(BufReader::with_capacity(BUF, dec))
        }
    })
}

/// A writer that compresses as its file's extension says (`.gz`, `.zst`), the inverse of
/// `open_decompressed`. `finish` must be called to complete the stream.
pub enum CompressedWriter {
    Plain(std::io::BufWriter<File>),
    Gzip(flate2::write::GzEncoder<std::io::BufWriter<File>>),
    Zstd(zstd::stream::write::Encoder<'static, std::io::BufWriter<File>>),
}

impl CompressedWriter {
    /// Wraps `file`, to be named `path` (whose extension picks the compression).
    pub fn new(file: File, path: &Path) -> Result<Self> {
        let buffered = std::io::BufWriter::with_capacity(1 << 20, file);
        Ok(match split_compression(path).1 {
            Compression::None => CompressedWriter::Plain(buffered),
            Compression::Gzip => CompressedWriter::Gzip(flate2::write::GzEncoder::new(buffered, flate2::Compression::default())),
            Compression::Zstd => CompressedWriter::Zstd(
                zstd::stream::write::Encoder::new(buffered, 3).with_context(|| format!("starting zstd for {}", path.display()))?,
            ),
        })
    }

    /// Ends the compressed stream and flushes everything to the file.
    pub fn finish(self) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            CompressedWriter::Plain(mut w) => w.flush(),
            CompressedWriter::Gzip(w) => w.finish()?.flush(),
            CompressedWriter::Zstd(w) => w.finish()?.flush(),
        }
    }
}

impl std::io::Write for CompressedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            CompressedWriter::Plain(w) => w.write(buf),
            CompressedWriter::Gzip(w) => w.write(buf),
            CompressedWriter::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            CompressedWriter::Plain(w) => w.flush(),
            CompressedWriter::Gzip(w) => w.flush(),
            CompressedWriter::Zstd(w) => w.flush(),
        }
    }
}

/// Streams the records of one file. I/O and decompression errors end the stream with an
/// `Err`; a malformed record is an `Ok(Err(Malformed))` and reading goes on.
pub fn read_file(path: &Path, source: &SourceConfig) -> Result<Box<dyn Iterator<Item = Result<Record>> + Send>> {
    let format = match source.format.or_else(|| format_from_name(path)) {
        Some(f) => f,
        None => bail!(
            "{}: cannot tell the format from the extension; set `format` (jsonl, text, parquet) on source `{}`",
            path.display(),
            source.name
        ),
    };
    Ok(match format {
        SourceFormat::Jsonl => Box::new(JsonlReader::new(path, source)?),
        SourceFormat::Text => match source.text_mode {
            TextMode::File => Box::new(std::iter::once_with({
                let path = path.to_path_buf();
                let lang = source.language.clone();
                move || read_whole_text(&path, lang)
            })),
            TextMode::BlankLine => Box::new(BlankLineReader::new(path, source)?),
        },
        SourceFormat::Parquet => Box::new(ParquetReader::new(path, source)?),
    })
}

/// Reads a line as raw bytes, without its `\n` / `\r\n`. `None` at end of input.
pub fn read_line_bytes(reader: &mut dyn BufRead, buf: &mut Vec<u8>, path: &Path) -> Result<Option<()>> {
    buf.clear();
    let n = reader.read_until(b'\n', buf).with_context(|| format!("reading {}", path.display()))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(Some(()))
}

struct JsonlReader {
    reader: Box<dyn BufRead + Send>,
    path: PathBuf,
    display: String,
    line: u64,
    buf: Vec<u8>,
    fields: Fields,
    done: bool,
}

#[derive(Clone)]
struct Fields {
    text: String,
    lang: String,
    topic: String,
    id: String,
    score: String,
    language: Option<String>,
}

impl Fields {
    fn of(source: &SourceConfig) -> Self {
        Fields {
            text: source.text_field.clone(),
            lang: source.lang_field.clone(),
            topic: source.topic_field.clone(),
            id: source.id_field.clone(),
            score: source.score_field.clone(),
            language: source.language.clone(),
        }
    }
}

impl JsonlReader {
    fn new(path: &Path, source: &SourceConfig) -> Result<Self> {
        Ok(JsonlReader {
            reader: open_decompressed(path)?,
            path: path.to_path_buf(),
            display: path.display().to_string(),
            line: 0,
            buf: Vec::with_capacity(1 << 16),
            fields: Fields::of(source),
            done: false,
        })
    }

    fn parse(&self, location: String) -> Record {
        let malformed = |reason, detail: String| Err(Malformed { reason, location: location.clone(), detail });
        let text = match std::str::from_utf8(&self.buf) {
            Ok(t) => t,
            Err(e) => return malformed(MalformedReason::InvalidUtf8, e.to_string()),
        };
        let mut obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => return malformed(MalformedReason::BadJson, "not a JSON object".into()),
            Err(e) => return malformed(MalformedReason::BadJson, e.to_string()),
        };
        let f = &self.fields;
        let body = match obj.remove(&f.text) {
            Some(serde_json::Value::String(s)) => s,
            None | Some(serde_json::Value::Null) => {
                return malformed(MalformedReason::MissingField, format!("no `{}` field", f.text))
            }
            Some(_) => return malformed(MalformedReason::BadFieldType, format!("`{}` is not a string", f.text)),
        };
        if body.trim().is_empty() {
            return malformed(MalformedReason::EmptyText, format!("`{}` is empty", f.text));
        }
        let label = |obj: &serde_json::Map<String, serde_json::Value>, key: &str| -> std::result::Result<Option<String>, String> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(format!("`{key}` is not a string")),
            }
        };
        let lang = match &f.language {
            Some(l) => Some(l.clone()),
            None => match label(&obj, &f.lang) {
                Ok(v) => v,
                Err(d) => return malformed(MalformedReason::BadFieldType, d),
            },
        };
        let topic = match label(&obj, &f.topic) {
            Ok(v) => v,
            Err(d) => return malformed(MalformedReason::BadFieldType, d),
        };
        let id = match label(&obj, &f.id) {
            Ok(v) => v,
            Err(d) => return malformed(MalformedReason::BadFieldType, d),
        };
        let score = match obj.get(&f.score) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(_) => return malformed(MalformedReason::BadFieldType, format!("`{}` is not a number", f.score)),
        };
        Ok(RawDoc { text: body, lang, topic, id, score, location })
    }
}

impl Iterator for JsonlReader {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match read_line_bytes(&mut *self.reader, &mut self.buf, &self.path) {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(None) => self.done = true,
                Ok(Some(())) => {
                    self.line += 1;
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        continue; // blank lines separate nothing in JSONL
                    }
                    let location = format!("{}:{}", self.display, self.line);
                    return Some(Ok(self.parse(location)));
                }
            }
        }
        None
    }
}

fn read_whole_text(path: &Path, language: Option<String>) -> Result<Record> {
    let mut bytes = Vec::new();
    open_decompressed(path)?.read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    let location = format!("{}:1", path.display());
    Ok(match String::from_utf8(bytes) {
        Err(e) => Err(Malformed { reason: MalformedReason::InvalidUtf8, location, detail: e.utf8_error().to_string() }),
        Ok(text) if text.trim().is_empty() => {
            Err(Malformed { reason: MalformedReason::EmptyText, location, detail: "the file is empty".into() })
        }
        Ok(text) => Ok(RawDoc { text, lang: language, topic: None, id: None, score: None, location }),
    })
}

/// Plain text where blank lines separate documents.
struct BlankLineReader {
    reader: Box<dyn BufRead + Send>,
    path: PathBuf,
    display: String,
    line: u64,
    buf: Vec<u8>,
    language: Option<String>,
    done: bool,
}

impl BlankLineReader {
    fn new(path: &Path, source: &SourceConfig) -> Result<Self> {
        Ok(BlankLineReader {
            reader: open_decompressed(path)?,
            path: path.to_path_buf(),
            display: path.display().to_string(),
            line: 0,
            buf: Vec::new(),
            language: source.language.clone(),
            done: false,
        })
    }
}

impl Iterator for BlankLineReader {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut doc: Vec<u8> = Vec::new();
        let mut start_line = 0;
        let mut bad_utf8: Option<String> = None;
        while !self.done {
            match read_line_bytes(&mut *self.reader, &mut self.buf, &self.path) {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(None) => self.done = true,
                Ok(Some(())) => {
                    self.line += 1;
                    let blank = self.buf.iter().all(u8::is_ascii_whitespace);
                    if blank {
                        if start_line != 0 {
                            break;
                        }
                        continue;
                    }
                    if start_line == 0 {
                        start_line = self.line;
                    }
                    if bad_utf8.is_none() {
                        if let Err(e) = std::str::from_utf8(&self.buf) {
                            bad_utf8 = Some(format!("line {}: {e}", self.line));
                        }
                    }
                    if !doc.is_empty() {
                        doc.push(b'\n');
                    }
                    doc.extend_from_slice(&self.buf);
                }
            }
        }
        if start_line == 0 {
            return None;
        }
        let location = format!("{}:{}", self.display, start_line);
        if let Some(detail) = bad_utf8 {
            return Some(Ok(Err(Malformed { reason: MalformedReason::InvalidUtf8, location, detail })));
        }
        // Checked line by line above, so this conversion cannot fail; keep the error path anyway.
        Some(Ok(match String::from_utf8(doc) {
            Ok(text) => Ok(RawDoc { text, lang: self.language.clone(), topic: None, id: None, score: None, location }),
            Err(e) => Err(Malformed { reason: MalformedReason::InvalidUtf8, location, detail: e.to_string() }),
        }))
    }
}

/// Parquet as Hugging Face datasets ship it: a string `text` column (and optional metadata
/// columns), read row by row with only the needed columns projected.
struct ParquetReader {
    rows: parquet::record::reader::RowIter<'static>,
    display: String,
    row: u64,
    fields: Fields,
}

impl ParquetReader {
    fn new(path: &Path, source: &SourceConfig) -> Result<Self> {
        use parquet::file::reader::FileReader;
        let display = path.display().to_string();
        let file = File::open(path).with_context(|| format!("opening {display}"))?;
        let reader = parquet::file::reader::SerializedFileReader::new(file)
            .map_err(|e| anyhow!("{display}: not a readable Parquet file: {e}"))?;
        let fields = Fields::of(source);
        let schema = reader.metadata().file_metadata().schema();
        let columns: Vec<String> = schema.get_fields().iter().map(|f| f.name().to_string()).collect();
        if !columns.contains(&fields.text) {
            bail!("{display}: no column `{}` (columns: {}); set `text_field` on source `{}`", fields.text, columns.join(", "), source.name);
        }
        let wanted = [&fields.text, &fields.lang, &fields.topic, &fields.id, &fields.score];
        let projected: Vec<_> = schema
            .get_fields()
            .iter()
            .filter(|f| wanted.iter().any(|w| *w == f.name()))
            .cloned()
            .collect();
        let projection = parquet::schema::types::Type::group_type_builder(schema.name())
            .with_fields(projected)
            .build()
            .map_err(|e| anyhow!("{display}: {e}"))?;
        let rows = parquet::record::reader::RowIter::from_file_into(Box::new(reader))
            .project(Some(projection))
            .map_err(|e| anyhow!("{display}: {e}"))?;
        Ok(ParquetReader { rows, display, row: 0, fields })
    }

    fn convert(&self, row: parquet::record::Row, location: String) -> Record {
        use parquet::record::Field;
        let malformed = |reason, detail: String| Err(Malformed { reason, location: location.clone(), detail });
        let f = &self.fields;
        let (mut text, mut lang, mut topic, mut id, mut score) = (None, None, None, None, None);
        for (name, value) in row.into_columns() {
            let as_text = match &value {
                Field::Str(s) => Ok(Some(s.clone())),
                Field::Bytes(b) => match std::str::from_utf8(b.data()) {
                    Ok(s) => Ok(Some(s.to_string())),
                    Err(e) => return malformed(MalformedReason::InvalidUtf8, format!("column `{name}`: {e}")),
                },
                Field::Null => Ok(None),
                Field::Int(i) => Ok(Some(i.to_string())),
                Field::Long(i) => Ok(Some(i.to_string())),
                _ => Err(()),
            };
            if name == f.score {
                score = match value {
                    Field::Null => None,
                    Field::Float(x) => Some(x as f64),
                    Field::Double(x) => Some(x),
                    Field::Int(x) => Some(x as f64),
                    Field::Long(x) => Some(x as f64),
                    _ => return malformed(MalformedReason::BadFieldType, format!("column `{name}` is not a number")),
                };
                continue;
            }
            let Ok(as_text) = as_text else {
                return malformed(MalformedReason::BadFieldType, format!("column `{name}` is not a string"));
            };
            if name == f.text {
                text = as_text;
            } else if name == f.lang {
                lang = as_text;
            } else if name == f.topic {
                topic = as_text;
            } else if name == f.id {
                id = as_text;
            }
        }
        let Some(text) = text else {
            return malformed(MalformedReason::MissingField, format!("`{}` is null", f.text));
        };
        if text.trim().is_empty() {
            return malformed(MalformedReason::EmptyText, format!("`{}` is empty", f.text));
        }
        Ok(RawDoc { text, lang: f.language.clone().or(lang), topic, id, score, location })
    }
}

impl Iterator for ParquetReader {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        let row = self.rows.next()?;
        self.row += 1;
        let location = format!("{}:row {}", self.display, self.row);
        Some(match row {
            Ok(row) => Ok(self.convert(row, location)),
            Err(e) => Err(anyhow!("{location}: {e}")),
        })
    }
}
