//! Documents for perplexity and scoring: JSONL (a text field per line) or plain text
//! (the whole file, or blocks separated by blank lines), optionally gzip/zstd-compressed.
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextSplit {
    /// One document per file.
    #[default]
    File,
    /// Blank lines separate documents.
    BlankLine,
}

/// One document and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub text: String,
    /// `file:line` of the record (JSONL), of the block (blank-line text) or `file` (whole file).
    pub location: String,
    /// The JSON record as read (JSONL only), so scores can be written back beside it.
    pub record: Option<serde_json::Map<String, serde_json::Value>>,
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let name = path.to_string_lossy();
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if name.ends_with(".zst") {
        Box::new(zstd::Decoder::new(file).with_context(|| format!("opening zstd stream {}", path.display()))?)
    } else {
        Box::new(file)
    })
}

pub fn is_jsonl(path: &Path) -> bool {
    let name = path.to_string_lossy();
    let base = name.trim_end_matches(".gz").trim_end_matches(".zst");
    base.ends_with(".jsonl") || base.ends_with(".json")
}

/// Reads every document of `path`. JSONL lines must be objects with a string `text_field`
/// (or several, comma-separated, joined by newlines); a bad line is an error naming the
/// file and line.
pub fn read_documents(path: &Path, text_field: &str, split: TextSplit) -> Result<Vec<Document>> {
    let reader = BufReader::new(open(path)?);
    let display = path.display().to_string();
    let mut docs = Vec::new();
    if is_jsonl(path) {
        for (i, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("{display}:{}: reading", i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| anyhow!("{display}:{}: bad JSON: {e}", i + 1))?;
            let serde_json::Value::Object(obj) = value else {
                bail!("{display}:{}: expected a JSON object", i + 1);
            };
            // `instruction,input,output`: instruction-style samples are scored as the
            // non-empty fields joined by newlines.
            let mut parts = Vec::new();
            for field in text_field.split(',').map(str::trim) {
                match obj.get(field) {
                    Some(serde_json::Value::String(s)) if !s.is_empty() => parts.push(s.as_str()),
                    Some(serde_json::Value::String(_)) | Some(serde_json::Value::Null) => {}
                    Some(_) => bail!("{display}:{}: field `{field}` is not a string", i + 1),
                    None if !text_field.contains(',') => bail!("{display}:{}: no `{field}` field", i + 1),
                    None => {}
                }
            }
            if parts.is_empty() {
                bail!("{display}:{}: no text in `{text_field}`", i + 1);
            }
            let text = parts.join("\n");
            docs.push(Document { text, location: format!("{display}:{}", i + 1), record: Some(obj) });
        }
        return Ok(docs);
    }
    let mut text = String::new();
    BufReader::new(reader)
        .read_to_string(&mut text)
        .map_err(|e| anyhow!("{display}: not UTF-8 text ({e})"))?;
    match split {
        TextSplit::File => {
            if !text.is_empty() {
                docs.push(Document { text, location: display, record: None });
            }
        }
        TextSplit::BlankLine => {
            let mut block: Vec<&str> = Vec::new();
            let mut start = 0;
            for (i, line) in text.lines().chain(std::iter::once("")).enumerate() {
                if line.trim().is_empty() {
                    if !block.is_empty() {
                        docs.push(Document { text: block.join("\n"), location: format!("{display}:{}", start + 1), record: None });
                        block.clear();
                    }
                } else {
                    if block.is_empty() {
                        start = i;
                    }
                    block.push(line);
                }
            }
        }
    }
    Ok(docs)
}
