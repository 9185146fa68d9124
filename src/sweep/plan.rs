//! The sweep as a whole: load the base config (with `--set` overrides) and the grid, lay
//! the runs out under the sweep directory, run them, collect results and draw charts.

use crate::util::atomic::write_file_atomic as write_atomic;
use super::charts;
use super::grid::Grid;
use super::results::{collect_run, ResultSet};
use super::runner::{self, PreparedRun, RunnerOptions, SweepReport, SweepState};
use super::yaml_path;
use anyhow::{Context, Result};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// Copies of the inputs kept in the sweep directory (what `cpt fit recommend` reads).
pub const BASE_COPY: &str = "base.yaml";
pub const GRID_COPY: &str = "grid.yaml";

/// Parses `key=value` overrides; the value is read as a YAML scalar (`3e-4`, `true`, `zh`).
pub fn parse_set(item: &str) -> Result<(String, Value)> {
    // The first `=` outside brackets (selectors such as `[name=zh]` contain one).
    let mut depth = 0i32;
    let split = item.char_indices().find(|&(_, c)| {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        c == '=' && depth == 0
    });
    let (k, v) = split.map(|(i, _)| (&item[..i], &item[i + 1..])).with_context(|| format!("--set `{item}`: expected path.to.key=value"))?;
    let value: Value = serde_yaml::from_str(v).with_context(|| format!("--set `{item}`: the value is not valid YAML"))?;
    Ok((k.trim().to_string(), value))
}

/// Reads the base config and applies `--set` overrides (keys must exist).
pub fn load_base(path: &Path, sets: &[String]) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading base config {}", path.display()))?;
    let mut base: Value = serde_yaml::from_str(&text).with_context(|| format!("{}: not valid YAML", path.display()))?;
    if !base.is_mapping() {
        anyhow::bail!("{}: the config must be a YAML mapping", path.display());
    }
    for s in sets {
        let (k, v) = parse_set(s)?;
        yaml_path::set(&mut base, &k, v).map_err(|e| anyhow::anyhow!("--set {s}: {} ({})", e, path.display()))?;
    }
    Ok(base)
}

/// A sweep laid out on disk, ready to run.
pub struct Sweep {
    pub dir: PathBuf,
    pub grid: Grid,
    pub runs: Vec<PreparedRun>,
}

impl Sweep {
    /// Expands the grid, writes each run's config and copies of the inputs.
    pub fn prepare(dir: &Path, base_path: &Path, sets: &[String], grid_path: &Path) -> Result<Self> {
        let base = load_base(base_path, sets)?;
        let grid = Grid::from_file(grid_path)?;
        let plan = grid.expand(&base).with_context(|| format!("expanding grid {} over {}", grid_path.display(), base_path.display()))?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating sweep directory {}", dir.display()))?;
        write_atomic(&dir.join(BASE_COPY), serde_yaml::to_string(&base)?.as_bytes())?;
        let grid_text = std::fs::read_to_string(grid_path).with_context(|| format!("reading {}", grid_path.display()))?;
        write_atomic(&dir.join(GRID_COPY), grid_text.as_bytes())?;
        let runs = runner::prepare_runs(dir, plan, &grid.out_dir_key)?;
        Ok(Sweep { dir: dir.to_path_buf(), grid, runs })
    }

    /// Reads every unfinished run's config as `cpt train` will, before any run starts: a
    /// mistake shared by all runs (a missing section, a misspelled key in the base config or
    /// the grid) is one error naming the run, the file and the field, not N failed runs.
    pub fn validate_configs(&self) -> Result<()> {
        for run in self.runs.iter().filter(|r| !r.finished) {
            let text = serde_yaml::to_string(&run.plan.config)?;
            crate::config::load::parse_config(&text, &run.config_path.display().to_string(), &[])
                .with_context(|| format!("run `{}`: its config is not a valid training config; no run was started", run.plan.id))?;
        }
        Ok(())
    }

    pub fn run(&self, opts: &RunnerOptions) -> Result<SweepReport> {
        runner::run_sweep(&self.dir, &self.runs, opts)
    }

    /// Collects every run's metrics into `results.json` / `results.csv`.
    pub fn collect(&self) -> Result<ResultSet> {
        let state = SweepState::load(&self.dir)?;
        let runs = self
            .runs
            .iter()
            .map(|r| collect_run(&r.plan.id, &r.plan.axis_values, &r.dir, state.runs.get(&r.plan.id)))
            .collect::<Result<Vec<_>>>()?;
        let set = ResultSet { axes: self.grid.axes.iter().map(|a| a.name.clone()).collect(), runs };
        set.write(&self.dir)?;
        Ok(set)
    }

    /// Heat maps of every `val.<source>.final` over the first two axes and loss curves per
    /// source, into `<dir>/charts/`. Returns the files written.
    pub fn charts(&self, results: &ResultSet, ext: &str) -> Result<Vec<PathBuf>> {
        let out = self.dir.join("charts");
        std::fs::create_dir_all(&out)?;
        let mut written = Vec::new();
        let sources: Vec<String> = results
            .columns()
            .iter()
            .filter_map(|c| c.strip_prefix("val.").and_then(|c| c.strip_suffix(".final")).map(String::from))
            .collect();
        if results.axes.len() >= 2 {
            for s in &sources {
                let metric = format!("val.{s}.final");
                let path = out.join(format!("heatmap_{}.{ext}", sanitise(&metric)));
                let h = charts::Heatmap { x_axis: &results.axes[0], y_axis: &results.axes[1], metric: &metric, lower_is_better: true };
                charts::heatmap(results, &h, &path)?;
                written.push(path);
            }
        }
        for s in &sources {
            let curves = self
                .runs
                .iter()
                .map(|r| Ok((r.plan.id.clone(), charts::read_val_curve(&r.dir.join("metrics.jsonl"), s).unwrap_or_default())))
                .collect::<Result<Vec<_>>>()?;
            let path = out.join(format!("curves_val_{}.{ext}", sanitise(s)));
            charts::curves(s, &curves, &path)?;
            written.push(path);
        }
        Ok(written)
    }
}

fn sanitise(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}
