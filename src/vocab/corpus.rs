//! Documents for learning new tokens and measuring tokenizers: JSONL (`text`, optional
//! `lang`) or plain text (blank-line separated paragraphs), optionally `.gz` / `.zst`.
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub struct Document {
    pub text: String,
    /// The `lang` field where the file has one, else guessed from the script.
    pub lang: String,
}

/// Expands files, directories (every `.jsonl`/`.txt` below, sorted) and glob patterns.
pub fn expand_paths(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let text = input.to_string_lossy();
        if input.is_dir() {
            let mut found = Vec::new();
            collect_dir(input, &mut found)?;
            found.sort();
            if found.is_empty() {
                bail!("corpus directory {} holds no .jsonl or .txt files", input.display());
            }
            files.extend(found);
        } else if text.contains(['*', '?', '[']) {
            let mut found: Vec<PathBuf> = glob::glob(&text)
                .with_context(|| format!("bad corpus pattern {text}"))?
                .filter_map(|p| p.ok())
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("corpus pattern {text} matches no files");
            }
            files.extend(found);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            bail!("corpus file {} does not exist", input.display());
        }
    }
    Ok(files)
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_dir(&path, out)?;
        } else if is_corpus_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_corpus_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let base = name.trim_end_matches(".gz").trim_end_matches(".zst");
    base.ends_with(".jsonl") || base.ends_with(".txt")
}

fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening corpus file {}", path.display()))?;
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(file).with_context(|| format!("reading {}", path.display()))?)
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::new(reader)))
}

/// Reads every document of every file.
pub fn read_documents(files: &[PathBuf]) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for path in files {
        let name = path.to_string_lossy();
        let base = name.trim_end_matches(".gz").trim_end_matches(".zst");
        let reader = open_text(path)?;
        if base.ends_with(".jsonl") {
            read_jsonl(path, reader, &mut docs)?;
        } else {
            read_paragraphs(path, reader, &mut docs)?;
        }
    }
    Ok(docs)
}

fn read_jsonl(path: &Path, reader: Box<dyn BufRead>, docs: &mut Vec<Document>) -> Result<()> {
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: not UTF-8 text", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?;
        let text = value
            .get("text")
            .and_then(|t| t.as_str())
            .with_context(|| format!("{}:{}: no string field `text`", path.display(), i + 1))?;
        let lang = match value.get("lang").and_then(|l| l.as_str()) {
            Some(l) => l.to_string(),
            None => guess_language(text).to_string(),
        };
        docs.push(Document { text: text.to_string(), lang });
    }
    Ok(())
}

fn read_paragraphs(path: &Path, mut reader: Box<dyn BufRead>, docs: &mut Vec<Document>) -> Result<()> {
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        docs.push(Document { text: paragraph.to_string(), lang: guess_language(paragraph).to_string() });
    }
    Ok(())
}

/// "zh" when Han characters make up at least a third of the letters, "en" when ASCII
/// letters are the majority, else "other".
pub fn guess_language(text: &str) -> &'static str {
    let (mut han, mut ascii, mut other) = (0usize, 0usize, 0usize);
    for c in text.chars() {
        if is_han(c) {
            han += 1;
        } else if c.is_ascii_alphabetic() {
            ascii += 1;
        } else if c.is_alphabetic() {
            other += 1;
        }
    }
    let letters = han + ascii + other;
    if letters == 0 {
        "other"
    } else if han * 3 >= letters {
        "zh"
    } else if ascii * 2 > letters {
        "en"
    } else {
        "other"
    }
}

/// CJK unified ideographs (basic block, extension A, compatibility ideographs).
pub fn is_han(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}
