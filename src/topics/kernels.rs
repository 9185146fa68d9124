//! The few vector operations of the classifier, in fastText's order of operations (plain
//! f32 loops; sums run left to right so results match fastText's to rounding).

/// `acc += row`.
#[inline]
pub fn add_assign(acc: &mut [f32], row: &[f32]) {
    for (a, r) in acc.iter_mut().zip(row) {
        *a += r;
    }
}

/// `y += a * x`.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[inline]
pub fn scale(v: &mut [f32], s: f32) {
    v.iter_mut().for_each(|x| *x *= s);
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |d, (x, y)| d + x * y)
}

/// fastText's `1.0 / n` for averaging, computed in f64 and rounded once.
#[inline]
pub fn inverse_count(n: usize) -> f32 {
    (1.0f64 / n as f64) as f32
}

/// How many rows ahead `average_rows` asks the CPU to fetch.
const PREFETCH_AHEAD: usize = 4;

/// Hints the CPU to bring `row` into cache. Rows of a large input matrix are scattered
/// over hundreds of megabytes: waiting for them, not arithmetic, is most of training's
/// and prediction's time, and fetching a few rows ahead overlaps those waits.
#[inline]
fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for i in (0..row.len()).step_by(16) {
        // SAFETY: `_mm_prefetch` is only a hint (it never faults) and SSE is part of x86_64;
        // the address lies inside `row`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(row.as_ptr().add(i) as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// `hidden` = the mean of the rows `row(r)` for `r` in `rows` (which must not be empty).
#[inline]
pub fn average_rows<'a>(rows: &[u32], row: impl Fn(u32) -> &'a [f32], hidden: &mut [f32]) {
    hidden.fill(0.0);
    for &r in rows.iter().take(PREFETCH_AHEAD) {
        prefetch(row(r));
    }
    for (k, &r) in rows.iter().enumerate() {
        if let Some(&ahead) = rows.get(k + PREFETCH_AHEAD) {
            prefetch(row(ahead));
        }
        add_assign(hidden, row(r));
    }
    scale(hidden, inverse_count(rows.len()));
}

/// `probs[i]` = softmax over labels of `output_row(i) . hidden`.
#[inline]
pub fn softmax_scores<'a>(output_row: impl Fn(usize) -> &'a [f32], hidden: &[f32], probs: &mut [f32]) {
    for (i, p) in probs.iter_mut().enumerate() {
        *p = dot(output_row(i), hidden);
    }
    let max = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut z = 0.0f32;
    for p in probs.iter_mut() {
        *p = (*p - max).exp();
        z += *p;
    }
    for p in probs.iter_mut() {
        *p /= z;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_known_scores() {
        let rows = [vec![1.0f32, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]];
        let hidden = [2.0f32, -1.0];
        let mut p = [0.0f32; 3];
        softmax_scores(|i| &rows[i], &hidden, &mut p);
        let e = [2.0f64.exp(), (-1.0f64).exp(), 1.0f64.exp()];
        let z: f64 = e.iter().sum();
        for i in 0..3 {
            assert!((p[i] as f64 - e[i] / z).abs() < 1e-6);
        }
        let mut h = [0.0f32; 2];
        average_rows(&[0, 2, 2], |r| &rows[r as usize], &mut h);
        assert!((h[0] - 1.0).abs() < 1e-7 && (h[1] - 2.0 / 3.0).abs() < 1e-7);
    }
}
