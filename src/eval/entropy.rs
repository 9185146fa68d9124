//! MindLLM's data-entropy selection (arXiv 2310.15777): score each instruction sample by
//! the model's mean cross-entropy on it ("data entropy"), cluster the scores with k-means,
//! and keep the clusters whose centre lies in a band above the model's own entropy
//! (about 1-1.5 nats above worked best there).
//!
//! The model's own entropy defaults to the mean entropy of its predicted next-token
//! distributions over the same samples: the cross-entropy it would have on its own text.
use serde::{Deserialize, Serialize};

/// 1-D k-means (Lloyd's algorithm). Centres start at evenly spaced quantiles, so the
/// result is deterministic; they are returned in increasing order.
pub fn kmeans_1d(values: &[f64], k: usize, max_iters: usize) -> (Vec<f64>, Vec<usize>) {
    if values.is_empty() || k == 0 {
        return (Vec::new(), vec![0; values.len()]);
    }
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let k = k.min(values.len());
    let mut centres: Vec<f64> = (0..k).map(|i| sorted[((2 * i + 1) * sorted.len()) / (2 * k)]).collect();
    let mut assign = vec![0usize; values.len()];
    for _ in 0..max_iters.max(1) {
        let mut changed = false;
        for (i, &v) in values.iter().enumerate() {
            let best = (0..k).fold(0, |b, c| if (v - centres[c]).abs() < (v - centres[b]).abs() { c } else { b });
            if assign[i] != best {
                assign[i] = best;
                changed = true;
            }
        }
        let mut sums = vec![0.0; k];
        let mut counts = vec![0usize; k];
        for (i, &v) in values.iter().enumerate() {
            sums[assign[i]] += v;
            counts[assign[i]] += 1;
        }
        for c in 0..k {
            if counts[c] > 0 {
                centres[c] = sums[c] / counts[c] as f64;
            }
        }
        if !changed {
            break;
        }
    }
    // Renumber clusters by centre.
    let mut idx: Vec<usize> = (0..k).collect();
    idx.sort_by(|&a, &b| centres[a].total_cmp(&centres[b]));
    let mut rank = vec![0; k];
    for (r, &c) in idx.iter().enumerate() {
        rank[c] = r;
    }
    let centres_sorted = idx.iter().map(|&c| centres[c]).collect();
    (centres_sorted, assign.into_iter().map(|a| rank[a]).collect())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub centre: f64,
    pub size: usize,
    /// Centre minus the model's entropy (nats).
    pub above_model: f64,
    pub selected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntropySelection {
    pub model_entropy: f64,
    pub band: (f64, f64),
    pub clusters: Vec<Cluster>,
    /// Cluster of each sample.
    pub assignment: Vec<usize>,
    /// Indices of the selected samples.
    pub selected: Vec<usize>,
    /// True when no centre fell in the band and the cluster nearest its middle was taken.
    pub nearest_fallback: bool,
}

/// Clusters `data_entropy` into `k` groups and selects those whose centre is
/// `band.0..=band.1` nats above `model_entropy`.
pub fn select_by_entropy(data_entropy: &[f64], model_entropy: f64, k: usize, band: (f64, f64)) -> EntropySelection {
    let (centres, assignment) = kmeans_1d(data_entropy, k, 100);
    let mut clusters: Vec<Cluster> = centres
        .iter()
        .enumerate()
        .map(|(c, &centre)| {
            let above = centre - model_entropy;
            Cluster { centre, size: assignment.iter().filter(|&&a| a == c).count(), above_model: above, selected: above >= band.0 && above <= band.1 }
        })
        .collect();
    let mut nearest_fallback = false;
    if !clusters.is_empty() && !clusters.iter().any(|c| c.selected) {
        let mid = (band.0 + band.1) / 2.0;
        let best = (0..clusters.len())
            .fold(0, |b, c| if (clusters[c].above_model - mid).abs() < (clusters[b].above_model - mid).abs() { c } else { b });
        clusters[best].selected = true;
        nearest_fallback = true;
    }
    let selected = (0..data_entropy.len()).filter(|&i| clusters[assignment[i]].selected).collect();
    EntropySelection { model_entropy, band, clusters, assignment, selected, nearest_fallback }
}
