//! The metrics file: JSON Lines, one record per logged step, validation or eval pass, each
//! flushed as it is written so a crash loses nothing already logged.
use crate::util::atomic::write_file_atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One training-step record. Non-finite numbers are written as `null`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StepRecord {
    pub step: u64,
    pub tokens: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    /// Mean loss per data source in this step, where known.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_loss: BTreeMap<String, f64>,
    /// Model FLOPs utilisation (GPU runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// Peak memory (bytes) since the previous record: the GPU memory pool's high-water mark,
    /// or on CPU the process's peak resident set (`kernels::device_info::peak_memory_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_mem_bytes: Option<u64>,
    /// Set when the guard skipped this step (the reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// With several ranks: each rank's peak memory and communication per step since the
    /// previous record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<crate::dist::session::RankStats>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct LossPpl {
    pub loss: f64,
    pub ppl: f64,
}

impl LossPpl {
    pub fn from_loss(loss: f64) -> Self {
        Self { loss, ppl: loss.exp() }
    }
}

/// A validation record: `{"kind":"val", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValRecord {
    pub kind: String,
    pub step: u64,
    pub tokens: u64,
    pub source: BTreeMap<String, LossPpl>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topic: BTreeMap<String, LossPpl>,
}

impl ValRecord {
    pub fn new(step: u64, tokens: u64, source: BTreeMap<String, LossPpl>, topic: BTreeMap<String, LossPpl>) -> Self {
        Self { kind: "val".into(), step, tokens, source, topic }
    }
}

/// Appends JSON records to a metrics file, one per line, flushed per record.
pub struct MetricsWriter {
    file: File,
    path: PathBuf,
}

impl MetricsWriter {
    /// Start a fresh metrics file (an existing one is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { file, path: path.to_path_buf() })
    }

    /// Continue a run resumed after `step` steps: records of later steps (logged after the
    /// checkpoint by the interrupted run) are dropped, so every step appears once.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        if path.exists() {
            let kept: Vec<String> = read_lines(path)?
                .into_iter()
                .filter(|(_, record)| record.get("step").and_then(|s| s.as_u64()).is_none_or(|s| s <= step))
                .map(|(line, _)| line)
                .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            write_file_atomic(path, text.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file, path: path.to_path_buf() })
    }

    /// Write one record as a line and flush it.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record).context("serialising a metrics record")?;
        line.push(b'\n');
        self.file.write_all(&line).with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush().with_context(|| format!("flushing {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_lines(path: &Path) -> Result<Vec<(String, serde_json::Value)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {}: not a JSON record", path.display(), i + 1))?;
        out.push((line.to_string(), value));
    }
    Ok(out)
}

/// All records of a metrics file, in order (errors name the line).
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>> {
    Ok(read_lines(path)?.into_iter().map(|(_, v)| v).collect())
}
