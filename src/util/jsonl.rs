//! JSONL files read whole: one JSON value per non-blank line, with its 1-based line number,
//! errors naming the file and line; `.gz` files are decompressed.
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Every record of `path` with its line number; an empty file is an error.
pub fn read_records(path: &Path) -> Result<Vec<(usize, Value)>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).with_context(|| format!("{}: not gzip'd UTF-8", path.display()))?;
    } else {
        text = String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8", path.display()))?;
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| anyhow!("{}: line {}: bad JSON: {e}", path.display(), i + 1))?;
        out.push((i + 1, v));
    }
    if out.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(out)
}

/// The string field `name` of a record, or an error naming file, line and field.
pub fn string_field(v: &Value, name: &str, path: &Path, line: usize) -> Result<String> {
    v.get(name).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| anyhow!("{}: line {line}: missing string field `{name}`", path.display()))
}
