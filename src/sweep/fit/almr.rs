//! The best learning rate as a function of the additional-language mixture ratio (ALMR,
//! Xi et al., arXiv 2409.06624: sweep ratio x LR on a proxy, carry the optimal pair to the
//! full model). We fit one surface to every (ratio, LR, loss) point of the grid:
//!     L(r, lr) = b0 + b1 r [+ b2 r²] + a * (ln lr - u - v r)²
//! i.e. loss is quadratic in log-LR around an optimum whose log moves linearly with the
//! ratio, so the fitted relation is  lr*(r) = exp(u + v r).  A quadratic in log-LR is the
//! usual local model of loss against LR; the linear drift of ln lr* in r is our choice of
//! the simplest form that lets the optimum move with the ratio (see docs/sweep.md).

use super::lm::{self, Fit};
use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AlmrFit {
    pub fit: Fit,
    /// Whether the b2 r² term was fitted (needs three or more distinct ratios).
    pub quadratic_in_ratio: bool,
    pub ratio_range: (f64, f64),
    pub lr_range: (f64, f64),
}

impl AlmrFit {
    fn full_params(&self, p: &[f64]) -> [f64; 6] {
        if self.quadratic_in_ratio {
            [p[0], p[1], p[2], p[3], p[4], p[5]]
        } else {
            [p[0], p[1], 0.0, p[2], p[3], p[4]]
        }
    }

    /// The fitted best learning rate at ratio `r`, with its standard error.
    pub fn best_lr(&self, r: f64) -> (f64, Option<f64>) {
        let g = |p: &[f64]| {
            let q = self.full_params(p);
            (q[4] + q[5] * r).exp()
        };
        (g(&self.fit.values()), self.fit.std_error_of(&g))
    }

    /// Predicted loss at (r, lr).
    pub fn predict(&self, r: f64, lr: f64) -> f64 {
        surface(&self.full_params(&self.fit.values()), r, lr)
    }

    /// Plain statements of where a query leaves the swept data.
    pub fn extrapolation(&self, r: f64) -> Vec<String> {
        let mut out = Vec::new();
        let (lo, hi) = self.ratio_range;
        if r < lo - 1e-9 || r > hi + 1e-9 {
            out.push(format!("ratio {r:.4} lies outside the swept ratios [{lo:.4}, {hi:.4}]"));
        }
        let (lr, _) = self.best_lr(r);
        let (llo, lhi) = self.lr_range;
        if lr < llo * (1.0 - 1e-9) || lr > lhi * (1.0 + 1e-9) {
            out.push(format!("the fitted best LR {lr:.3e} lies outside the swept LRs [{llo:.3e}, {lhi:.3e}]"));
        }
        let curvature = self.full_params(&self.fit.values())[3];
        if curvature <= 0.0 {
            out.push("the loss has no minimum in log-LR (curvature <= 0): the best LR is at or beyond the edge of the sweep".into());
        }
        out
    }
}

fn surface(q: &[f64; 6], r: f64, lr: f64) -> f64 {
    let d = lr.ln() - q[4] - q[5] * r;
    q[0] + q[1] * r + q[2] * r * r + q[3] * d * d
}

fn distinct(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a - *b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300));
    v
}

/// Fits the surface to `(ratio, lr, loss)` points.
pub fn fit_almr(points: &[(f64, f64, f64)]) -> Result<AlmrFit> {
    if points.iter().any(|(r, lr, l)| !r.is_finite() || !l.is_finite() || !(*lr > 0.0) || !lr.is_finite()) {
        bail!("ALMR fit: every point needs a finite ratio and loss and a positive learning rate");
    }
    let ratios = distinct(points.iter().map(|p| p.0));
    let lrs = distinct(points.iter().map(|p| p.1));
    if ratios.len() < 2 || lrs.len() < 3 {
        bail!(
            "ALMR fit needs at least 2 distinct ratios and 3 distinct learning rates (a minimum in LR needs three points); got {} ratios and {} LRs",
            ratios.len(),
            lrs.len()
        );
    }
    let quadratic = ratios.len() >= 3;
    let n_params = if quadratic { 6 } else { 5 };
    if points.len() <= n_params {
        bail!("ALMR fit has {n_params} parameters but only {} runs: need at least {}", points.len(), n_params + 1);
    }
    let expand = |p: &[f64]| -> [f64; 6] {
        if quadratic {
            [p[0], p[1], p[2], p[3], p[4], p[5]]
        } else {
            [p[0], p[1], 0.0, p[2], p[3], p[4]]
        }
    };
    let losses: Vec<f64> = points.iter().map(|p| p.2).collect();
    let residual = |p: &[f64]| -> Vec<f64> {
        let q = expand(p);
        points.iter().map(|(r, lr, l)| surface(&q, *r, *lr) - l).collect()
    };
    // Start: the grid's best LR per ratio gives (u, v); the rest is then linear.
    let per_ratio_best: Vec<(f64, f64)> = ratios
        .iter()
        .map(|&r| {
            let best = points
                .iter()
                .filter(|p| (p.0 - r).abs() <= 1e-12 * r.abs().max(1e-300))
                .min_by(|a, b| a.2.total_cmp(&b.2))
                .map(|p| p.1)
                .unwrap_or(lrs[lrs.len() / 2]);
            (r, best.ln())
        })
        .collect();
    let uv = lm::linear_least_squares(&per_ratio_best.iter().map(|(r, _)| vec![1.0, *r]).collect::<Vec<_>>(), &per_ratio_best.iter().map(|p| p.1).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![per_ratio_best[0].1, 0.0]);
    let mut starts = Vec::new();
    for (du, dv) in [(0.0, 0.0), (0.5, 0.0), (-0.5, 0.0), (0.0, 1.0), (0.0, -1.0)] {
        let (u, v) = (uv[0] + du, uv[1] + dv);
        let design: Vec<Vec<f64>> = points
            .iter()
            .map(|(r, lr, _)| {
                let d = lr.ln() - u - v * r;
                if quadratic { vec![1.0, *r, r * r, d * d] } else { vec![1.0, *r, d * d] }
            })
            .collect();
        if let Some(mut b) = lm::linear_least_squares(&design, &losses) {
            b.extend([u, v]);
            starts.push(b);
        }
    }
    let names: Vec<&str> = if quadratic { vec!["b0", "b1", "b2", "a", "u", "v"] } else { vec!["b0", "b1", "a", "u", "v"] };
    let Some(fit) = lm::fit_best_of(&residual, &starts, &names, &losses) else {
        bail!("ALMR fit: no starting point gave a finite fit");
    };
    Ok(AlmrFit {
        fit,
        quadratic_in_ratio: quadratic,
        ratio_range: (ratios[0], ratios[ratios.len() - 1]),
        lr_range: (lrs[0], lrs[lrs.len() - 1]),
    })
}
