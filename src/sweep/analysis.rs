//! `cpt fit` on a results table: select the runs and columns a law needs, fit it, and
//! write a report that states quality, uncertainty and every extrapolation plainly.

use super::fit::almr::{fit_almr, AlmrFit};
use super::fit::compute::{fit_compute_law, ComputeLaw, ComputePrediction};
use super::fit::lm::Fit;
use super::fit::mixing::{fit_mixing_law, optimise_mixture, Constraint, MixingLaw, MixtureOptimum, Objective};
use super::results::ResultSet;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// `SOURCE<=NUMBER`, `SOURCE<=base+DELTA` or `SOURCE<=base*FACTOR`.
#[derive(Debug, Clone, Serialize)]
pub struct ConstraintSpec {
    pub source: String,
    pub bound: Bound,
}

#[derive(Debug, Clone, Serialize)]
pub enum Bound {
    Absolute(f64),
    BasePlus(f64),
    BaseTimes(f64),
}

impl ConstraintSpec {
    pub fn parse(text: &str) -> Result<Self> {
        let (source, rhs) = text.split_once("<=").with_context(|| format!("constraint `{text}`: expected SOURCE<=VALUE, SOURCE<=base+DELTA or SOURCE<=base*FACTOR"))?;
        let rhs = rhs.trim().replace(' ', "");
        let num = |s: &str| s.parse::<f64>().map_err(|_| anyhow::anyhow!("constraint `{text}`: `{s}` is not a number"));
        let bound = if let Some(d) = rhs.strip_prefix("base+") {
            Bound::BasePlus(num(d)?)
        } else if let Some(f) = rhs.strip_prefix("base*") {
            Bound::BaseTimes(num(f)?)
        } else if rhs == "base" {
            Bound::BasePlus(0.0)
        } else {
            Bound::Absolute(num(&rhs)?)
        };
        Ok(ConstraintSpec { source: source.trim().to_string(), bound })
    }

    /// The bound in loss units; `base` is the starting model's loss on the source.
    pub fn resolve(&self, base: Option<f64>) -> Result<f64> {
        let need = || base.with_context(|| format!("constraint on `{}` refers to `base`, but no base loss is known: pass --base {}=LOSS or log a step-0 validation record (val.{}.initial)", self.source, self.source, self.source));
        Ok(match self.bound {
            Bound::Absolute(v) => v,
            Bound::BasePlus(d) => need()? + d,
            Bound::BaseTimes(f) => need()? * f,
        })
    }
}

/// `zh` or `0.7*zh+0.3*en`.
pub fn parse_target(text: &str) -> Result<Vec<(String, f64)>> {
    text.split('+')
        .map(|term| {
            let term = term.trim();
            match term.split_once('*') {
                Some((w, s)) => Ok((s.trim().to_string(), w.trim().parse::<f64>().map_err(|_| anyhow::anyhow!("target `{text}`: `{w}` is not a weight"))?)),
                None => Ok((term.to_string(), 1.0)),
            }
        })
        .collect()
}

/// Column name of a source's validation loss.
pub fn loss_column(source: &str, metric: &str) -> String {
    format!("val.{source}.{metric}")
}

/// Base (starting-model) loss per source: explicit values first, else the mean of the
/// runs' step-0 validation records.
pub fn base_losses(results: &ResultSet, sources: &[String], explicit: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in sources {
        if let Some(v) = explicit.get(s) {
            out.insert(s.clone(), *v);
        } else if let Ok(col) = results.column(&loss_column(s, "initial")) {
            if !col.is_empty() {
                out.insert(s.clone(), col.iter().map(|(_, v)| v).sum::<f64>() / col.len() as f64);
            }
        }
    }
    out
}

fn fmt_param_table(fit: &Fit, out: &mut String) {
    for p in &fit.params {
        match p.std_error {
            Some(se) => {
                let _ = writeln!(out, "    {:<12} {:>14.6e}  ± {:.3e}", p.name, p.value, se);
            }
            None => {
                let _ = writeln!(out, "    {:<12} {:>14.6e}  ± n/a", p.name, p.value);
            }
        }
    }
    let q = &fit.quality;
    let _ = writeln!(out, "    quality: R² = {:.4}, RMSE = {:.4e}, {} points, {} parameters", q.r2, q.rmse, q.n_points, q.n_params);
    for w in &q.warnings {
        let _ = writeln!(out, "    warning: {w}");
    }
}

fn fmt_residuals(ids: &[String], fit: &Fit, out: &mut String) {
    let _ = writeln!(out, "    residuals (fit - observed):");
    for (id, r) in ids.iter().zip(&fit.quality.residuals) {
        let _ = writeln!(out, "      {id:<40} {r:+.4e}");
    }
}

// ---------------------------------------------------------------- mixing

#[derive(Debug, Clone)]
pub struct MixingSpec {
    /// (component name, results column holding its share).
    pub shares: Vec<(String, String)>,
    /// The implied component (1 - sum of the others), if any.
    pub rest: Option<String>,
    /// Sources whose loss is fitted (default: every `val.*` source).
    pub sources: Vec<String>,
    pub metric: String,
    pub minimise: Option<Vec<(String, f64)>>,
    pub constraints: Vec<ConstraintSpec>,
    pub base: BTreeMap<String, f64>,
    /// Component whose smallest share satisfying the constraints is reported.
    pub replay: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixingReport {
    pub components: Vec<String>,
    pub laws: Vec<MixingLaw>,
    /// Runs behind each law, in residual order.
    pub run_ids: Vec<Vec<String>>,
    pub bounds: Vec<(String, f64)>,
    pub optimum: Option<MixtureOptimum>,
    pub replay: Option<(String, MixtureOptimum)>,
    pub notes: Vec<String>,
}

pub fn all_sources(results: &ResultSet, metric: &str) -> Vec<String> {
    let suffix = format!(".{metric}");
    results.columns().iter().filter_map(|c| c.strip_prefix("val.").and_then(|c| c.strip_suffix(suffix.as_str())).map(String::from)).collect()
}

pub fn mixing(results: &ResultSet, spec: &MixingSpec) -> Result<MixingReport> {
    if spec.shares.is_empty() {
        bail!("mixing: give at least one --share COMPONENT=COLUMN");
    }
    let mut notes = Vec::new();
    let sources = if spec.sources.is_empty() { all_sources(results, &spec.metric) } else { spec.sources.clone() };
    if sources.is_empty() {
        bail!("mixing: the results have no `val.<source>.{}` columns", spec.metric);
    }
    let share_cols: Vec<Vec<(usize, f64)>> = spec.shares.iter().map(|(_, c)| results.column(c)).collect::<Result<_>>()?;
    // Rows with every share.
    let rows: Vec<usize> = share_cols[0].iter().map(|(i, _)| *i).filter(|i| share_cols.iter().all(|c| c.iter().any(|(j, _)| j == i))).collect();
    let share_of = |k: usize, i: usize| share_cols[k].iter().find(|(j, _)| *j == i).map(|(_, v)| *v).expect("row has the share");
    let mut free: Vec<(String, String)> = spec.shares.clone();
    let mut rest = spec.rest.clone();
    for &i in &rows {
        let sum: f64 = (0..free.len()).map(|k| share_of(k, i)).sum();
        if sum > 1.0 + 1e-6 || (0..free.len()).any(|k| share_of(k, i) < -1e-9) {
            bail!("mixing: run `{}` has shares summing to {sum} (each must be >= 0 and the total <= 1)", results.runs[i].id);
        }
    }
    let sums_to_one = rows.iter().all(|&i| ((0..free.len()).map(|k| share_of(k, i)).sum::<f64>() - 1.0).abs() < 1e-6);
    if sums_to_one && free.len() > 1 {
        let (name, _) = free.pop().expect("len > 1");
        notes.push(format!("the shares sum to one in every run, so `{name}` is the implied remainder (only {} shares are free)", free.len()));
        if rest.is_some() {
            bail!("mixing: the given shares already sum to one; --rest would be a zero share");
        }
        rest = Some(name);
    }
    let names: Vec<String> = free.iter().map(|(n, _)| n.clone()).collect();
    let mut components = names.clone();
    components.push(rest.clone().unwrap_or_else(|| "rest".into()));
    let mut laws = Vec::new();
    let mut run_ids = Vec::new();
    for s in &sources {
        let col = results.column(&loss_column(s, &spec.metric))?;
        let mut shares = Vec::new();
        let mut losses = Vec::new();
        let mut ids = Vec::new();
        for &i in &rows {
            if let Some((_, l)) = col.iter().find(|(j, _)| *j == i) {
                shares.push((0..free.len()).map(|k| share_of(k, i)).collect::<Vec<f64>>());
                losses.push(*l);
                ids.push(results.runs[i].id.clone());
            }
        }
        laws.push(fit_mixing_law(s, &names, &shares, &losses)?);
        run_ids.push(ids);
    }
    let law_index = |s: &str| sources.iter().position(|x| x == s).with_context(|| format!("`{s}` is not a fitted source (sources: {})", sources.join(", ")));
    let base = base_losses(results, &sources, &spec.base);
    let mut constraints = Vec::new();
    let mut bounds = Vec::new();
    for c in &spec.constraints {
        let b = c.resolve(base.get(&c.source).copied())?;
        constraints.push(Constraint { law: law_index(&c.source)?, max_loss: b });
        bounds.push((c.source.clone(), b));
    }
    let optimum = match &spec.minimise {
        Some(target) => {
            let w = target.iter().map(|(s, w)| Ok((law_index(s)?, *w))).collect::<Result<Vec<_>>>()?;
            let objective = if w.len() == 1 && w[0].1 == 1.0 { Objective::Loss(w[0].0) } else { Objective::WeightedLoss(w) };
            let o = optimise_mixture(&laws, &objective, &constraints);
            if o.is_none() {
                notes.push("no mixture satisfies the constraints according to the fitted laws".into());
            }
            o
        }
        None => None,
    };
    let replay = match &spec.replay {
        Some(name) => {
            let j = components.iter().position(|c| c == name).with_context(|| format!("--replay `{name}` is not a mixture component ({})", components.join(", ")))?;
            if constraints.is_empty() {
                bail!("--replay needs at least one --constraint (the loss that must not rise)");
            }
            let o = optimise_mixture(&laws, &Objective::Share(j), &constraints);
            if o.is_none() {
                notes.push(format!("no share of `{name}` satisfies the constraints according to the fitted laws"));
            }
            o.map(|o| (name.clone(), o))
        }
        None => None,
    };
    Ok(MixingReport { components, laws, run_ids, bounds, optimum, replay, notes })
}

impl MixingReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let free = &self.components[..self.components.len() - 1];
        let _ = writeln!(out, "Data mixing law  L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)   over free shares [{}] (remainder: {})", free.join(", "), self.components.last().expect("rest"));
        for (law, ids) in self.laws.iter().zip(&self.run_ids) {
            let _ = writeln!(out, "  source `{}`:", law.source);
            fmt_param_table(&law.fit, &mut out);
            fmt_residuals(ids, &law.fit, &mut out);
        }
        for (s, b) in &self.bounds {
            let _ = writeln!(out, "  constraint: loss({s}) <= {b:.4}");
        }
        let fmt_opt = |title: &str, o: &MixtureOptimum, out: &mut String| {
            let shares: Vec<String> = self.components.iter().zip(&o.shares).map(|(c, v)| format!("{c} = {v:.4}")).collect();
            let _ = writeln!(out, "  {title}: {}", shares.join(", "));
            for (s, l, se) in &o.predicted {
                let _ = writeln!(out, "    predicted loss({s}) = {l:.4}{}", se.map(|e| format!(" ± {e:.4}")).unwrap_or_default());
            }
            if o.extrapolation.is_empty() {
                let _ = writeln!(out, "    inside the swept shares (interpolation)");
            }
            for e in &o.extrapolation {
                let _ = writeln!(out, "    EXTRAPOLATION: {e}; the law is not checked there");
            }
        };
        if let Some(o) = &self.optimum {
            fmt_opt("best mixture", o, &mut out);
        }
        if let Some((name, o)) = &self.replay {
            fmt_opt(&format!("critical replay share of `{name}` (smallest that meets the constraints)"), o, &mut out);
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }
}

// ---------------------------------------------------------------- learning rate

#[derive(Debug, Clone, Serialize)]
pub struct LrReport {
    pub loss_column: String,
    pub fit: AlmrFit,
    pub run_ids: Vec<String>,
    /// (ratio, best LR, its standard error, extrapolation statements).
    pub best: Vec<(f64, f64, Option<f64>, Vec<String>)>,
}

pub fn learning_rate(results: &ResultSet, ratio_col: &str, lr_col: &str, loss_col: &str, at: &[f64]) -> Result<LrReport> {
    let ratio = results.column(ratio_col)?;
    let lr = results.column(lr_col)?;
    let loss = results.column(loss_col)?;
    let mut points = Vec::new();
    let mut ids = Vec::new();
    for (i, r) in &ratio {
        let (Some((_, l)), Some((_, y))) = (lr.iter().find(|(j, _)| j == i), loss.iter().find(|(j, _)| j == i)) else { continue };
        points.push((*r, *l, *y));
        ids.push(results.runs[*i].id.clone());
    }
    let fit = fit_almr(&points).with_context(|| format!("fitting `{loss_col}` over `{ratio_col}` x `{lr_col}`"))?;
    let mut ratios: Vec<f64> = points.iter().map(|p| p.0).collect();
    ratios.extend_from_slice(at);
    ratios.sort_by(f64::total_cmp);
    ratios.dedup();
    let best = ratios
        .into_iter()
        .map(|r| {
            let (lr, se) = fit.best_lr(r);
            (r, lr, se, fit.extrapolation(r))
        })
        .collect();
    Ok(LrReport { loss_column: loss_col.to_string(), fit, run_ids: ids, best })
}

impl LrReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Best LR against the mixture ratio (ALMR):  {} = b0 + b1 r{} + a (ln lr - u - v r)²,  lr*(r) = exp(u + v r)",
            self.loss_column,
            if self.fit.quadratic_in_ratio { " + b2 r²" } else { "" }
        );
        fmt_param_table(&self.fit.fit, &mut out);
        fmt_residuals(&self.run_ids, &self.fit.fit, &mut out);
        for (r, lr, se, ex) in &self.best {
            let _ = writeln!(out, "  ratio {r:.4}: best LR {lr:.4e}{}", se.map(|e| format!(" ± {e:.2e}")).unwrap_or_default());
            for e in ex {
                let _ = writeln!(out, "    EXTRAPOLATION: {e}");
            }
        }
        out
    }
}

// ---------------------------------------------------------------- compute

#[derive(Debug, Clone, Serialize)]
pub struct ComputeReport {
    pub loss_column: String,
    pub law: ComputeLaw,
    pub run_ids: Vec<String>,
    pub prediction: Option<ComputePrediction>,
    pub target_note: Option<String>,
}

pub fn compute(results: &ResultSet, flops_col: &str, loss_col: &str, target_flops: Option<f64>, target_note: Option<String>) -> Result<ComputeReport> {
    let flops = results.column(flops_col)?;
    let loss = results.column(loss_col)?;
    let mut points = Vec::new();
    let mut ids = Vec::new();
    for (i, c) in &flops {
        if let Some((_, l)) = loss.iter().find(|(j, _)| j == i) {
            points.push((*c, *l));
            ids.push(results.runs[*i].id.clone());
        }
    }
    let law = fit_compute_law(&points).with_context(|| format!("fitting `{loss_col}` against `{flops_col}`"))?;
    let prediction = target_flops.map(|c| law.predict(c));
    Ok(ComputeReport { loss_column: loss_col.to_string(), law, run_ids: ids, prediction, target_note })
}

impl ComputeReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Loss against compute:  {} = E + A * C^(-alpha)   (C0 = {:.4e} FLOPs; A' = A C0^-alpha)", self.loss_column, self.law.c0);
        fmt_param_table(&self.law.fit, &mut out);
        let _ = writeln!(out, "    A (raw FLOPs) = {:.4e}{}", self.law.amplitude, self.law.amplitude_std_error.map(|e| format!(" ± {e:.3e}")).unwrap_or_default());
        fmt_residuals(&self.run_ids, &self.law.fit, &mut out);
        if let Some(p) = &self.prediction {
            if let Some(n) = &self.target_note {
                let _ = writeln!(out, "  target: {n}");
            }
            let _ = writeln!(out, "  predicted loss at {:.4e} FLOPs: {:.4}{}", p.flops, p.loss, p.std_error.map(|e| format!(" ± {e:.4}")).unwrap_or_default());
            match &p.extrapolation {
                Some(e) => {
                    let _ = writeln!(out, "    EXTRAPOLATION: {e}");
                }
                None => {
                    let _ = writeln!(out, "    inside the fitted compute range (interpolation)");
                }
            }
        }
        out
    }
}
