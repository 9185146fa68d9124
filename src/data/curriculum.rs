//! Perplexity curriculum (Llama-3-SynE): a source's documents ordered by score, easy (low)
//! to hard or the reverse, cut into equal-count buckets that are each shuffled, so the
//! order is easy-to-hard at bucket granularity and random inside a bucket.
use super::config::CurriculumOrder;
use crate::util::rng::SplitMix64;

/// A stream's documents sorted once; each epoch reshuffles within buckets only.
#[derive(Debug, Clone)]
pub struct Curriculum {
    sorted: Vec<u32>,
    /// Bucket `b` is `sorted[bounds[b]..bounds[b + 1]]`.
    bounds: Vec<usize>,
    /// Documents without a score (placed in the last bucket of their own).
    pub unscored: usize,
}

impl Curriculum {
    /// `docs` with their scores (NaN: no score; those go last whatever the order).
    pub fn new(docs: &[u32], score: impl Fn(u32) -> f32, order: CurriculumOrder, buckets: usize) -> Self {
        let mut scored: Vec<(f32, u32)> = Vec::with_capacity(docs.len());
        let mut unscored: Vec<u32> = Vec::new();
        for &d in docs {
            let s = score(d);
            if s.is_nan() {
                unscored.push(d);
            } else {
                scored.push((s, d));
            }
        }
        // Ties broken by document index so the order never depends on the sort's stability.
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if order == CurriculumOrder::HardToEasy {
            scored.reverse();
        }
        let n = scored.len();
        let k = buckets.max(1).min(n.max(1));
        let mut bounds: Vec<usize> = (0..=k).map(|b| b * n / k).collect();
        bounds.dedup();
        let mut sorted: Vec<u32> = scored.into_iter().map(|(_, d)| d).collect();
        if !unscored.is_empty() {
            sorted.extend_from_slice(&unscored);
            bounds.push(sorted.len());
        }
        if bounds.len() == 1 {
            bounds.push(sorted.len());
        }
        Curriculum { sorted, bounds, unscored: unscored.len() }
    }

    /// The order of one epoch.
    pub fn epoch_order(&self, rng: &mut SplitMix64) -> Vec<u32> {
        let mut out = self.sorted.clone();
        for w in self.bounds.windows(2) {
            rng.shuffle(&mut out[w[0]..w[1]]);
        }
        out
    }

    pub fn buckets(&self) -> usize {
        self.bounds.len() - 1
    }
}
