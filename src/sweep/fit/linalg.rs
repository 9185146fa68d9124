//! Dense linear algebra for the small systems the fits produce (a handful of parameters):
//! Gaussian elimination with partial pivoting, inversion and least squares. Row-major
//! `Vec<Vec<f64>>` keeps it readable; sizes here never exceed a few dozen.

/// Solves `a x = b`; `None` when `a` is (numerically) singular.
pub fn solve(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = a.iter().zip(b).map(|(row, &bi)| {
        let mut r = row.clone();
        r.push(bi);
        r
    }).collect();
    let scale = a.iter().flatten().fold(0.0f64, |s, v| s.max(v.abs())).max(f64::MIN_POSITIVE);
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() <= scale * 1e-13 {
            return None;
        }
        m.swap(col, pivot);
        for row in 0..n {
            if row != col {
                let f = m[row][col] / m[col][col];
                if f != 0.0 {
                    for k in col..=n {
                        m[row][k] -= f * m[col][k];
                    }
                }
            }
        }
    }
    Some((0..n).map(|i| m[i][n] / m[i][i]).collect())
}

/// Inverse of a square matrix; `None` when singular.
pub fn invert(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut columns = Vec::with_capacity(n);
    for j in 0..n {
        let e: Vec<f64> = (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect();
        columns.push(solve(a, &e)?);
    }
    Some((0..n).map(|i| (0..n).map(|j| columns[j][i]).collect()).collect())
}

/// `Jᵀ J` for a row-major Jacobian (rows = observations).
pub fn gram(j: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let p = j.first().map_or(0, |r| r.len());
    let mut g = vec![vec![0.0; p]; p];
    for row in j {
        for a in 0..p {
            for b in a..p {
                g[a][b] += row[a] * row[b];
            }
        }
    }
    for a in 0..p {
        for b in 0..a {
            g[a][b] = g[b][a];
        }
    }
    g
}

/// `Jᵀ v`.
pub fn transpose_mul(j: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
    let p = j.first().map_or(0, |r| r.len());
    let mut out = vec![0.0; p];
    for (row, &vi) in j.iter().zip(v) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o += x * vi;
        }
    }
    out
}

/// Ordinary least squares `min |X b - y|²` through the normal equations.
pub fn least_squares(x: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    solve(&gram(x), &transpose_mul(x, y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_inverts_a_small_system() {
        let a = vec![vec![4.0, 1.0, 0.0], vec![1.0, 3.0, 1.0], vec![0.0, 1.0, 2.0]];
        let x = solve(&a, &[1.0, 2.0, 3.0]).unwrap();
        for (row, want) in a.iter().zip([1.0, 2.0, 3.0]) {
            let got: f64 = row.iter().zip(&x).map(|(p, q)| p * q).sum();
            assert!((got - want).abs() < 1e-12);
        }
        let inv = invert(&a).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i][k] * inv[k][j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(solve(&[vec![1.0, 2.0], vec![2.0, 4.0]], &[1.0, 2.0]).is_none());
    }
}
