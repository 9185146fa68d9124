//! From a finished sweep to a ready-to-run config for the full model: the mixture ratio
//! from the data-mixing laws (fitted per source on each ratio's best-LR run), the LR from
//! the ALMR relation at that ratio, applied to the sweep's base config through the grid's
//! own keys, with a report of the evidence beside it. Where the data cannot carry a fit,
//! the best observed run is used instead and the report says so.

use super::analysis::{self, ConstraintSpec, LrReport, MixingReport, MixingSpec};
use crate::util::atomic::write_file_atomic as write_atomic;
use super::grid::{Axis, Grid};
use super::plan::{parse_set, BASE_COPY, GRID_COPY};
use super::results::ResultSet;
use super::yaml_path;
use anyhow::{bail, Context, Result};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct RecommendSpec {
    pub sweep_dir: PathBuf,
    /// Axis whose first key is the additional-language share (0..1).
    pub ratio_axis: String,
    /// Axis whose first key is the peak learning rate.
    pub lr_axis: Option<String>,
    /// Source whose validation loss is minimised.
    pub minimise: String,
    pub constraints: Vec<ConstraintSpec>,
    pub base: BTreeMap<String, f64>,
    pub metric: String,
    /// Overrides for the full model (model path, token budget, output dir...).
    pub sets: Vec<String>,
    pub out_dir: PathBuf,
}

pub struct Recommendation {
    pub ratio: f64,
    pub lr: Option<f64>,
    pub config_path: PathBuf,
    pub report_path: PathBuf,
    pub report: String,
}

/// Piecewise-linear value of each numeric key of `axis` at `x` (the axis' first key's
/// value), extrapolating linearly from the end segments; `log` interpolates in log space.
fn interpolate_axis(axis: &Axis, x: f64, log: bool) -> Result<Vec<(String, Value)>> {
    let xs: Vec<f64> = axis.keys[0].1.iter().map(|v| v.as_f64()).collect::<Option<_>>().with_context(|| format!("axis `{}`: its first key's values must be numbers", axis.name))?;
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|a, b| xs[*a].total_cmp(&xs[*b]));
    let t = |v: f64| if log { v.ln() } else { v };
    let mut out = Vec::new();
    for (key, values) in &axis.keys {
        let ys: Option<Vec<f64>> = values.iter().map(|v| v.as_f64()).collect();
        let Some(ys) = ys else {
            // Non-numeric key: take the nearest grid point's value.
            let nearest = order.iter().min_by(|a, b| (xs[**a] - x).abs().total_cmp(&(xs[**b] - x).abs())).expect("non-empty axis");
            out.push((key.clone(), values[*nearest].clone()));
            continue;
        };
        if xs.len() == 1 {
            out.push((key.clone(), Value::from(ys[0])));
            continue;
        }
        let seg = (0..order.len() - 1).find(|&k| x <= xs[order[k + 1]]).unwrap_or(order.len() - 2);
        let (a, b) = (order[seg], order[seg + 1]);
        let f = if xs[b] == xs[a] { 0.0 } else { (t(x) - t(xs[a])) / (t(xs[b]) - t(xs[a])) };
        let y = if log && ys[a] > 0.0 && ys[b] > 0.0 { (ys[a].ln() + f * (ys[b].ln() - ys[a].ln())).exp() } else { ys[a] + f * (ys[b] - ys[a]) };
        out.push((key.clone(), Value::from(y)));
    }
    Ok(out)
}

fn axis<'a>(grid: &'a Grid, name: &str) -> Result<&'a Axis> {
    grid.axes.iter().find(|a| a.name == name).with_context(|| format!("no axis `{name}` in the sweep's grid (axes: {})", grid.axes.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")))
}

/// The runs with the best objective loss at each distinct ratio (over learning rates).
fn best_per_ratio(results: &ResultSet, ratio_col: &str, objective_col: &str) -> Result<ResultSet> {
    let ratio = results.column(ratio_col)?;
    let obj = results.column(objective_col)?;
    let mut best: Vec<(f64, usize, f64)> = Vec::new();
    for (i, r) in ratio {
        let Some((_, l)) = obj.iter().find(|(j, _)| *j == i) else { continue };
        match best.iter_mut().find(|(x, _, _)| (*x - r).abs() < 1e-12) {
            Some(b) if *l < b.2 => *b = (r, i, *l),
            Some(_) => {}
            None => best.push((r, i, *l)),
        }
    }
    best.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(ResultSet { axes: results.axes.clone(), runs: best.iter().map(|(_, i, _)| results.runs[*i].clone()).collect() })
}

pub fn recommend(spec: &RecommendSpec) -> Result<Recommendation> {
    let dir = &spec.sweep_dir;
    let results = ResultSet::from_file(&dir.join("results.json"))?;
    let grid = Grid::from_file(&dir.join(GRID_COPY))?;
    let base_text = std::fs::read_to_string(dir.join(BASE_COPY)).with_context(|| format!("reading {}", dir.join(BASE_COPY).display()))?;
    let mut config: Value = serde_yaml::from_str(&base_text).with_context(|| format!("{}: not valid YAML", dir.join(BASE_COPY).display()))?;
    let ratio_axis = axis(&grid, &spec.ratio_axis)?;
    let objective_col = analysis::loss_column(&spec.minimise, &spec.metric);
    let mut report = String::new();
    let mut evidence = String::new();
    let _ = writeln!(report, "# Recommendation from sweep `{}`\n", dir.display());
    let _ = writeln!(report, "Objective: minimise `{objective_col}`{}.\n", if spec.constraints.is_empty() { String::new() } else { format!(" subject to {}", spec.constraints.iter().map(|c| format!("`{}`", describe(c))).collect::<Vec<_>>().join(", ")) });

    // 1. Mixture: laws on each ratio's best-LR run.
    let per_ratio = best_per_ratio(&results, &spec.ratio_axis, &objective_col)?;
    let mix_spec = MixingSpec {
        shares: vec![(spec.ratio_axis.clone(), spec.ratio_axis.clone())],
        rest: Some("rest".into()),
        sources: vec![],
        metric: spec.metric.clone(),
        minimise: Some(vec![(spec.minimise.clone(), 1.0)]),
        constraints: spec.constraints.clone(),
        base: if spec.base.is_empty() { analysis::base_losses(&results, &analysis::all_sources(&results, &spec.metric), &BTreeMap::new()) } else { spec.base.clone() },
        replay: None,
    };
    let mixing: Result<MixingReport> = analysis::mixing(&per_ratio, &mix_spec);
    let ratio = match &mixing {
        Ok(m) if m.optimum.is_some() => {
            let o = m.optimum.as_ref().expect("checked");
            let _ = writeln!(report, "## Mixture ratio: {:.4} (data mixing law)\n", o.shares[0]);
            let _ = writeln!(evidence, "```\n{}```\n", m.render());
            if !o.extrapolation.is_empty() {
                let _ = writeln!(report, "**Extrapolation:** {}.\n", o.extrapolation.join("; "));
            }
            o.shares[0]
        }
        other => {
            let why = match other {
                Ok(m) => m.notes.join("; "),
                Err(e) => format!("{e:#}"),
            };
            let (r, id) = best_observed(&results, spec, &mix_spec.base)?;
            let _ = writeln!(report, "## Mixture ratio: {r} (best observed run `{id}`)\n");
            let _ = writeln!(report, "The mixing law could not carry the choice ({why}); the ratio is the best swept run that meets the constraints, with no interpolation between grid points.\n");
            r
        }
    };
    for (k, v) in interpolate_axis(ratio_axis, ratio, false)? {
        yaml_path::set(&mut config, &k, v.clone()).map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(BASE_COPY).display()))?;
        let _ = writeln!(report, "- `{k}` = {}", yaml_scalar(&v));
    }
    let _ = writeln!(report);

    // 2. Learning rate from the ALMR relation at that ratio.
    let mut lr_value = None;
    if let Some(lr_axis_name) = &spec.lr_axis {
        let lr_axis = axis(&grid, lr_axis_name)?;
        let lr_fit: Result<LrReport> = analysis::learning_rate(&results, &spec.ratio_axis, lr_axis_name, &objective_col, &[ratio]);
        let lr = match &lr_fit {
            Ok(f) => {
                let (lr, se) = f.fit.best_lr(ratio);
                let _ = writeln!(report, "## Learning rate: {lr:.4e}{} (ALMR relation at ratio {ratio:.4})\n", se.map(|e| format!(" ± {e:.2e}")).unwrap_or_default());
                let ex = f.fit.extrapolation(ratio);
                if !ex.is_empty() {
                    let _ = writeln!(report, "**Extrapolation:** {}.\n", ex.join("; "));
                }
                let _ = writeln!(evidence, "```\n{}```\n", f.render());
                lr
            }
            Err(e) => {
                // Nearest swept ratio's best run.
                let nearest = per_ratio
                    .runs
                    .iter()
                    .min_by(|a, b| (a.values[&spec.ratio_axis] - ratio).abs().total_cmp(&(b.values[&spec.ratio_axis] - ratio).abs()))
                    .context("no finished runs")?;
                let lr = *nearest.values.get(lr_axis_name.as_str()).with_context(|| format!("run `{}` has no `{lr_axis_name}` value", nearest.id))?;
                let _ = writeln!(report, "## Learning rate: {lr:.4e} (best observed at the nearest swept ratio, run `{}`)\n", nearest.id);
                let _ = writeln!(report, "The ALMR relation could not be fitted ({e:#}); no interpolation between swept learning rates.\n");
                lr
            }
        };
        for (k, v) in interpolate_axis(lr_axis, lr, true)? {
            yaml_path::set(&mut config, &k, v.clone()).map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(BASE_COPY).display()))?;
            let _ = writeln!(report, "- `{k}` = {}", yaml_scalar(&v));
        }
        let _ = writeln!(report);
        lr_value = Some(lr);
    }

    // 3. The full model's own settings.
    if !spec.sets.is_empty() {
        let _ = writeln!(report, "## Full-model settings\n");
        for s in &spec.sets {
            let (k, v) = parse_set(s)?;
            yaml_path::set(&mut config, &k, v.clone()).map_err(|e| anyhow::anyhow!("--set {s}: {e}"))?;
            let _ = writeln!(report, "- `{k}` = {}", yaml_scalar(&v));
        }
        let _ = writeln!(report);
    }
    let _ = writeln!(
        report,
        "Proxy results carry to the full model only as far as the mixture optimum and the LR relation transfer across sizes (the premise of the ALMR and data-mixing-law papers); check the first evaluation of the full run against the predictions.\n\n## Evidence\n\n{evidence}"
    );
    let _ = writeln!(report, "Sweep runs used:\n");
    for r in &results.runs {
        let cells: Vec<String> = r.axes.iter().map(|(a, l)| format!("{a}={l}")).collect();
        let loss = r.values.get(&objective_col).map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into());
        let _ = writeln!(report, "- `{}` ({}): {} {objective_col} = {loss}", r.id, r.status, cells.join(", "));
    }
    std::fs::create_dir_all(&spec.out_dir).with_context(|| format!("creating {}", spec.out_dir.display()))?;
    let config_path = spec.out_dir.join("recommended.yaml");
    let report_path = spec.out_dir.join("recommendation.md");
    let header = format!(
        "# Recommended by `cpt fit recommend` from sweep {}: ratio {ratio:.4}{}.\n# Evidence: recommendation.md next to this file.\n",
        dir.display(),
        lr_value.map(|l| format!(", peak LR {l:.4e}")).unwrap_or_default()
    );
    write_atomic(&config_path, format!("{header}{}", serde_yaml::to_string(&config)?).as_bytes())?;
    write_atomic(&report_path, report.as_bytes())?;
    Ok(Recommendation { ratio, lr: lr_value, config_path, report_path, report })
}

fn describe(c: &ConstraintSpec) -> String {
    match c.bound {
        analysis::Bound::Absolute(v) => format!("{} <= {v}", c.source),
        analysis::Bound::BasePlus(d) => format!("{} <= base + {d}", c.source),
        analysis::Bound::BaseTimes(f) => format!("{} <= base * {f}", c.source),
    }
}

fn yaml_scalar(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_default().trim().to_string()
}

/// The best finished run under the constraints, by observed losses.
fn best_observed(results: &ResultSet, spec: &RecommendSpec, base: &BTreeMap<String, f64>) -> Result<(f64, String)> {
    let objective_col = analysis::loss_column(&spec.minimise, &spec.metric);
    let mut best: Option<(f64, f64, String)> = None;
    for r in results.runs.iter().filter(|r| r.status == "finished") {
        let (Some(l), Some(x)) = (r.values.get(&objective_col), r.values.get(&spec.ratio_axis)) else { continue };
        let mut ok = true;
        for c in &spec.constraints {
            let bound = c.resolve(base.get(&c.source).copied())?;
            match r.values.get(&analysis::loss_column(&c.source, &spec.metric)) {
                Some(v) if *v <= bound => {}
                _ => ok = false,
            }
        }
        if ok && best.as_ref().map_or(true, |b| *l < b.0) {
            best = Some((*l, *x, r.id.clone()));
        }
    }
    match best {
        Some((_, x, id)) => Ok((x, id)),
        None => bail!("no finished run meets the constraints; relax them or sweep other ratios"),
    }
}
