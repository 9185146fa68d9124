//! The classifier: the averaged embeddings of a text's features (input matrix, one row per
//! word and per bucket), a linear layer to one score per label (output matrix), softmax.
use serde::{Deserialize, Serialize};

use super::features::{FeatureBuf, Featurizer};
use super::kernels::{average_rows, softmax_scores};

/// Everything that shapes a trained model, saved with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    pub dim: usize,
    pub word_ngrams: u32,
    pub minn: u32,
    pub maxn: u32,
    /// Hashed n-gram rows (0 when neither word nor character n-grams are used).
    pub bucket: u32,
    pub min_count: u64,
}

pub struct Classifier {
    pub featurizer: Featurizer,
    pub labels: Vec<String>,
    pub dim: usize,
    /// `featurizer.rows()` x `dim`, row-major.
    pub input: Vec<f32>,
    /// `labels.len()` x `dim`, row-major.
    pub output: Vec<f32>,
}

/// The most likely label of a text and its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub label: usize,
    pub prob: f32,
}

/// Reusable buffers for prediction (one per thread).
#[derive(Debug, Default)]
pub struct PredictBuf {
    pub features: FeatureBuf,
    hidden: Vec<f32>,
    pub probs: Vec<f32>,
}

impl Classifier {
    /// The probability of every label for `text` into `buf.probs`; false when the text has
    /// no features at all (no word and no n-gram: an empty text), as fastText predicts nothing then.
    pub fn probabilities(&self, text: &str, buf: &mut PredictBuf) -> bool {
        let PredictBuf { features, hidden, probs } = buf;
        self.featurizer.features(text, features);
        self.scores(&features.rows, hidden, probs)
    }

    /// As `probabilities`, from feature rows computed already.
    pub fn probabilities_of_rows(&self, rows: &[u32], buf: &mut PredictBuf) -> bool {
        self.scores(rows, &mut buf.hidden, &mut buf.probs)
    }

    fn scores(&self, rows: &[u32], hidden: &mut Vec<f32>, probs: &mut Vec<f32>) -> bool {
        probs.resize(self.labels.len(), 0.0);
        if rows.is_empty() {
            return false;
        }
        hidden.resize(self.dim, 0.0);
        let dim = self.dim;
        average_rows(rows, |r| &self.input[r as usize * dim..(r as usize + 1) * dim], hidden);
        softmax_scores(|i| &self.output[i * dim..(i + 1) * dim], hidden, probs);
        true
    }

    /// The mean of `text`'s feature rows (fastText's sentence vector; zeros without features).
    pub fn sentence_vector(&self, text: &str) -> Vec<f32> {
        let mut buf = PredictBuf::default();
        self.featurizer.features(text, &mut buf.features);
        let mut hidden = vec![0.0; self.dim];
        if !buf.features.rows.is_empty() {
            let dim = self.dim;
            average_rows(&buf.features.rows, |r| &self.input[r as usize * dim..(r as usize + 1) * dim], &mut hidden);
        }
        hidden
    }

    /// The best label (the first on ties), or `None` for a text without features.
    pub fn predict(&self, text: &str, buf: &mut PredictBuf) -> Option<Prediction> {
        if !self.probabilities(text, buf) {
            return None;
        }
        Some(best(&buf.probs))
    }
}

/// The arg-max of a probability vector (the first on ties).
pub fn best(probs: &[f32]) -> Prediction {
    let mut out = Prediction { label: 0, prob: f32::NEG_INFINITY };
    for (i, &p) in probs.iter().enumerate() {
        if p > out.prob {
            out = Prediction { label: i, prob: p };
        }
    }
    out
}
