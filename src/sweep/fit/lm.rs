//! Levenberg-Marquardt nonlinear least squares with the quality numbers every fit reports:
//! parameter covariance s²(JᵀJ)⁻¹ from the Jacobian at the optimum, standard errors, R²,
//! RMSE and residuals (as in Numerical Recipes §15.5 and scipy's `curve_fit`).

use super::linalg;
use serde::Serialize;

/// Residuals `model(params) - observed`, one per observation.
pub trait Residuals {
    fn residuals(&self, params: &[f64]) -> Vec<f64>;
}

impl<F: Fn(&[f64]) -> Vec<f64>> Residuals for F {
    fn residuals(&self, params: &[f64]) -> Vec<f64> {
        self(params)
    }
}

/// Central-difference Jacobian of the residuals (rows = observations).
pub fn jacobian(f: &dyn Residuals, params: &[f64]) -> Vec<Vec<f64>> {
    let n = f.residuals(params).len();
    let mut j = vec![vec![0.0; params.len()]; n];
    let mut p = params.to_vec();
    for k in 0..params.len() {
        let h = 1e-6 * params[k].abs().max(1e-3);
        p[k] = params[k] + h;
        let plus = f.residuals(&p);
        p[k] = params[k] - h;
        let minus = f.residuals(&p);
        p[k] = params[k];
        for i in 0..n {
            j[i][k] = (plus[i] - minus[i]) / (2.0 * h);
        }
    }
    j
}

fn ssr(r: &[f64]) -> f64 {
    r.iter().map(|v| v * v).sum()
}

/// Where the iteration stopped.
#[derive(Debug, Clone)]
pub struct LmSolution {
    pub params: Vec<f64>,
    pub ssr: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// Minimises the sum of squared residuals from `start`. Non-finite trial points are
/// treated as uphill steps, so models with `exp` cannot escape to infinity.
pub fn minimise(f: &dyn Residuals, start: &[f64], max_iterations: usize) -> LmSolution {
    let mut p = start.to_vec();
    let mut r = f.residuals(&p);
    let mut cost = ssr(&r);
    if !cost.is_finite() {
        return LmSolution { params: p, ssr: f64::INFINITY, iterations: 0, converged: false };
    }
    let mut lambda = 1e-3;
    let mut converged = false;
    let mut it = 0;
    while it < max_iterations {
        it += 1;
        let j = jacobian(f, &p);
        let g = linalg::transpose_mul(&j, &r);
        let jtj = linalg::gram(&j);
        if g.iter().map(|v| v.abs()).fold(0.0, f64::max) < 1e-15 {
            converged = true;
            break;
        }
        let mut improved = false;
        while lambda < 1e16 {
            let mut a = jtj.clone();
            for (k, row) in a.iter_mut().enumerate() {
                row[k] += lambda * jtj[k][k].max(1e-12);
            }
            let neg_g: Vec<f64> = g.iter().map(|v| -v).collect();
            let Some(step) = linalg::solve(&a, &neg_g) else {
                lambda *= 10.0;
                continue;
            };
            let trial: Vec<f64> = p.iter().zip(&step).map(|(a, b)| a + b).collect();
            let tr = f.residuals(&trial);
            let tcost = ssr(&tr);
            if tcost.is_finite() && tcost < cost {
                let rel = (cost - tcost) / cost.max(f64::MIN_POSITIVE);
                let step_small = step.iter().zip(&p).all(|(s, v)| s.abs() <= 1e-10 * (v.abs() + 1e-10));
                p = trial;
                r = tr;
                cost = tcost;
                lambda = (lambda / 10.0).max(1e-12);
                improved = true;
                if rel < 1e-14 || step_small {
                    converged = true;
                }
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            // No downhill step at any damping: a (local) minimum to working precision.
            converged = true;
            break;
        }
        if converged {
            break;
        }
    }
    LmSolution { params: p, ssr: cost, iterations: it, converged }
}

/// One fitted parameter with its standard error (None when the fit has no spare
/// degrees of freedom or the Jacobian is singular there).
#[derive(Debug, Clone, Serialize)]
pub struct FittedParam {
    pub name: String,
    pub value: f64,
    pub std_error: Option<f64>,
}

/// Fit quality common to every law.
#[derive(Debug, Clone, Serialize)]
pub struct FitQuality {
    pub n_points: usize,
    pub n_params: usize,
    pub r2: f64,
    pub rmse: f64,
    pub residuals: Vec<f64>,
    pub converged: bool,
    /// Plain-language caveats (too few points, singular covariance, ...).
    pub warnings: Vec<String>,
}

/// A converged fit: parameters, covariance and quality.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub params: Vec<FittedParam>,
    #[serde(skip)]
    pub covariance: Option<Vec<Vec<f64>>>,
    pub quality: FitQuality,
}

impl Fit {
    pub fn values(&self) -> Vec<f64> {
        self.params.iter().map(|p| p.value).collect()
    }

    /// Standard error of a derived quantity `g(params)` by the delta method
    /// (gradient by central differences).
    pub fn std_error_of(&self, g: &dyn Fn(&[f64]) -> f64) -> Option<f64> {
        let cov = self.covariance.as_ref()?;
        let p = self.values();
        let mut grad = vec![0.0; p.len()];
        let mut q = p.clone();
        for k in 0..p.len() {
            let h = 1e-6 * p[k].abs().max(1e-3);
            q[k] = p[k] + h;
            let up = g(&q);
            q[k] = p[k] - h;
            let down = g(&q);
            q[k] = p[k];
            grad[k] = (up - down) / (2.0 * h);
        }
        let mut var = 0.0;
        for a in 0..p.len() {
            for b in 0..p.len() {
                var += grad[a] * cov[a][b] * grad[b];
            }
        }
        (var.is_finite() && var >= 0.0).then(|| var.sqrt())
    }
}

/// Runs LM from every start, keeps the lowest residual sum, and computes the quality
/// numbers. `observed` is used only for R² (residuals already include it).
pub fn fit_best_of(f: &dyn Residuals, starts: &[Vec<f64>], names: &[&str], observed: &[f64]) -> Option<Fit> {
    let best = starts
        .iter()
        .map(|s| minimise(f, s, 500))
        .filter(|s| s.ssr.is_finite())
        .min_by(|a, b| a.ssr.total_cmp(&b.ssr))?;
    Some(summarise(f, best, names, observed))
}

fn summarise(f: &dyn Residuals, sol: LmSolution, names: &[&str], observed: &[f64]) -> Fit {
    let residuals = f.residuals(&sol.params);
    let n = residuals.len();
    let p = sol.params.len();
    let mean = observed.iter().sum::<f64>() / n.max(1) as f64;
    let sst: f64 = observed.iter().map(|y| (y - mean).powi(2)).sum();
    let r2 = if sst > 0.0 { 1.0 - sol.ssr / sst } else { f64::NAN };
    let rmse = (sol.ssr / n.max(1) as f64).sqrt();
    let mut warnings = Vec::new();
    let covariance = if n > p {
        let s2 = sol.ssr / (n - p) as f64;
        let j = jacobian(f, &sol.params);
        match linalg::invert(&linalg::gram(&j)) {
            Some(inv) => Some(inv.iter().map(|row| row.iter().map(|v| v * s2).collect()).collect::<Vec<Vec<f64>>>()),
            None => {
                warnings.push("the Jacobian is singular at the optimum: some parameters are not identified by these data; no standard errors".into());
                None
            }
        }
    } else {
        warnings.push(format!("{n} points for {p} parameters: the fit interpolates exactly and has no uncertainty estimate; add runs"));
        None
    };
    if !sol.converged {
        warnings.push("the optimiser stopped at its iteration limit before converging".into());
    }
    let params = names
        .iter()
        .zip(&sol.params)
        .enumerate()
        .map(|(k, (name, &value))| FittedParam {
            name: name.to_string(),
            value,
            std_error: covariance.as_ref().map(|c: &Vec<Vec<f64>>| c[k][k].max(0.0).sqrt()),
        })
        .collect();
    Fit {
        params,
        covariance,
        quality: FitQuality { n_points: n, n_params: p, r2, rmse, residuals, converged: sol.converged, warnings },
    }
}
