//! Data mixing law (Ye et al., "Data Mixing Laws", arXiv 2403.16952, eq. 1 with M domains):
//! the validation loss of source i after training on mixture r is
//!     L_i(r) = c_i + k_i * exp( sum_j t_ij * r_j ).
//! With M mixture components only M-1 proportions are free (they sum to one); the last one
//! ("rest") is implied and absorbed into k_i, so the law is fitted on the free shares.

use super::lm::{self, Fit};
use anyhow::{bail, Result};
use serde::Serialize;

/// One source's fitted law over the named free shares.
#[derive(Debug, Clone, Serialize)]
pub struct MixingLaw {
    pub source: String,
    pub shares: Vec<String>,
    pub fit: Fit,
    /// Observed [min, max] of each free share: outside it the law extrapolates.
    pub observed_ranges: Vec<(f64, f64)>,
}

impl MixingLaw {
    pub fn predict(&self, r: &[f64]) -> f64 {
        predict(&self.fit.values(), r)
    }

    /// Standard error of the predicted loss at `r` (delta method).
    pub fn predict_std_error(&self, r: &[f64]) -> Option<f64> {
        self.fit.std_error_of(&|p: &[f64]| predict(p, r))
    }

    /// The shares at which `r` leaves the observed range, with plain words; empty when inside.
    pub fn extrapolation(&self, r: &[f64]) -> Vec<String> {
        outside_ranges(&self.shares, &self.observed_ranges, r)
    }
}

pub(crate) fn outside_ranges(names: &[String], ranges: &[(f64, f64)], r: &[f64]) -> Vec<String> {
    names
        .iter()
        .zip(ranges)
        .zip(r)
        .filter(|((_, (lo, hi)), v)| **v < lo - 1e-9 || **v > hi + 1e-9)
        .map(|((name, (lo, hi)), v)| format!("{name} = {v:.4} lies outside the swept range [{lo:.4}, {hi:.4}]"))
        .collect()
}

fn predict(p: &[f64], r: &[f64]) -> f64 {
    let exponent: f64 = p[2..].iter().zip(r).map(|(t, x)| t * x).sum();
    p[0] + p[1] * exponent.exp()
}

/// Fits one source's law. `shares[run][j]` are the free proportions of run `run`.
pub fn fit_mixing_law(source: &str, share_names: &[String], shares: &[Vec<f64>], losses: &[f64]) -> Result<MixingLaw> {
    let m = share_names.len();
    let n = losses.len();
    if n != shares.len() {
        bail!("mixing law for `{source}`: {} share rows but {n} losses", shares.len());
    }
    if let Some((i, row)) = shares.iter().enumerate().find(|(_, row)| row.len() != m) {
        bail!("mixing law for `{source}`: run {i} has {} shares, expected {m}", row.len());
    }
    if n < m + 2 {
        bail!("mixing law for `{source}` has {} parameters but only {n} runs: need at least {}", m + 2, m + 2);
    }
    if losses.iter().chain(shares.iter().flatten()).any(|v| !v.is_finite()) {
        bail!("mixing law for `{source}`: a loss or share is not a finite number");
    }
    let residual = |p: &[f64]| -> Vec<f64> { shares.iter().zip(losses).map(|(r, y)| predict(p, r) - y).collect() };
    let starts = starting_points(shares, losses);
    let mut names: Vec<String> = vec!["c".into(), "k".into()];
    names.extend(share_names.iter().map(|s| format!("t[{s}]")));
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let Some(fit) = lm::fit_best_of(&residual, &starts, &name_refs, losses) else {
        bail!("mixing law for `{source}`: no starting point gave a finite fit");
    };
    let observed_ranges = (0..m)
        .map(|j| shares.iter().map(|r| r[j]).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v))))
        .collect();
    Ok(MixingLaw { source: source.to_string(), shares: share_names.to_vec(), fit, observed_ranges })
}

/// Starting points from a log-linear fit of |L - c| for several trial asymptotes c below
/// and above the data (k > 0 and k < 0 branches).
fn starting_points(shares: &[Vec<f64>], losses: &[f64]) -> Vec<Vec<f64>> {
    let m = shares[0].len();
    let lo = losses.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = losses.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(1e-6 * lo.abs().max(1.0));
    let mut starts = Vec::new();
    for f in [0.02, 0.1, 0.3, 1.0, 3.0, 10.0] {
        for (c, sign) in [(lo - f * span, 1.0), (hi + f * span, -1.0)] {
            let design: Vec<Vec<f64>> = shares.iter().map(|r| std::iter::once(1.0).chain(r.iter().cloned()).collect()).collect();
            let z: Vec<f64> = losses.iter().map(|y| (sign * (y - c)).ln()).collect();
            if let Some(b) = lm::linear_least_squares(&design, &z) {
                let mut p = vec![c, sign * b[0].exp()];
                p.extend_from_slice(&b[1..]);
                if p.iter().all(|v| v.is_finite()) {
                    starts.push(p);
                }
            }
        }
    }
    let mut flat = vec![losses.iter().sum::<f64>() / losses.len() as f64 - span, span];
    flat.extend(std::iter::repeat(0.0).take(m));
    starts.push(flat);
    starts
}

/// What to minimise over the mixture simplex.
#[derive(Debug, Clone)]
pub enum Objective {
    /// The predicted loss of law `laws[i]`.
    Loss(usize),
    /// A weighted sum of predicted losses.
    WeightedLoss(Vec<(usize, f64)>),
    /// The proportion of component `j` (index `m` = the implied rest).
    Share(usize),
}

/// Predicted loss of `laws[law]` must stay at or below `max_loss`.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub law: usize,
    pub max_loss: f64,
}

/// The optimum found over the simplex {r_j >= 0, sum r_j <= 1} (the rest is 1 - sum).
#[derive(Debug, Clone, Serialize)]
pub struct MixtureOptimum {
    /// Free shares followed by the implied rest.
    pub shares: Vec<f64>,
    pub objective: f64,
    /// Predicted loss (and its standard error) of every law at the optimum.
    pub predicted: Vec<(String, f64, Option<f64>)>,
    /// Plain statements of where the optimum extrapolates beyond the swept shares.
    pub extrapolation: Vec<String>,
}

fn objective_value(laws: &[MixingLaw], objective: &Objective, r: &[f64]) -> f64 {
    match objective {
        Objective::Loss(i) => laws[*i].predict(r),
        Objective::WeightedLoss(w) => w.iter().map(|(i, wi)| wi * laws[*i].predict(r)).sum(),
        Objective::Share(j) => {
            if *j < r.len() {
                r[*j]
            } else {
                1.0 - r.iter().sum::<f64>()
            }
        }
    }
}

fn feasible(laws: &[MixingLaw], constraints: &[Constraint], r: &[f64]) -> bool {
    r.iter().all(|v| *v >= -1e-12) && r.iter().sum::<f64>() <= 1.0 + 1e-12 && constraints.iter().all(|c| laws[c.law].predict(r) <= c.max_loss)
}

/// Minimises `objective` subject to `constraints` over the simplex of `m` free shares
/// (`m` = laws' share count): a lattice scan (about 10^5 points) then a shrinking pattern
/// search around the best feasible point. `None` when no lattice point is feasible.
pub fn optimise_mixture(laws: &[MixingLaw], objective: &Objective, constraints: &[Constraint]) -> Option<MixtureOptimum> {
    let m = laws.first()?.shares.len();
    let steps = match m {
        1 => 20_000,
        2 => 400,
        3 => 80,
        4 => 30,
        _ => 12,
    };
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut point = vec![0usize; m];
    loop {
        let r: Vec<f64> = point.iter().map(|&k| k as f64 / steps as f64).collect();
        if feasible(laws, constraints, &r) {
            let v = objective_value(laws, objective, &r);
            if v.is_finite() && best.as_ref().map_or(true, |(b, _)| v < *b) {
                best = Some((v, r));
            }
        }
        // Next lattice point with sum <= steps (odometer).
        let mut k = 0;
        loop {
            if k == m {
                return best.map(|(v, r)| finish(laws, objective, constraints, v, r, 1.0 / steps as f64));
            }
            point[k] += 1;
            if point.iter().sum::<usize>() <= steps {
                break;
            }
            point[k] = 0;
            k += 1;
        }
    }
}

fn finish(laws: &[MixingLaw], objective: &Objective, constraints: &[Constraint], mut value: f64, mut r: Vec<f64>, mut h: f64) -> MixtureOptimum {
    for _ in 0..40 {
        let mut moved = false;
        for j in 0..r.len() {
            for dir in [-1.0, 1.0] {
                let mut trial = r.clone();
                trial[j] += dir * h;
                if feasible(laws, constraints, &trial) {
                    let v = objective_value(laws, objective, &trial);
                    if v < value {
                        value = v;
                        r = trial;
                        moved = true;
                    }
                }
            }
        }
        if !moved {
            h /= 2.0;
        }
    }
    let mut extrapolation = laws.first().map(|l| l.extrapolation(&r)).unwrap_or_default();
    extrapolation.dedup();
    let predicted = laws.iter().map(|l| (l.source.clone(), l.predict(&r), l.predict_std_error(&r))).collect();
    let rest = 1.0 - r.iter().sum::<f64>();
    let mut shares = r;
    shares.push(rest.max(0.0));
    MixtureOptimum { shares, objective: value, predicted, extrapolation }
}
