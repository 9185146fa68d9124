//! Loss against training compute across model sizes, L(C) = E + A * C^(-alpha)
//! (the form MindLLM, arXiv 2310.15777, fits on 10M-500M models to predict a 3B run).
//! C is normalised by the geometric mean of the data (C0) so that the fitted amplitude is
//! of order one; A is reported in raw FLOPs units as A = A' * C0^alpha.

use super::lm::{self, Fit};
use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ComputeLaw {
    /// Parameters E, A' (amplitude at C = C0), alpha.
    pub fit: Fit,
    pub c0: f64,
    /// A = A' * C0^alpha (raw FLOPs units) and its standard error.
    pub amplitude: f64,
    pub amplitude_std_error: Option<f64>,
    pub compute_range: (f64, f64),
}

/// A prediction at one compute budget.
#[derive(Debug, Clone, Serialize)]
pub struct ComputePrediction {
    pub flops: f64,
    pub loss: f64,
    pub std_error: Option<f64>,
    /// How many times beyond the largest fitted compute (1 or less = inside the data).
    pub extrapolation_factor: f64,
    pub extrapolation: Option<String>,
}

fn predict(p: &[f64], c_over_c0: f64) -> f64 {
    p[0] + p[1] * c_over_c0.powf(-p[2])
}

impl ComputeLaw {
    pub fn predict(&self, flops: f64) -> ComputePrediction {
        let x = flops / self.c0;
        let loss = predict(&self.fit.values(), x);
        let std_error = self.fit.std_error_of(&|p: &[f64]| predict(p, x));
        let (lo, hi) = self.compute_range;
        let extrapolation_factor = flops / hi;
        let extrapolation = if flops > hi * (1.0 + 1e-9) {
            Some(format!(
                "extrapolation: {flops:.3e} FLOPs is {extrapolation_factor:.1}x the largest fitted run ({hi:.3e}); the law is assumed to hold that far, nothing in the data checks it"
            ))
        } else if flops < lo * (1.0 - 1e-9) {
            Some(format!("extrapolation: {flops:.3e} FLOPs is below the smallest fitted run ({lo:.3e})"))
        } else {
            None
        };
        ComputePrediction { flops, loss, std_error, extrapolation_factor, extrapolation }
    }
}

/// Fits the law to `(flops, loss)` points (at least four, two or more distinct budgets).
pub fn fit_compute_law(points: &[(f64, f64)]) -> Result<ComputeLaw> {
    if points.iter().any(|(c, l)| !(*c > 0.0) || !c.is_finite() || !l.is_finite()) {
        bail!("compute law: every point needs positive finite FLOPs and a finite loss");
    }
    if points.len() < 4 {
        bail!("compute law has 3 parameters but only {} runs: need at least 4 (several model sizes)", points.len());
    }
    let c0 = (points.iter().map(|p| p.0.ln()).sum::<f64>() / points.len() as f64).exp();
    let xs: Vec<f64> = points.iter().map(|p| p.0 / c0).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    let lo = ys.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(1e-9);
    let mut starts = Vec::new();
    for f in [0.01, 0.1, 0.3, 1.0, 3.0, 10.0] {
        let e = lo - f * span;
        let design: Vec<Vec<f64>> = xs.iter().map(|x| vec![1.0, x.ln()]).collect();
        let z: Vec<f64> = ys.iter().map(|y| (y - e).ln()).collect();
        if let Some(b) = lm::linear_least_squares(&design, &z) {
            let p = vec![e, b[0].exp(), -b[1]];
            if p.iter().all(|v| v.is_finite()) {
                starts.push(p);
            }
        }
    }
    let residual = |p: &[f64]| -> Vec<f64> { xs.iter().zip(&ys).map(|(x, y)| predict(p, *x) - y).collect() };
    let Some(fit) = lm::fit_best_of(&residual, &starts, &["E", "A_at_C0", "alpha"], &ys) else {
        bail!("compute law: no starting point gave a finite fit");
    };
    let amp = |p: &[f64]| p[1] * c0.powf(p[2]);
    let amplitude = amp(&fit.values());
    let amplitude_std_error = fit.std_error_of(&amp);
    let range = points.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
    Ok(ComputeLaw { fit, c0, amplitude, amplitude_std_error, compute_range: range })
}
