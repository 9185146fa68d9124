//! Multiple-choice benchmarks in their released file layouts.
//!
//! - MMLU (hendrycks/test): `{dev,val,test}/{subject}_{split}.csv`, no header,
//!   `question,A,B,C,D,answer`.
//! - C-Eval (hkust-nlp/ceval): `{dev,val,test}/{subject}_{split}.csv`, header
//!   `id,question,A,B,C,D,answer` (dev adds `explanation`); test answers are hidden.
//! - CMMLU (haonan-li/CMMLU): `data/{dev,test}/{subject}.csv` (or `{dev,test}/` directly),
//!   header `,Question,A,B,C,D,Answer` with a leading index column.
//!
//! Every malformed row is reported with its file and line.
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::csv::{read_csv_file, Record};
use super::pandas_text::render_column;

pub const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchmarkKind {
    Mmlu,
    Ceval,
    Cmmlu,
}

impl BenchmarkKind {
    pub fn name(self) -> &'static str {
        match self {
            BenchmarkKind::Mmlu => "mmlu",
            BenchmarkKind::Ceval => "ceval",
            BenchmarkKind::Cmmlu => "cmmlu",
        }
    }

    /// The split with public answers that papers report: MMLU test, C-Eval val, CMMLU test.
    pub fn default_split(self) -> &'static str {
        match self {
            BenchmarkKind::Ceval => "val",
            _ => "test",
        }
    }
}

impl fmt::Display for BenchmarkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BenchmarkKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "mmlu" => Ok(BenchmarkKind::Mmlu),
            "ceval" => Ok(BenchmarkKind::Ceval),
            "cmmlu" => Ok(BenchmarkKind::Cmmlu),
            _ => bail!("unknown benchmark {s:?}: expected one of mmlu, ceval, cmmlu"),
        }
    }
}

/// One question. `question`/`choices` are the text as written in the file; the
/// `official_*` fields are what `pandas.read_csv` makes of it (see `pandas_text`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Question {
    pub id: String,
    pub question: String,
    pub choices: Vec<String>,
    /// Index of the correct choice.
    pub answer: usize,
    /// 1-based line in `file` where the row starts.
    pub line: usize,
    #[serde(skip)]
    pub official_question: String,
    #[serde(skip)]
    pub official_choices: Vec<String>,
}

/// The evaluated split of one subject plus its few-shot pool (the dev split).
#[derive(Debug, Clone)]
pub struct Subject {
    pub name: String,
    pub file: PathBuf,
    pub questions: Vec<Question>,
    pub dev: Vec<Question>,
}

#[derive(Debug, Clone)]
pub struct Benchmark {
    pub kind: BenchmarkKind,
    pub split: String,
    pub subjects: Vec<Subject>,
}

impl Benchmark {
    pub fn num_questions(&self) -> usize {
        self.subjects.iter().map(|s| s.questions.len()).sum()
    }
}

/// Loads `split` (default: the kind's reported split) and the dev split of every subject
/// found in `dir`, or only of `only` when given.
pub fn load_benchmark(
    kind: BenchmarkKind,
    dir: &Path,
    split: Option<&str>,
    only: Option<&[String]>,
) -> Result<Benchmark> {
    let split = split.unwrap_or(kind.default_split()).to_string();
    let root = data_root(kind, dir)?;
    let split_dir = root.join(&split);
    if !split_dir.is_dir() {
        bail!("{}: no `{split}` folder for {kind} (expected {})", dir.display(), split_dir.display());
    }
    let mut names = subject_names(kind, &split_dir, &split)?;
    if let Some(only) = only {
        for want in only {
            if !names.contains(want) {
                bail!("{kind}: subject {want:?} not found in {}", split_dir.display());
            }
        }
        names.retain(|n| only.contains(n));
    }
    if names.is_empty() {
        bail!("{}: no {kind} subject files found", split_dir.display());
    }
    let mut subjects = Vec::with_capacity(names.len());
    for name in names {
        let file = subject_file(kind, &root, &split, &name);
        let questions = read_subject_file(kind, &file, &split)?;
        let dev_file = subject_file(kind, &root, "dev", &name);
        let dev = if split == "dev" {
            questions.clone()
        } else if dev_file.is_file() {
            read_subject_file(kind, &dev_file, "dev")?
        } else {
            Vec::new()
        };
        subjects.push(Subject { name, file, questions, dev });
    }
    Ok(Benchmark { kind, split, subjects })
}

/// CMMLU's release nests the splits under `data/`; accept either form.
fn data_root(kind: BenchmarkKind, dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        bail!("{kind} folder {} does not exist", dir.display());
    }
    let nested = dir.join("data");
    if nested.join("dev").is_dir() || nested.join("test").is_dir() || nested.join("val").is_dir() {
        Ok(nested)
    } else {
        Ok(dir.to_path_buf())
    }
}

fn subject_suffix(kind: BenchmarkKind, split: &str) -> String {
    match kind {
        BenchmarkKind::Cmmlu => ".csv".to_string(),
        _ => format!("_{split}.csv"),
    }
}

fn subject_file(kind: BenchmarkKind, root: &Path, split: &str, name: &str) -> PathBuf {
    root.join(split).join(format!("{name}{}", subject_suffix(kind, split)))
}

fn subject_names(kind: BenchmarkKind, split_dir: &Path, split: &str) -> Result<Vec<String>> {
    let suffix = subject_suffix(kind, split);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(split_dir).with_context(|| format!("listing {}", split_dir.display()))? {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().to_string();
        if let Some(stem) = file_name.strip_suffix(&suffix) {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Column positions of a subject file after its header (if any).
struct Layout {
    id: Option<usize>,
    question: usize,
    choices: [usize; 4],
    answer: usize,
    min_fields: usize,
}

fn header_layout(file: &Path, header: &Record, names: [&str; 6], id_col: Option<&str>) -> Result<Layout> {
    let find = |want: &str| -> Result<usize> {
        header
            .fields
            .iter()
            .position(|h| h.trim() == want)
            .ok_or_else(|| anyhow!("{}: line {}: header has no `{want}` column (found {:?})", file.display(), header.line, header.fields))
    };
    let id = match id_col {
        Some(c) => Some(find(c)?),
        None => None,
    };
    let question = find(names[0])?;
    let choices = [find(names[1])?, find(names[2])?, find(names[3])?, find(names[4])?];
    let answer = find(names[5])?;
    Ok(Layout { id, question, choices, answer, min_fields: header.fields.len() })
}

/// Reads one subject file into questions, checking every row.
pub fn read_subject_file(kind: BenchmarkKind, file: &Path, split: &str) -> Result<Vec<Question>> {
    let records = read_csv_file(file)?;
    let (layout, rows): (Layout, &[Record]) = match kind {
        BenchmarkKind::Mmlu => (
            Layout { id: None, question: 0, choices: [1, 2, 3, 4], answer: 5, min_fields: 6 },
            &records[..],
        ),
        BenchmarkKind::Ceval | BenchmarkKind::Cmmlu => {
            let header = records.first().ok_or_else(|| anyhow!("{}: empty file (no header)", file.display()))?;
            let layout = if kind == BenchmarkKind::Ceval {
                header_layout(file, header, ["question", "A", "B", "C", "D", "answer"], Some("id"))?
            } else {
                let mut l = header_layout(file, header, ["Question", "A", "B", "C", "D", "Answer"], None)?;
                l.id = Some(0);
                l
            };
            (layout, &records[1..])
        }
    };
    for rec in rows {
        if rec.fields.len() != layout.min_fields {
            bail!(
                "{}: line {}: expected {} fields, found {}",
                file.display(),
                rec.line,
                layout.min_fields,
                rec.fields.len()
            );
        }
    }
    // pandas infers each column's dtype over the whole file.
    let column = |i: usize| -> Vec<String> {
        let vals: Vec<&str> = rows.iter().map(|r| r.fields[i].as_str()).collect();
        render_column(&vals)
    };
    let official_q = column(layout.question);
    let official_c: Vec<Vec<String>> = layout.choices.iter().map(|&i| column(i)).collect();

    let mut out = Vec::with_capacity(rows.len());
    for (row_idx, rec) in rows.iter().enumerate() {
        let answer_text = rec.fields[layout.answer].trim();
        let answer = match LETTERS.iter().position(|l| *l == answer_text) {
            Some(a) => a,
            None if answer_text.is_empty() && kind == BenchmarkKind::Ceval && split == "test" => bail!(
                "{}: line {}: C-Eval's test answers are hidden; evaluate the `val` split",
                file.display(),
                rec.line
            ),
            None => bail!(
                "{}: line {}: answer {:?} is not one of A, B, C, D",
                file.display(),
                rec.line,
                rec.fields[layout.answer]
            ),
        };
        let id = match layout.id {
            Some(i) => rec.fields[i].trim().to_string(),
            None => row_idx.to_string(),
        };
        let question = rec.fields[layout.question].clone();
        if question.trim().is_empty() {
            bail!("{}: line {}: empty question", file.display(), rec.line);
        }
        out.push(Question {
            id,
            question,
            choices: layout.choices.iter().map(|&i| rec.fields[i].clone()).collect(),
            answer,
            line: rec.line,
            official_question: official_q[row_idx].clone(),
            official_choices: official_c.iter().map(|c| c[row_idx].clone()).collect(),
        });
    }
    Ok(out)
}

/// Counts of questions per subject, handy for reports.
pub fn subject_sizes(b: &Benchmark) -> HashMap<String, usize> {
    b.subjects.iter().map(|s| (s.name.clone(), s.questions.len())).collect()
}
