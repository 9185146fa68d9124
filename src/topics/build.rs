//! From labelled documents to a trained classifier, and its held-out evaluation.
use std::collections::HashMap;

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::data::LabelledDoc;
use super::features::{FeatureBuf, Featurizer};
use super::hashing::NgramSettings;
use super::metrics::{evaluate, Evaluation};
use super::model::{Classifier, ModelSettings, PredictBuf};
use super::train::{train, Examples, SgdOptions};
use super::vocab::Vocabulary;

impl ModelSettings {
    /// Checks the knobs and, as fastText does, sets `bucket` to 0 when no n-gram is hashed.
    pub fn normalized(mut self) -> Result<Self> {
        if self.dim == 0 {
            bail!("--dim must be at least 1");
        }
        if self.word_ngrams == 0 {
            bail!("--word-ngrams must be at least 1 (1: words only)");
        }
        if self.maxn > 0 && (self.minn == 0 || self.minn > self.maxn) {
            bail!("--minn {} --maxn {}: need 1 <= minn <= maxn (maxn 0 turns character n-grams off)", self.minn, self.maxn);
        }
        if self.min_count == 0 {
            bail!("--min-count must be at least 1");
        }
        let ngrams = self.ngrams();
        if !ngrams.uses_buckets() {
            self.bucket = 0;
        } else if self.bucket == 0 {
            bail!("--bucket must be positive when word or character n-grams are on");
        }
        Ok(self)
    }

    pub fn ngrams(&self) -> NgramSettings {
        NgramSettings { word_ngrams: self.word_ngrams, minn: self.minn, maxn: self.maxn, bucket: self.bucket }
    }
}

/// A trained classifier and what training saw.
pub struct Trained {
    pub classifier: Classifier,
    pub settings: ModelSettings,
    pub words: u64,
    pub last_epoch_loss: f64,
}

/// Trains on `docs` with `labels` as the label set (every document's label must be in it).
pub fn train_classifier(
    docs: &[&LabelledDoc],
    labels: Vec<String>,
    settings: ModelSettings,
    sgd: &SgdOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Trained> {
    let settings = settings.normalized()?;
    if docs.is_empty() {
        bail!("no training documents");
    }
    let index: HashMap<&str, u32> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i as u32)).collect();
    let vocab = Vocabulary::count(docs.iter().map(|d| d.text.as_str()), settings.min_count);
    let featurizer = Featurizer::new(vocab, settings.ngrams());
    let featurized: Vec<(Vec<u32>, usize)> = docs
        .par_iter()
        .map_init(FeatureBuf::default, |buf, d| {
            let words = featurizer.features(&d.text, buf);
            (buf.rows.clone(), words)
        })
        .collect();
    let mut examples = Examples::default();
    for (d, (rows, words)) in docs.iter().zip(&featurized) {
        let Some(&label) = index.get(d.label.as_str()) else { bail!("{}: label `{}` is not in the label set", d.location, d.label) };
        examples.push(rows, label, *words);
    }
    drop(featurized);
    let out = train(&examples, featurizer.rows(), labels.len(), settings.dim, sgd, progress)?;
    let classifier = Classifier { featurizer, labels, dim: settings.dim, input: out.input, output: out.output };
    Ok(Trained { classifier, settings, words: examples.total_words(), last_epoch_loss: out.last_epoch_loss })
}

/// Predicts every document and scores the predictions against their labels. A label the
/// classifier does not know is an error naming the document (train and evaluation data
/// must share one label set).
pub fn evaluate_classifier(clf: &Classifier, docs: &[&LabelledDoc]) -> Result<Evaluation> {
    let index: HashMap<&str, usize> = clf.labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    for d in docs {
        if !index.contains_key(d.label.as_str()) {
            bail!(
                "{}: topic `{}` is not one the classifier was trained on ({})",
                d.location,
                d.label,
                clf.labels.join(", ")
            );
        }
    }
    let pairs: Vec<(usize, usize)> = docs
        .par_iter()
        .map_init(PredictBuf::default, |buf, d| {
            let predicted = clf.predict(&d.text, buf).map(|p| p.label).unwrap_or(0);
            (index[d.label.as_str()], predicted)
        })
        .collect();
    Ok(evaluate(&clf.labels, &pairs))
}
