//! Collects each run's outcome from its directory into one table: axis values, tokens,
//! FLOPs, wall time, final training loss, per-source and per-topic validation loss
//! (initial = the step-0 record when present, final, best) and benchmark scores
//! (final, best). Written as `results.json` (what `cpt fit` reads) and `results.csv`.
//!
//! Metrics records (one JSON object a line in `<run_dir>/metrics.jsonl`):
//! training `{"step","tokens","loss",...}`, validation `{"kind":"val","step","tokens",
//! "source":{name:{"loss","ppl"}},"topic":{name:{"loss",...}}}`, evaluation
//! `{"kind":"eval","step","tokens", <task>: {<metric>: number}}`.

use crate::util::atomic::write_file_atomic as write_atomic;
use super::runner::{RunRecord, RunStatus, DONE_MARKER};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// One row of the results table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub id: String,
    pub status: String,
    /// Axis name -> value label (in grid order).
    pub axes: Vec<(String, String)>,
    /// Flat numeric columns: axis values (when numeric), `tokens`, `steps`, `flops`,
    /// `wall_s`, `train.loss`, `val.<source>.{initial,final,best,best_step}`,
    /// `topic.<topic>.{...}`, `eval.<task.metric>.{final,best}`.
    pub values: BTreeMap<String, f64>,
    /// Where the FLOPs figure came from (`DONE.json`, `metrics`, or an estimate).
    #[serde(default)]
    pub flops_source: Option<String>,
}

/// The whole table as `cpt fit` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultSet {
    pub axes: Vec<String>,
    pub runs: Vec<RunResult>,
}

#[derive(Default)]
struct LossTrack {
    initial: Option<f64>,
    last: Option<(f64, f64)>, // (step, loss)
    best: Option<(f64, f64)>,
}

impl LossTrack {
    fn add(&mut self, step: f64, loss: f64) {
        if step == 0.0 {
            self.initial = Some(loss);
        }
        self.last = Some((step, loss));
        if self.best.map_or(true, |(_, b)| loss < b) {
            self.best = Some((step, loss));
        }
    }

    fn write(&self, prefix: &str, out: &mut BTreeMap<String, f64>) {
        if let Some(v) = self.initial {
            out.insert(format!("{prefix}.initial"), v);
        }
        if let Some((_, v)) = self.last {
            out.insert(format!("{prefix}.final"), v);
        }
        if let Some((s, v)) = self.best {
            out.insert(format!("{prefix}.best"), v);
            out.insert(format!("{prefix}.best_step"), s);
        }
    }
}

fn num(v: Option<&Json>) -> Option<f64> {
    v.and_then(Json::as_f64).filter(|x| x.is_finite())
}

fn flatten_numbers(prefix: &str, v: &Json, out: &mut Vec<(String, f64)>) {
    match v {
        Json::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x));
            }
        }
        Json::Object(map) => {
            for (k, child) in map {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_numbers(&p, child, out);
            }
        }
        _ => {}
    }
}

/// Reads one run's `metrics.jsonl` into flat columns; a malformed line is an error naming
/// the file and line.
pub fn read_metrics(path: &Path) -> Result<BTreeMap<String, f64>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = BTreeMap::new();
    let mut sources: BTreeMap<String, LossTrack> = BTreeMap::new();
    let mut topics: BTreeMap<String, LossTrack> = BTreeMap::new();
    let mut evals: BTreeMap<String, LossTrack> = BTreeMap::new(); // best = max, tracked negated
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: Json = serde_json::from_str(&line).with_context(|| format!("{}:{}: not a JSON record", path.display(), i + 1))?;
        let Json::Object(map) = &rec else {
            bail!("{}:{}: expected a JSON object", path.display(), i + 1);
        };
        let step = num(map.get("step")).with_context(|| format!("{}:{}: the record has no numeric `step`", path.display(), i + 1))?;
        if let Some(t) = num(map.get("tokens")) {
            let e = out.entry("tokens".to_string()).or_insert(t);
            *e = e.max(t);
        }
        let e = out.entry("steps".to_string()).or_insert(step);
        *e = e.max(step);
        match map.get("kind").and_then(Json::as_str) {
            None | Some("train") => {
                if let Some(l) = num(map.get("loss")) {
                    out.insert("train.loss".into(), l);
                }
                if let Some(s) = num(map.get("elapsed_s")) {
                    out.insert("elapsed_s".into(), s);
                }
                if let Some(f) = num(map.get("flops")) {
                    out.insert("flops".into(), f);
                }
            }
            Some("val") => {
                for (field, table) in [("source", &mut sources), ("topic", &mut topics)] {
                    if let Some(Json::Object(entries)) = map.get(field) {
                        for (name, v) in entries {
                            let loss = num(v.get("loss")).with_context(|| format!("{}:{}: {field}.{name} has no numeric `loss`", path.display(), i + 1))?;
                            table.entry(name.clone()).or_default().add(step, loss);
                        }
                    }
                }
            }
            Some("eval") => {
                let mut numbers = Vec::new();
                for (k, v) in map {
                    if !matches!(k.as_str(), "kind" | "step" | "tokens" | "elapsed_s") {
                        flatten_numbers(k, v, &mut numbers);
                    }
                }
                for (k, v) in numbers {
                    evals.entry(k).or_default().add(step, -v);
                }
            }
            Some(_) => {}
        }
    }
    for (name, t) in &sources {
        t.write(&format!("val.{name}"), &mut out);
    }
    for (name, t) in &topics {
        t.write(&format!("topic.{name}"), &mut out);
    }
    for (name, t) in &evals {
        if let Some((_, v)) = t.last {
            out.insert(format!("eval.{name}.final"), -v);
        }
        if let Some((s, v)) = t.best {
            out.insert(format!("eval.{name}.best"), -v);
            out.insert(format!("eval.{name}.best_step"), s);
        }
    }
    Ok(out)
}

/// Training FLOPs per token from a Hugging Face `config.json`:
/// 6N + 12·L·H·Q·T (N non-embedding parameters including lm_head; PaLM, appendix B).
pub fn flops_per_token(config_json: &Json, seq_len: f64) -> Option<f64> {
    let g = |k: &str| num(config_json.get(k));
    let hidden = g("hidden_size")?;
    let layers = g("num_hidden_layers")?;
    let heads = g("num_attention_heads")?;
    let kv_heads = g("num_key_value_heads").unwrap_or(heads);
    let inter = g("intermediate_size")?;
    let vocab = g("vocab_size")?;
    let head_dim = g("head_dim").unwrap_or(hidden / heads);
    let attn = hidden * head_dim * (2.0 * heads + 2.0 * kv_heads);
    let mlp = 3.0 * hidden * inter;
    let n = layers * (attn + mlp + 2.0 * hidden) + hidden + vocab * hidden;
    Some(6.0 * n + 12.0 * layers * heads * head_dim * seq_len)
}

fn estimate_flops(run_dir: &Path, tokens: f64) -> Option<f64> {
    let text = std::fs::read_to_string(run_dir.join("config.yaml")).or_else(|_| std::fs::read_to_string(run_dir.join(super::runner::RUN_CONFIG))).ok()?;
    let config: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let seq_len = config.get("batch")?.get("seq_len")?.as_f64()?;
    let pattern = run_dir.join("checkpoints").join("*").join("config.json");
    let model_config = glob::glob(&pattern.to_string_lossy()).ok()?.filter_map(|p| p.ok()).max()?;
    let json: Json = serde_json::from_str(&std::fs::read_to_string(model_config).ok()?).ok()?;
    Some(flops_per_token(&json, seq_len)? * tokens)
}

/// Collects one run. Runs without metrics yet give a row with only their axes and status.
pub fn collect_run(id: &str, axes: &[(String, String, serde_yaml::Value)], run_dir: &Path, record: Option<&RunRecord>) -> Result<RunResult> {
    let mut values = BTreeMap::new();
    for (name, _, v) in axes {
        if let Some(x) = v.as_f64() {
            values.insert(name.clone(), x);
        }
    }
    let metrics = run_dir.join("metrics.jsonl");
    if metrics.exists() {
        values.extend(read_metrics(&metrics)?);
    }
    let done_path = run_dir.join(DONE_MARKER);
    let done: Option<Json> = if done_path.exists() {
        let text = std::fs::read_to_string(&done_path).with_context(|| format!("reading {}", done_path.display()))?;
        Some(serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", done_path.display()))?)
    } else {
        None
    };
    let mut flops_source = values.contains_key("flops").then(|| "metrics".to_string());
    if let Some(d) = &done {
        for key in ["tokens", "elapsed_s", "flops"] {
            if let Some(v) = num(d.get(key)) {
                values.insert(key.into(), v);
                if key == "flops" {
                    flops_source = Some(DONE_MARKER.into());
                }
            }
        }
    }
    if flops_source.is_none() {
        if let Some(f) = values.get("tokens").and_then(|t| estimate_flops(run_dir, *t)) {
            values.insert("flops".into(), f);
            flops_source = Some("estimated: tokens x (6N + 12·L·H·Q·T) from the checkpoint's config.json".into());
        }
    }
    if let Some(r) = record {
        if r.wall_s > 0.0 {
            values.insert("wall_s".into(), r.wall_s);
        }
    }
    let status = if done.is_some() {
        "finished".to_string()
    } else {
        match record.map(|r| r.status) {
            Some(RunStatus::Failed) => "failed",
            Some(RunStatus::Interrupted) | Some(RunStatus::Running) => "interrupted",
            _ => "pending",
        }
        .to_string()
    };
    Ok(RunResult {
        id: id.to_string(),
        status,
        axes: axes.iter().map(|(n, l, _)| (n.clone(), l.clone())).collect(),
        values,
        flops_source,
    })
}

impl ResultSet {
    /// Every numeric column any run has, sorted.
    pub fn columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = self.runs.iter().flat_map(|r| r.values.keys().cloned()).collect();
        cols.sort();
        cols.dedup();
        cols
    }

    pub fn to_csv(&self) -> Result<String> {
        let cols = self.columns();
        let mut out = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
        let header = ["id".to_string(), "status".to_string()]
            .into_iter()
            .chain(self.axes.iter().map(|a| format!("{a}.label")))
            .chain(cols.iter().cloned());
        out.write_record(header)?;
        for r in &self.runs {
            let row = [r.id.clone(), r.status.clone()]
                .into_iter()
                .chain(r.axes.iter().map(|(_, label)| label.clone()))
                .chain(cols.iter().map(|c| r.values.get(c).map(|v| format!("{v}")).unwrap_or_default()));
            out.write_record(row)?;
        }
        let bytes = out.into_inner().map_err(|e| anyhow::anyhow!("writing CSV: {e}"))?;
        Ok(String::from_utf8(bytes)?)
    }

    pub fn write(&self, sweep_dir: &Path) -> Result<()> {
        write_atomic(&sweep_dir.join("results.json"), serde_json::to_string_pretty(self)?.as_bytes())?;
        write_atomic(&sweep_dir.join("results.csv"), self.to_csv()?.as_bytes())
    }

    /// Reads `results.json` (as written by `cpt sweep`) or a CSV with a header row
    /// (`id` column required; every other non-empty cell must be a number, except
    /// `status` and `*.label` columns).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading results file {}", path.display()))?;
        let is_json = path.extension().and_then(|e| e.to_str()) == Some("json") || text.trim_start().starts_with('{');
        if is_json {
            let de = &mut serde_json::Deserializer::from_str(&text);
            let set: ResultSet = serde_path_to_error::deserialize(de)
                .map_err(|e| anyhow::anyhow!("{}: at `{}`: {}", path.display(), e.path(), e.inner()))?;
            for (i, r) in set.runs.iter().enumerate() {
                if let Some((k, v)) = r.values.iter().find(|(_, v)| !v.is_finite()) {
                    bail!("{}: runs[{i}] (`{}`): value `{k}` = {v} is not finite", path.display(), r.id);
                }
            }
            return Ok(set);
        }
        Self::from_csv(&text).with_context(|| format!("in results file {}", path.display()))
    }

    fn from_csv(text: &str) -> Result<Self> {
        let records = crate::util::csv::parse_csv(text)?;
        let mut records = records.iter().filter(|r| r.fields.iter().any(|f| !f.trim().is_empty()));
        let header = records.next().context("the CSV is empty")?;
        let header_line = header.line;
        let header: Vec<&str> = header.fields.iter().map(|h| h.trim()).collect();
        let id_col = header.iter().position(|h| *h == "id").with_context(|| format!("line {header_line}: the CSV header has no `id` column"))?;
        let axes: Vec<String> = header.iter().filter_map(|h| h.strip_suffix(".label")).map(String::from).collect();
        let mut runs = Vec::new();
        for record in records {
            let i = record.line - 1;
            let cells: Vec<&str> = record.fields.iter().map(|c| c.trim()).collect();
            if cells.len() != header.len() {
                bail!("line {}: {} cells but the header has {}", i + 1, cells.len(), header.len());
            }
            let mut r = RunResult { id: cells[id_col].to_string(), status: "finished".into(), axes: Vec::new(), values: BTreeMap::new(), flops_source: None };
            for (h, c) in header.iter().zip(&cells) {
                if *h == "id" || c.is_empty() {
                    continue;
                }
                if *h == "status" {
                    r.status = c.to_string();
                } else if let Some(axis) = h.strip_suffix(".label") {
                    r.axes.push((axis.to_string(), c.to_string()));
                } else {
                    let v: f64 = c.parse().map_err(|_| anyhow::anyhow!("line {}, column `{h}`: `{c}` is not a number", i + 1))?;
                    if !v.is_finite() {
                        bail!("line {}, column `{h}`: `{c}` is not finite", i + 1);
                    }
                    r.values.insert(h.to_string(), v);
                }
            }
            runs.push(r);
        }
        Ok(ResultSet { axes, runs })
    }

    /// The runs whose numeric `column` equals `value` for every `COLUMN=VALUE` condition
    /// (e.g. `lr=0.003` to fit a mixing law at one learning rate).
    pub fn filter(&self, conditions: &[String]) -> Result<ResultSet> {
        let mut runs = self.runs.clone();
        for cond in conditions {
            let (col, v) = cond.split_once('=').with_context(|| format!("--where `{cond}`: expected COLUMN=VALUE"))?;
            let want: f64 = v.trim().parse().map_err(|_| anyhow::anyhow!("--where `{cond}`: `{v}` is not a number"))?;
            self.column(col.trim())?; // unknown columns are errors with a hint
            runs.retain(|r| r.values.get(col.trim()).is_some_and(|x| (x - want).abs() <= 1e-9 * want.abs().max(1e-300)));
        }
        if runs.is_empty() {
            bail!("no run matches {}", conditions.join(" and "));
        }
        Ok(ResultSet { axes: self.axes.clone(), runs })
    }

    /// The value of `column` for every run that has it (finished runs only), or an error
    /// naming the nearest existing column.
    pub fn column(&self, column: &str) -> Result<Vec<(usize, f64)>> {
        let cols = self.columns();
        if !cols.iter().any(|c| c == column) {
            let hint = cols
                .iter()
                .map(|c| (strsim::jaro_winkler(column, c), c))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .filter(|(s, _)| *s > 0.7)
                .map(|(_, c)| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            bail!("no column `{column}` in the results{hint}; columns: {}", cols.join(", "));
        }
        Ok(self
            .runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == "finished")
            .filter_map(|(i, r)| r.values.get(column).map(|v| (i, *v)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_labels_with_commas_and_quotes() {
        let run = |id: &str, label: &str, v: f64| RunResult {
            id: id.into(),
            status: "finished".into(),
            axes: vec![("mix".into(), label.into())],
            values: BTreeMap::from([("val.zh.final".to_string(), v), ("lr".to_string(), 1e-3)]),
            flops_source: None,
        };
        let set = ResultSet { axes: vec!["mix".into()], runs: vec![run("r0", "zh=0.2, en=0.8", 2.5), run("r1", "say \"hi\"", 2.25)] };
        let text = set.to_csv().unwrap();
        assert!(text.starts_with("id,status,mix.label,lr,val.zh.final\n"), "{text}");
        let back = ResultSet::from_csv(&text).unwrap();
        assert_eq!(back.axes, set.axes);
        for (a, b) in back.runs.iter().zip(&set.runs) {
            assert_eq!((&a.id, &a.axes, &a.values), (&b.id, &b.axes, &b.values));
        }
        let err = format!("{:#}", ResultSet::from_csv("id,lr\n\nr0,1e-3\nr1,x\n").unwrap_err());
        assert!(err.contains("line 4") && err.contains("`lr`"), "{err}");
    }
}
