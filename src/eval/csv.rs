//! A small RFC 4180 CSV reader: quoted fields, doubled quotes, newlines inside quotes.
//! Benchmark files are small (a few MB), so the whole file is read and split in memory.
use std::path::Path;

use anyhow::{bail, Context, Result};

/// One CSV record with the 1-based line on which it starts (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Reads a UTF-8 CSV file into records; a leading byte-order mark is skipped.
pub fn read_csv_file(path: &Path) -> Result<Vec<Record>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not valid UTF-8 ({e})", path.display()))?;
    parse_csv(&text).with_context(|| format!("parsing CSV file {}", path.display()))
}

/// Parses CSV text. Blank lines between records are skipped (as pandas does).
pub fn parse_csv(text: &str) -> Result<Vec<Record>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut quoted_field = false;
    let mut line = 1usize;
    let mut record_line = 1usize;
    let mut chars = text.chars().peekable();
    let mut record_has_content = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted_field => {
                in_quotes = true;
                quoted_field = true;
                record_has_content = true;
            }
            '"' => bail!("line {line}: stray quote inside an unquoted field"),
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted_field = false;
                record_has_content = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if record_has_content || !field.is_empty() {
                    fields.push(std::mem::take(&mut field));
                    records.push(Record { line: record_line, fields: std::mem::take(&mut fields) });
                }
                quoted_field = false;
                record_has_content = false;
                line += 1;
                record_line = line;
            }
            _ => {
                if quoted_field {
                    bail!("line {line}: text after the closing quote of a field");
                }
                field.push(c);
                record_has_content = true;
            }
        }
    }
    if in_quotes {
        bail!("line {record_line}: quoted field is never closed");
    }
    if record_has_content || !field.is_empty() {
        fields.push(field);
        records.push(Record { line: record_line, fields });
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
        assert!(err.contains("line 2"), "{err}");
    }
}
