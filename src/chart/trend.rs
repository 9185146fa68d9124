//! A trend through noisy points that does not lag behind them: at each point, a straight
//! line fitted by weighted least squares to the points within `half_width` on either side
//! (tricube weights: LOESS of degree 1), evaluated at that point. Inside the data the
//! window is centred, so the trend of a steadily falling loss passes through the loss itself
//! and a sudden drop shows where it happened; at either end the window keeps its width by
//! reaching inward, and the line is still evaluated at the end point, so the trend ends at
//! the last step logged. An exponential moving average, by contrast, trails a falling
//! curve by about its time constant.

/// The trend of `points` (sorted by x) over windows `2 * half_width` wide, at every x.
pub fn local_linear(points: &[(f64, f64)], half_width: f64) -> Vec<(f64, f64)> {
    let Some((&(first, _), &(last, _))) = points.first().zip(points.last()) else { return Vec::new() };
    let width = 2.0 * half_width.max(0.0);
    let (mut lo_idx, mut hi_idx) = (0usize, 0usize);
    points
        .iter()
        .map(|&(x, y)| {
            // The window [lo, hi] around x, shifted inward at the ends to keep its width.
            let lo = (x - half_width).min(last - width).max(first);
            let hi = (lo + width).min(last).max(x);
            while points[lo_idx].0 < lo {
                lo_idx += 1;
            }
            while hi_idx + 1 < points.len() && points[hi_idx + 1].0 <= hi {
                hi_idx += 1;
            }
            let reach = (x - lo).max(hi - x) * (1.0 + 1e-9);
            let (mut s0, mut sx, mut sxx, mut sy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for &(xj, yj) in &points[lo_idx..=hi_idx] {
                let d = xj - x;
                let w = if reach > 0.0 { (1.0 - (d.abs() / reach).powi(3)).powi(3) } else { 1.0 };
                s0 += w;
                sx += w * d;
                sxx += w * d * d;
                sy += w * yj;
                sxy += w * d * yj;
            }
            let det = s0 * sxx - sx * sx;
            // The line's value at d = 0; a window of one distinct x gives its mean.
            let value = if det > 1e-12 * s0 * sxx.max(f64::MIN_POSITIVE) { (sxx * sy - sx * sxy) / det } else { sy / s0 };
            (x, if value.is_finite() { value } else { y })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_straight_line_is_its_own_trend_up_to_both_ends() {
        let pts: Vec<(f64, f64)> = (0..50).map(|i| (10.0 * i as f64, 7.0 - 0.004 * i as f64 * 10.0)).collect();
        for ((x, y), (tx, ty)) in pts.iter().zip(local_linear(&pts, 60.0)) {
            assert_eq!(*x, tx);
            assert!((y - ty).abs() < 1e-9, "at {x}: {y} vs {ty}");
        }
    }

    #[test]
    fn a_step_is_crossed_where_it_happens() {
        let pts: Vec<(f64, f64)> = (0..100).map(|i| (10.0 * i as f64, if i < 50 { 1.0 } else { 0.0 })).collect();
        let trend = local_linear(&pts, 50.0);
        // Symmetric about the step between x = 490 and x = 500.
        for k in 0..5 {
            assert!((trend[49 - k].1 - (1.0 - trend[50 + k].1)).abs() < 1e-12);
        }
        assert!(trend[49].1 > 0.5 && trend[50].1 < 0.5);
        assert_eq!((trend[0].1, trend[99].1), (1.0, 0.0), "flat far from the step");
    }
}
