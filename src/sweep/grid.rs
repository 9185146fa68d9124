//! Grid files: which config keys a sweep varies, and their expansion into runs.
//!
//! ```yaml
//! axes:                      # crossed with each other; the first axis varies slowest
//!   zh_ratio:                # axis name: a results column and part of each run id
//!     data.groups[name=zh].weight: [0.2, 0.5, 0.8]   # keys inside one axis are zipped
//!     data.groups[name=en].weight: [0.8, 0.5, 0.2]
//!   lr:
//!     optim.lr: [1.0e-4, 3.0e-4]
//! fixed:                     # optional: set in every run
//!   train.max_tokens: 200000
//! labels:                    # optional: names for an axis' values in run ids
//!   zh_ratio: [low, mid, high]
//! out_dir_key: run.out_dir   # optional: where each run's directory goes in its config
//! ```
//! Run ids are built from axis names and value labels (`zh_ratio-0.2__lr-0.0001`), so they
//! stay the same when a grid gains values and finished runs are found again.

use super::yaml_path;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    axes: Mapping,
    #[serde(default)]
    fixed: Mapping,
    #[serde(default)]
    labels: Mapping,
    #[serde(default)]
    out_dir_key: Option<String>,
}

/// One axis: zipped keys, each with one value per point on the axis.
#[derive(Debug, Clone)]
pub struct Axis {
    pub name: String,
    pub keys: Vec<(String, Vec<Value>)>,
    pub labels: Vec<String>,
}

impl Axis {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A parsed grid.
#[derive(Debug, Clone)]
pub struct Grid {
    pub axes: Vec<Axis>,
    pub fixed: Vec<(String, Value)>,
    pub out_dir_key: String,
    /// Where the grid came from, for error messages.
    pub source: String,
}

/// One run of the expanded grid.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub id: String,
    /// Axis name -> (label, value of the axis' first key).
    pub axis_values: Vec<(String, String, Value)>,
    /// Every key this run sets, in order (fixed first).
    pub overrides: Vec<(String, Value)>,
    /// The resolved config, `out_dir_key` not yet set (the runner sets it).
    pub config: Value,
}

const DEFAULT_OUT_DIR_KEY: &str = "run.out_dir";

fn label_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Keeps run ids portable as directory names.
fn sanitise(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+') { c } else { '_' }).collect()
}

impl Grid {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading grid file {}", path.display()))?;
        let mut grid = Self::from_yaml_str(&text).with_context(|| format!("in grid file {}", path.display()))?;
        grid.source = path.display().to_string();
        Ok(grid)
    }

    pub fn from_yaml_str(text: &str) -> Result<Self> {
        let de = serde_yaml::Deserializer::from_str(text);
        let file: GridFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("{}: {}", if path == "." { "grid".to_string() } else { path }, e.into_inner())
        })?;
        if file.axes.is_empty() {
            bail!("axes: the grid has no axes");
        }
        let mut axes = Vec::new();
        for (name, spec) in &file.axes {
            let name = name.as_str().with_context(|| format!("axes: axis name {name:?} is not a string"))?.to_string();
            let Value::Mapping(spec) = spec else {
                bail!("axes.{name}: expected a mapping of config paths to lists of values");
            };
            if spec.is_empty() {
                bail!("axes.{name}: the axis sets no config keys");
            }
            let mut keys = Vec::new();
            for (key, values) in spec {
                let key = key.as_str().with_context(|| format!("axes.{name}: key {key:?} is not a string"))?.to_string();
                yaml_path::parse(&key).map_err(|e| anyhow::anyhow!("axes.{name}.{key}: {e}"))?;
                let Value::Sequence(values) = values else {
                    bail!("axes.{name}.{key}: expected a list of values, got {}", serde_yaml::to_string(values).unwrap_or_default().trim());
                };
                if values.is_empty() {
                    bail!("axes.{name}.{key}: the list of values is empty");
                }
                if let Some((first_key, first)) = keys.first() {
                    let first: &Vec<Value> = first;
                    if first.len() != values.len() {
                        bail!("axes.{name}.{key}: {} values, but `{first_key}` in the same (zipped) axis has {}", values.len(), first.len());
                    }
                }
                keys.push((key, values.clone()));
            }
            let labels = match file.labels.get(name.as_str()) {
                Some(Value::Sequence(l)) => {
                    if l.len() != keys[0].1.len() {
                        bail!("labels.{name}: {} labels for {} values", l.len(), keys[0].1.len());
                    }
                    l.iter().map(|v| label_of(v).with_context(|| format!("labels.{name}: labels must be scalars"))).collect::<Result<Vec<_>>>()?
                }
                Some(_) => bail!("labels.{name}: expected a list"),
                None => keys[0]
                    .1
                    .iter()
                    .enumerate()
                    .map(|(i, v)| label_of(v).unwrap_or_else(|| format!("v{i}")))
                    .collect(),
            };
            let mut seen = std::collections::HashSet::new();
            for l in &labels {
                if !seen.insert(sanitise(l)) {
                    bail!("axes.{name}: two values share the label `{l}`; give distinct `labels.{name}`");
                }
            }
            axes.push(Axis { name, keys, labels });
        }
        for label_axis in file.labels.keys() {
            let n = label_axis.as_str().unwrap_or_default();
            if !axes.iter().any(|a| a.name == n) {
                bail!("labels.{n}: there is no axis named `{n}`");
            }
        }
        let mut fixed = Vec::new();
        for (key, value) in &file.fixed {
            let key = key.as_str().with_context(|| format!("fixed: key {key:?} is not a string"))?.to_string();
            yaml_path::parse(&key).map_err(|e| anyhow::anyhow!("fixed.{key}: {e}"))?;
            fixed.push((key, value.clone()));
        }
        Ok(Grid { axes, fixed, out_dir_key: file.out_dir_key.unwrap_or_else(|| DEFAULT_OUT_DIR_KEY.to_string()), source: "grid".into() })
    }

    /// Number of runs (the product of the axis lengths).
    pub fn size(&self) -> usize {
        self.axes.iter().map(Axis::len).product()
    }

    /// Expands the grid over `base` (the parsed base config). Every key must exist in the
    /// base config; errors name the grid file's key.
    pub fn expand(&self, base: &Value) -> Result<Vec<PlannedRun>> {
        let mut runs = Vec::with_capacity(self.size());
        let mut index = vec![0usize; self.axes.len()];
        loop {
            let mut config = base.clone();
            let mut overrides = Vec::new();
            for (key, value) in &self.fixed {
                yaml_path::set(&mut config, key, value.clone()).map_err(|e| anyhow::anyhow!("{}: fixed.{key}: {e}", self.source))?;
                overrides.push((key.clone(), value.clone()));
            }
            let mut axis_values = Vec::new();
            let mut id_parts = Vec::new();
            for (axis, &i) in self.axes.iter().zip(&index) {
                for (key, values) in &axis.keys {
                    yaml_path::set(&mut config, key, values[i].clone()).map_err(|e| anyhow::anyhow!("{}: axes.{}.{key}: {e}", self.source, axis.name))?;
                    overrides.push((key.clone(), values[i].clone()));
                }
                axis_values.push((axis.name.clone(), axis.labels[i].clone(), axis.keys[0].1[i].clone()));
                id_parts.push(format!("{}-{}", sanitise(&axis.name), sanitise(&axis.labels[i])));
            }
            runs.push(PlannedRun { id: id_parts.join("__"), axis_values, overrides, config });
            // Odometer: the last axis varies fastest.
            let mut k = self.axes.len();
            loop {
                if k == 0 {
                    return Ok(runs);
                }
                k -= 1;
                index[k] += 1;
                if index[k] < self.axes[k].len() {
                    break;
                }
                index[k] = 0;
            }
        }
    }
}
