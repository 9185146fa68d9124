//! Nonlinear least squares for the fitted laws: MINPACK's Levenberg-Marquardt (the
//! `levenberg-marquardt` crate on `nalgebra`) from several starting points, and the quality
//! numbers every fit reports: parameter covariance s²(JᵀJ)⁻¹ from the Jacobian at the optimum
//! (through its SVD, with the rank cut scipy's `curve_fit` uses), standard errors, R², RMSE and
//! residuals.
use levenberg_marquardt::{LeastSquaresProblem, LevenbergMarquardt, TerminationReason};
use nalgebra::{DMatrix, DVector, Dyn, Owned};
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

/// Central-difference Jacobian of the residuals (rows = observations). The laws give no
/// analytic derivatives.
pub fn jacobian(f: &dyn Residuals, params: &[f64]) -> DMatrix<f64> {
    let n = f.residuals(params).len();
    let mut j = DMatrix::zeros(n, params.len());
    let mut p = params.to_vec();
    for k in 0..params.len() {
        let h = 1e-6 * params[k].abs().max(1e-3);
        p[k] = params[k] + h;
        let plus = f.residuals(&p);
        p[k] = params[k] - h;
        let minus = f.residuals(&p);
        p[k] = params[k];
        for i in 0..n {
            j[(i, k)] = (plus[i] - minus[i]) / (2.0 * h);
        }
    }
    j
}

/// Ordinary least squares `min |X b - y|²` (rows of `x` are observations) through the SVD;
/// `None` when `x` has not full column rank (numpy's `matrix_rank` tolerance).
pub fn linear_least_squares(x: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let p = x.first().map_or(0, Vec::len);
    let svd = DMatrix::from_fn(x.len(), p, |i, k| x[i][k]).svd(true, true);
    if rank_deficient(&svd.singular_values, x.len().max(p)) {
        return None;
    }
    let b = svd.solve(&DVector::from_column_slice(y), 0.0).ok()?;
    Some(b.iter().copied().collect())
}

/// Whether the smallest singular value is below `eps · max(m, n) · σ_max`.
fn rank_deficient(singular_values: &DVector<f64>, size: usize) -> bool {
    let max = singular_values.max();
    let cut = f64::EPSILON * size as f64 * max;
    max <= 0.0 || singular_values.iter().any(|&s| s <= cut)
}

/// A Jacobian whose condition number is above this identifies some parameter combination
/// only loosely: (JᵀJ) then has a pivot below 1e-13 of its largest entry.
const NEARLY_SINGULAR: f64 = 3.0e6;

fn ssr(r: &[f64]) -> f64 {
    r.iter().map(|v| v * v).sum()
}

/// Where the iteration stopped.
#[derive(Debug, Clone)]
pub struct LmSolution {
    pub params: Vec<f64>,
    pub ssr: f64,
    /// Residual evaluations the solver made.
    pub evaluations: usize,
    pub converged: bool,
    /// Why it stopped, when not converged.
    pub stopped_early: Option<String>,
}

/// The residual function as the crate's problem: parameters in, residuals and Jacobian out.
struct Problem<'a> {
    f: &'a dyn Residuals,
    params: DVector<f64>,
}

impl LeastSquaresProblem<f64, Dyn, Dyn> for Problem<'_> {
    type ResidualStorage = Owned<f64, Dyn>;
    type JacobianStorage = Owned<f64, Dyn, Dyn>;
    type ParameterStorage = Owned<f64, Dyn>;

    fn set_params(&mut self, x: &DVector<f64>) {
        self.params.copy_from(x);
    }

    fn params(&self) -> DVector<f64> {
        self.params.clone()
    }

    /// Non-finite residuals (an `exp` that overflows) are returned as they are: the solver
    /// treats such a trial point as uphill and shrinks its step.
    fn residuals(&self) -> Option<DVector<f64>> {
        Some(DVector::from_vec(self.f.residuals(self.params.as_slice())))
    }

    fn jacobian(&self) -> Option<DMatrix<f64>> {
        Some(jacobian(self.f, self.params.as_slice()))
    }
}

/// Minimises the sum of squared residuals from `start`, with at most
/// `patience · (parameters + 1)` residual evaluations.
pub fn minimise(f: &dyn Residuals, start: &[f64], patience: usize) -> LmSolution {
    let problem = Problem { f, params: DVector::from_column_slice(start) };
    let (problem, report) = LevenbergMarquardt::new().with_patience(patience).minimize(problem);
    let params: Vec<f64> = problem.params.iter().copied().collect();
    let cost = ssr(&f.residuals(&params));
    let stopped_early = match &report.termination {
        TerminationReason::Converged { .. } | TerminationReason::Orthogonal | TerminationReason::ResidualsZero => None,
        // The tolerances are at machine precision: no step can improve the fit further.
        TerminationReason::NoImprovementPossible(_) => None,
        TerminationReason::LostPatience => Some(format!("its limit of {} evaluations", report.number_of_evaluations)),
        other => Some(format!("{other:?}")),
    };
    let ssr = if cost.is_finite() && !matches!(report.termination, TerminationReason::Numerical(_)) { cost } else { f64::INFINITY };
    LmSolution { params, ssr, evaluations: report.number_of_evaluations, converged: stopped_early.is_none(), stopped_early }
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
    pub covariance: Option<DMatrix<f64>>,
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
        let grad = DVector::from_vec(grad);
        let var = grad.dot(&(cov * &grad));
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
        // (JᵀJ)⁻¹ = V Σ⁻² Vᵀ from J = U Σ Vᵀ, as scipy's curve_fit computes it.
        let svd = jacobian(f, &sol.params).svd(false, true);
        match svd.v_t.filter(|_| !rank_deficient(&svd.singular_values, n.max(p))) {
            Some(v_t) => {
                let condition = svd.singular_values.max() / svd.singular_values.min();
                if condition > NEARLY_SINGULAR {
                    warnings.push(format!(
                        "the Jacobian is nearly singular at the optimum (condition number {condition:.1e}): some parameters are barely identified by these data and their standard errors are large"
                    ));
                }
                let inv_sq = DMatrix::from_diagonal(&svd.singular_values.map(|s| s2 / (s * s)));
                Some(v_t.transpose() * inv_sq * v_t)
            }
            None => {
                warnings.push("the Jacobian is singular at the optimum: some parameters are not identified by these data; no standard errors".into());
                None
            }
        }
    } else {
        warnings.push(format!("{n} points for {p} parameters: the fit interpolates exactly and has no uncertainty estimate; add runs"));
        None
    };
    if let Some(why) = &sol.stopped_early {
        warnings.push(format!("the optimiser stopped before converging: {why}"));
    }
    let params = names
        .iter()
        .zip(&sol.params)
        .enumerate()
        .map(|(k, (name, &value))| FittedParam {
            name: name.to_string(),
            value,
            std_error: covariance.as_ref().map(|c: &DMatrix<f64>| c[(k, k)].max(0.0).sqrt()),
        })
        .collect();
    Fit {
        params,
        covariance,
        quality: FitQuality { n_points: n, n_params: p, r2, rmse, residuals, converged: sol.converged, warnings },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_least_squares_fits_a_line_and_refuses_a_rank_deficient_design() {
        let x: Vec<Vec<f64>> = (0..5).map(|i| vec![1.0, i as f64]).collect();
        let y: Vec<f64> = (0..5).map(|i| 2.0 + 0.5 * i as f64 + if i % 2 == 0 { 0.1 } else { -0.1 }).collect();
        let b = linear_least_squares(&x, &y).unwrap();
        // The normal equations XᵀX b = Xᵀy hold at the solution.
        for k in 0..2 {
            let lhs: f64 = x.iter().zip(&y).map(|(row, yi)| row[k] * (row[0] * b[0] + row[1] * b[1] - yi)).sum();
            assert!(lhs.abs() < 1e-12, "{lhs}");
        }
        let twice: Vec<Vec<f64>> = (0..5).map(|i| vec![i as f64, 2.0 * i as f64]).collect();
        assert!(linear_least_squares(&twice, &y).is_none());
    }

    #[test]
    fn an_unidentified_parameter_gets_no_standard_error() {
        // y = a + b·x with only the sum a + b mattering when x is always 1.
        let residual = |p: &[f64]| -> Vec<f64> { (0..6).map(|i| p[0] + p[1] - (3.0 + 0.01 * (i % 3) as f64)).collect() };
        let observed: Vec<f64> = (0..6).map(|i| 3.0 + 0.01 * (i % 3) as f64).collect();
        let fit = fit_best_of(&residual, &[vec![1.0, 1.0]], &["a", "b"], &observed).unwrap();
        assert!((fit.values().iter().sum::<f64>() - 3.01).abs() < 1e-9);
        assert!(fit.params.iter().all(|p| p.std_error.is_none()));
        assert!(fit.quality.warnings.iter().any(|w| w.contains("singular")), "{:?}", fit.quality.warnings);
    }
}
