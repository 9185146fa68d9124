//! `cpt vocab stats`: how many characters and UTF-8 bytes one token carries, per language,
//! for one tokenizer or side by side for two (before/after an extension).
use anyhow::Result;
use rayon::prelude::*;
use serde::Serialize;

use super::corpus::Document;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Serialize)]
pub struct TokenizerStats {
    pub tokens: u64,
    pub chars_per_token: f64,
    pub bytes_per_token: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LanguageStats {
    pub lang: String,
    pub docs: usize,
    pub chars: u64,
    pub bytes: u64,
    /// One entry per tokenizer, in the order given.
    pub per_tokenizer: Vec<TokenizerStats>,
}

/// Counts per language (sorted by name) and over all documents (last, as `all`).
/// Documents are encoded without special tokens.
pub fn measure(tokenizers: &[&Tokenizer], docs: &[Document]) -> Result<Vec<LanguageStats>> {
    let counts: Vec<Vec<u64>> = docs
        .par_iter()
        .map(|d| {
            tokenizers
                .iter()
                .map(|t| {
                    t.encode(d.text.as_str(), false).map(|ids| ids.len() as u64)
                })
                .collect::<Result<Vec<u64>>>()
        })
        .collect::<Result<_>>()?;
    let mut langs: Vec<String> = docs.iter().map(|d| d.lang.clone()).collect();
    langs.sort();
    langs.dedup();
    let mut out = Vec::new();
    let groups = langs.iter().map(|l| Some(l.as_str())).chain(std::iter::once(None));
    for lang in groups {
        let members: Vec<usize> = (0..docs.len()).filter(|&i| lang.is_none_or(|l| docs[i].lang == l)).collect();
        let chars: u64 = members.iter().map(|&i| docs[i].text.chars().count() as u64).sum();
        let bytes: u64 = members.iter().map(|&i| docs[i].text.len() as u64).sum();
        let per_tokenizer = (0..tokenizers.len())
            .map(|k| {
                let tokens: u64 = members.iter().map(|&i| counts[i][k]).sum();
                let per = |x: u64| if tokens == 0 { 0.0 } else { x as f64 / tokens as f64 };
                TokenizerStats { tokens, chars_per_token: per(chars), bytes_per_token: per(bytes) }
            })
            .collect();
        out.push(LanguageStats {
            lang: lang.unwrap_or("all").to_string(),
            docs: members.len(),
            chars,
            bytes,
            per_tokenizer,
        });
    }
    Ok(out)
}

/// A plain-text table; with two tokenizers, the last column is tokens(after) / tokens(before).
pub fn format_table(names: &[String], stats: &[LanguageStats]) -> String {
    let mut header = vec!["lang".to_string(), "docs".into(), "chars".into(), "bytes".into()];
    for name in names {
        header.push(format!("tokens[{name}]"));
        header.push(format!("chars/tok[{name}]"));
        header.push(format!("bytes/tok[{name}]"));
    }
    if names.len() == 2 {
        header.push("tokens after/before".into());
    }
    let mut rows = vec![header];
    for s in stats {
        let mut row = vec![s.lang.clone(), s.docs.to_string(), s.chars.to_string(), s.bytes.to_string()];
        for t in &s.per_tokenizer {
            row.push(t.tokens.to_string());
            row.push(format!("{:.3}", t.chars_per_token));
            row.push(format!("{:.3}", t.bytes_per_token));
        }
        if let [before, after] = s.per_tokenizer.as_slice() {
            let ratio = if before.tokens == 0 { 0.0 } else { after.tokens as f64 / before.tokens as f64 };
            row.push(format!("{ratio:.3}"));
        }
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:>w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
