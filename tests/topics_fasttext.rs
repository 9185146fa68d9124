//! cpt's topic classifier computes what fastText computes: a tiny fastText model's
//! vocabulary and matrices (fixture from `scripts/make_topics_fixtures.py`, fasttext-wheel
//! 0.9.2) loaded into cpt give the same character n-gram ids, sentence vectors and label
//! probabilities on texts with unknown words, Chinese, accents and odd whitespace.
use std::path::PathBuf;

use cpt::topics::features::Featurizer;
use cpt::topics::hashing::{char_ngrams, NgramSettings};
use cpt::topics::model::{Classifier, PredictBuf};
use cpt::topics::vocab::Vocabulary;
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/topics/fasttext_tiny.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn classifier(f: &Value) -> Classifier {
    let s = &f["settings"];
    let ngrams = NgramSettings {
        word_ngrams: s["wordNgrams"].as_u64().unwrap() as u32,
        minn: s["minn"].as_u64().unwrap() as u32,
        maxn: s["maxn"].as_u64().unwrap() as u32,
        bucket: s["bucket"].as_u64().unwrap() as u32,
    };
    let words: Vec<String> = f["words"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string()).collect();
    let featurizer = Featurizer::new(Vocabulary::from_words(words), ngrams);
    let input: Vec<f32> = f["input"].as_array().unwrap().iter().flat_map(floats).collect();
    let output: Vec<f32> = f["output"].as_array().unwrap().iter().flat_map(floats).collect();
    assert_eq!(input.len(), featurizer.rows() * 4, "rows: fastText's words + buckets");
    let labels = f["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
    Classifier { featurizer, labels, dim: s["dim"].as_u64().unwrap() as usize, input, output }
}

#[test]
fn character_ngram_ids_match_fasttext() {
    let f = fixture();
    let clf = classifier(&f);
    let nwords = f["nwords"].as_u64().unwrap() as u32;
    for (word, want) in f["subwords"].as_object().unwrap() {
        let ids: Vec<u32> = want["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
        let mut ours = Vec::new();
        if word != "</s>" {
            char_ngrams(word, clf.featurizer.ngrams(), &mut ours);
        }
        let ours: Vec<u32> = ours.iter().map(|b| nwords + b).collect();
        // fastText lists an in-vocabulary word's own id first.
        let ngram_ids: Vec<u32> = ids.iter().copied().filter(|&i| i >= nwords).collect();
        assert_eq!(ours, ngram_ids, "`{word}`");
    }
}

#[test]
fn sentence_vectors_and_probabilities_match_fasttext() {
    let f = fixture();
    let clf = classifier(&f);
    let mut buf = PredictBuf::default();
    for probe in f["probes"].as_array().unwrap() {
        let text = probe["text"].as_str().unwrap();
        let want = floats(&probe["sentence_vector"]);
        let got = clf.sentence_vector(text);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-7 + 1e-5 * w.abs(), "{text:?}: sentence vector {got:?} vs fastText {want:?}");
        }
        assert!(clf.probabilities(text, &mut buf));
        for (label, p) in probe["probabilities"].as_object().unwrap() {
            let i = clf.labels.iter().position(|l| l == label).unwrap();
            let want = p.as_f64().unwrap();
            // fastText's probabilities come back through exp(log(p + 1e-5)) in f32.
            assert!((buf.probs[i] as f64 - want).abs() < 2e-6, "{text:?} `{label}`: cpt {} vs fastText {want}", buf.probs[i]);
        }
    }
}
