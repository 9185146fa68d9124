//! Multiple-choice benchmarks in their released file layouts.
//!
//! - MMLU (hendrycks/test): `{dev,val,test}/{subject}_{split}.csv`, no header,
//!   `question,A,B,C,D,answer`.
//! - C-Eval (hkust-nlp/ceval): `{dev,val,test}/{subject}_{split}.csv`, header
//!   `id,question,A,B,C,D,answer` (dev adds `explanation`); test answers are hidden.
//! - CMMLU (haonan-li/CMMLU): `data/{dev,test}/{subject}.csv` (or `{dev,test}/` directly),
//!   header `,Question,A,B,C,D,Answer` with a leading index column.
//!
//! - ARC (allenai): JSONL, one question per line, in AI2's release form
//!   (`{"id","question":{"stem","choices":[{"text","label"}]},"answerKey"}`) or the
//!   Hugging Face form (`"question": str, "choices": {"text": [..], "label": [..]}`).
//! - HellaSwag (rowanz): JSONL with `activity_label`, `ctx_a`, `ctx_b`, `endings`, `label`;
//!   text cleaned as lm-evaluation-harness' `hellaswag/utils.py` does.
//!
//! ARC and HellaSwag are evaluated zero-shot (lm-evaluation-harness' default); their path is
//! a JSONL file or a folder of them, each file one "subject".
//!
//! Every malformed row is reported with its file and line.
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::util::csv::{read_csv_file, Record};
use super::pandas_text::render_column;

pub const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchmarkKind {
    Mmlu,
    Ceval,
    Cmmlu,
    Arc,
    Hellaswag,
}

impl BenchmarkKind {
    pub fn name(self) -> &'static str {
        match self {
            BenchmarkKind::Mmlu => "mmlu",
            BenchmarkKind::Ceval => "ceval",
            BenchmarkKind::Cmmlu => "cmmlu",
            BenchmarkKind::Arc => "arc",
            BenchmarkKind::Hellaswag => "hellaswag",
        }
    }

    /// Whether questions are answered by letter (A-D) rather than by the choice's text.
    pub fn letter_choices(self) -> bool {
        matches!(self, BenchmarkKind::Mmlu | BenchmarkKind::Ceval | BenchmarkKind::Cmmlu)
    }

    /// The split with public answers that papers report: MMLU test, C-Eval val, CMMLU test.
    pub fn default_split(self) -> &'static str {
        match self {
            BenchmarkKind::Ceval | BenchmarkKind::Hellaswag => "val",
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
            "arc" => Ok(BenchmarkKind::Arc),
            "hellaswag" => Ok(BenchmarkKind::Hellaswag),
            _ => bail!("unknown benchmark {s:?}: expected one of mmlu, ceval, cmmlu, arc, hellaswag"),
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
    /// How each choice is named in reports: A-D, ARC's own labels, HellaSwag's 0-3.
    pub labels: Vec<String>,
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
    if !kind.letter_choices() {
        return load_jsonl_benchmark(kind, dir, split, only);
    }
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
        BenchmarkKind::Arc | BenchmarkKind::Hellaswag => bail!("{}: {kind} is JSONL, not CSV", file.display()),
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
            labels: LETTERS.iter().map(|l| l.to_string()).collect(),
            answer,
            line: rec.line,
            official_question: official_q[row_idx].clone(),
            official_choices: official_c.iter().map(|c| c[row_idx].clone()).collect(),
        });
    }
    Ok(out)
}

fn load_jsonl_benchmark(kind: BenchmarkKind, path: &Path, split: String, only: Option<&[String]>) -> Result<Benchmark> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        f.sort();
        f
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        bail!("{kind} file {} does not exist", path.display());
    };
    let mut subjects = Vec::new();
    for file in files {
        let name = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        if only.is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let questions = read_jsonl_file(kind, &file)?;
        subjects.push(Subject { name, file, questions, dev: Vec::new() });
    }
    if subjects.is_empty() {
        bail!("{}: no {kind} JSONL files (or none of the requested subjects)", path.display());
    }
    Ok(Benchmark { kind, split, subjects })
}

/// Reads ARC or HellaSwag questions, one JSON object per line.
pub fn read_jsonl_file(kind: BenchmarkKind, file: &Path) -> Result<Vec<Question>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {} (must be UTF-8)", file.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{}: line {}", file.display(), i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow!("{}: bad JSON: {e}", at()))?;
        let q = match kind {
            BenchmarkKind::Arc => arc_question(&v),
            _ => hellaswag_question(&v),
        }
        .map_err(|e| anyhow!("{}: {e}", at()))?;
        out.push(Question { line: i + 1, id: if q.id.is_empty() { out.len().to_string() } else { q.id.clone() }, ..q });
    }
    Ok(out)
}

fn str_field<'a>(v: &'a serde_json::Value, name: &str) -> Result<&'a str> {
    v.get(name).and_then(|x| x.as_str()).ok_or_else(|| anyhow!("missing string field `{name}`"))
}

fn arc_question(v: &serde_json::Value) -> Result<Question> {
    let id = v.get("id").and_then(|x| x.as_str()).unwrap_or("").to_string();
    let (stem, texts, labels): (String, Vec<String>, Vec<String>) = match v.get("question") {
        Some(serde_json::Value::Object(q)) => {
            let stem = q.get("stem").and_then(|x| x.as_str()).ok_or_else(|| anyhow!("missing `question.stem`"))?;
            let choices = q.get("choices").and_then(|x| x.as_array()).ok_or_else(|| anyhow!("missing `question.choices`"))?;
            let mut t = Vec::new();
            let mut l = Vec::new();
            for c in choices {
                t.push(str_field(c, "text")?.to_string());
                l.push(str_field(c, "label")?.to_string());
            }
            (stem.to_string(), t, l)
        }
        Some(serde_json::Value::String(stem)) => {
            let c = v.get("choices").ok_or_else(|| anyhow!("missing `choices`"))?;
            let list = |n: &str| -> Result<Vec<String>> {
                c.get(n)
                    .and_then(|x| x.as_array())
                    .ok_or_else(|| anyhow!("missing `choices.{n}`"))?
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(|| anyhow!("`choices.{n}` holds a non-string")))
                    .collect()
            };
            (stem.clone(), list("text")?, list("label")?)
        }
        _ => bail!("missing `question`"),
    };
    if texts.len() < 2 || texts.len() != labels.len() {
        bail!("expected at least two choices with one label each");
    }
    let key = str_field(v, "answerKey")?;
    let answer = labels.iter().position(|l| l == key).ok_or_else(|| anyhow!("answerKey {key:?} is not one of the labels {labels:?}"))?;
    Ok(Question {
        id,
        official_question: stem.clone(),
        official_choices: texts.clone(),
        question: stem,
        choices: texts,
        labels,
        answer,
        line: 0,
    })
}

/// lm-evaluation-harness' HellaSwag `preprocess`: strip, " [title]" -> ". ", drop
/// bracketed tags (within a line), then one pass of "  " -> " ".
pub fn hellaswag_preprocess(text: &str) -> String {
    let t = text.trim().replace(" [title]", ". ");
    let chars: Vec<char> = t.chars().collect();
    let mut out = String::with_capacity(t.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            // `\[.*?\]`: the nearest ']' on the same line.
            if let Some(j) = chars[i + 1..].iter().position(|&c| c == ']' || c == '\n').map(|k| i + 1 + k) {
                if chars[j] == ']' {
                    i = j + 1;
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out.replace("  ", " ")
}

/// Python's `str.capitalize`: first character upper case, the rest lower case.
fn py_capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c.flat_map(char::to_lowercase)).collect(),
        None => String::new(),
    }
}

fn hellaswag_question(v: &serde_json::Value) -> Result<Question> {
    let ctx = format!("{} {}", str_field(v, "ctx_a")?, py_capitalize(str_field(v, "ctx_b")?));
    let query = hellaswag_preprocess(&format!("{}: {}", str_field(v, "activity_label")?, ctx));
    let endings = v.get("endings").and_then(|x| x.as_array()).ok_or_else(|| anyhow!("missing `endings`"))?;
    let choices: Vec<String> = endings
        .iter()
        .map(|e| e.as_str().map(hellaswag_preprocess).ok_or_else(|| anyhow!("`endings` holds a non-string")))
        .collect::<Result<_>>()?;
    let answer = match v.get("label") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as usize),
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.parse::<usize>().ok(),
        _ => bail!("no `label` (HellaSwag's test labels are hidden; evaluate the validation file)"),
    }
    .filter(|&a| a < choices.len())
    .ok_or_else(|| anyhow!("`label` is not an index into `endings`"))?;
    let id = v.get("ind").map(|x| x.to_string()).unwrap_or_default();
    Ok(Question {
        id,
        official_question: query.clone(),
        official_choices: choices.clone(),
        question: query,
        labels: (0..choices.len()).map(|i| i.to_string()).collect(),
        choices,
        answer,
        line: 0,
    })
}

/// Counts of questions per subject, handy for reports.
pub fn subject_sizes(b: &Benchmark) -> HashMap<String, usize> {
    b.subjects.iter().map(|s| (s.name.clone(), s.questions.len())).collect()
}
