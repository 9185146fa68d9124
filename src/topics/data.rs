//! Labelled documents for training and evaluation: JSONL (or Parquet / text, as `cpt
//! prepare` reads them, gz/zst included) with a text field and a label field. Every record
//! must have both: a bad one is an error naming its file and line.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::data::config::SourceConfig;
use crate::data::source::{read_file, resolve_files};
use crate::util::rng::{name_key, SplitMix64};

#[derive(Debug, Clone, PartialEq)]
pub struct LabelledDoc {
    pub text: String,
    pub label: String,
    /// `file:line`.
    pub location: String,
}

/// Reads every record of `paths` (files, directories, globs); `what` names the option in
/// errors (`--data`).
pub fn read_labelled(paths: &[PathBuf], text_field: &str, label_field: &str, what: &str) -> Result<(Vec<LabelledDoc>, Vec<PathBuf>)> {
    let mut source = SourceConfig::from_paths(what, paths.iter().map(|p| p.display().to_string()).collect());
    source.text_field = text_field.to_string();
    source.topic_field = label_field.to_string();
    let files = resolve_files(&source, what)?;
    let mut docs = Vec::new();
    for file in &files {
        for record in read_file(file, &source)? {
            let doc = match record? {
                Ok(doc) => doc,
                Err(bad) => bail!("{bad}"),
            };
            let label = match doc.topic {
                Some(l) if !l.trim().is_empty() => l,
                Some(_) => bail!("{}: the label field `{label_field}` is empty", doc.location),
                None => bail!("{}: no label field `{label_field}` (set --label-field)", doc.location),
            };
            docs.push(LabelledDoc { text: doc.text, label, location: doc.location });
        }
    }
    if docs.is_empty() {
        bail!("{what}: no documents in {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok((docs, files))
}

/// The label set of `docs`, sorted by name.
pub fn label_set(docs: &[LabelledDoc]) -> Vec<String> {
    let mut labels: Vec<String> = docs.iter().map(|d| d.label.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Splits document indices into (train, held out), per label: `fraction` of each label's
/// documents (rounded, at least one of a label with two or more) are held out, chosen by a
/// shuffle seeded by `seed` and the label's name, so every topic is evaluated and the split
/// does not depend on the order of the labels.
pub fn stratified_split(docs: &[LabelledDoc], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, d) in docs.iter().enumerate() {
        by_label.entry(&d.label).or_default().push(i);
    }
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (label, mut idx) in by_label {
        SplitMix64::keyed(&[seed, name_key(label)]).shuffle(&mut idx);
        let n = idx.len();
        let k = if fraction > 0.0 && n >= 2 { ((fraction * n as f64).round() as usize).clamp(1, n - 1) } else { 0 };
        held.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(label: &str, i: usize) -> LabelledDoc {
        LabelledDoc { text: format!("t{i}"), label: label.into(), location: format!("f:{i}") }
    }

    #[test]
    fn split_holds_out_every_label_and_is_seeded() {
        let docs: Vec<LabelledDoc> = (0..20).map(|i| doc("a", i)).chain((20..24).map(|i| doc("b", i))).chain([doc("c", 24)]).collect();
        let (train, held) = stratified_split(&docs, 0.1, 7);
        assert_eq!(train.len() + held.len(), docs.len());
        let held_labels: Vec<&str> = held.iter().map(|&i| docs[i].label.as_str()).collect();
        assert_eq!(held_labels.iter().filter(|l| **l == "a").count(), 2);
        assert_eq!(held_labels.iter().filter(|l| **l == "b").count(), 1, "at least one of a small label");
        assert!(!held_labels.contains(&"c"), "a single document stays in training");
        assert_eq!(stratified_split(&docs, 0.1, 7), (train.clone(), held.clone()));
        assert_ne!(stratified_split(&docs, 0.1, 8).1, held);
    }
}
