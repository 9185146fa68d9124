//! CSV files (benchmarks, sweep results) through the `csv` crate (RFC 4180: quoted fields,
//! doubled quotes, newlines inside quotes), with what the crate leaves to us: a leading
//! byte-order mark is dropped, each record knows the line it starts on, blank lines are
//! skipped (as pandas' `read_csv` does), and unbalanced quotes (a quoted field never closed,
//! which the crate reads up to the end of the file, or a quote inside an unquoted field) are
//! errors naming the line.
use std::path::Path;

use anyhow::{bail, Context, Result};

/// One CSV record with the 1-based line on which it starts (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Reads a UTF-8 CSV file into records.
pub fn read_csv_file(path: &Path) -> Result<Vec<Record>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not valid UTF-8 ({e})", path.display()))?;
    parse_csv(&text).with_context(|| format!("parsing CSV file {}", path.display()))
}

/// Parses CSV text. Records may have different numbers of fields (the caller checks).
pub fn parse_csv(text: &str) -> Result<Vec<Record>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut records = Vec::new();
    let mut starts = Vec::new();
    // The crate places a record after the previous one's terminator and the blank lines
    // that follow; its first character, and the line it is on, come after those.
    let (mut counted_to, mut line) = (0usize, 1usize);
    for row in reader.records() {
        let row = row.map_err(|e| anyhow::anyhow!("record {}: {e}", records.len() + 1))?;
        let after = row.position().context("a CSV record without a position")?.byte() as usize;
        let start = after + text[after..].bytes().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        line += text.as_bytes()[counted_to..start].iter().filter(|&&b| b == b'\n').count();
        counted_to = start;
        starts.push(start);
        records.push(Record { line, fields: row.iter().map(str::to_string).collect() });
    }
    // Each record's raw text holds an even number of quotes unless a quoted field is never
    // closed (the crate then reads to the end of the file) or a quote stands in an unquoted
    // field.
    for (i, record) in records.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let raw = &text[starts[i]..end];
        if raw.bytes().filter(|&b| b == b'"').count() % 2 == 1 {
            let opens_a_field = raw.starts_with('"') || raw.contains(",\"");
            if i + 1 == records.len() && opens_a_field {
                bail!("line {}: quoted field is never closed", record.line);
            }
            bail!("line {}: stray quote inside an unquoted field", record.line);
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_newlines_and_crlf() {
        let recs = parse_csv("a,\"b,c\",\"x\"\"y\"\r\n\n1,\"two\nlines\",3\n").unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].fields, vec!["a", "b,c", "x\"y"]);
        assert_eq!(recs[1].line, 3);
        assert_eq!(recs[1].fields, vec!["1", "two\nlines", "3"]);
    }

    #[test]
    fn empty_fields_and_no_trailing_newline() {
        let recs = parse_csv(",a,,\nb").unwrap();
        assert_eq!(recs[0].fields, vec!["", "a", "", ""]);
        assert_eq!(recs[1].fields, vec!["b"]);
    }

    #[test]
    fn unclosed_quote_is_an_error_with_line() {
        let err = parse_csv("a,b\n\"open,c\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("never closed"), "{err}");
        let err = parse_csv("a,b\nx,\"open\n\nc,d\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("never closed"), "{err}");
    }

    #[test]
    fn stray_quotes_and_bom() {
        let err = parse_csv("a,b\nx\"y,z\nc,d\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("stray quote"), "{err}");
        let recs = parse_csv("\u{feff}id,q\n1,\"a \"\"b\"\"\"\n").unwrap();
        assert_eq!(recs[0].fields, vec!["id", "q"]);
        assert_eq!(recs[1].fields, vec!["1", "a \"b\""]);
    }
}
