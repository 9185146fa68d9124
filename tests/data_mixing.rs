//! Topic-balanced dynamic mixing: the SynE rule and the DoReMi alternative on constructed
//! cases, the realised topic shares after a change, and the change log in the state.
mod data_common;

use std::collections::BTreeMap;

use cpt::data::{Sampler, SamplerState};
use data_common::*;

/// Source `t` with 40 documents in each of topics `a`, `b`, `c`, and source `plain` without
/// topics.
fn setup(mixing: &str) -> (tempfile::TempDir, Sampler) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tok = byte_tokenizer(&root.join("tok"), 0);
    let mut records = Vec::new();
    for i in 0..120 {
        let topic = ["a", "b", "c"][i % 3];
        records.push(serde_json::json!({"text": format!("t document {i}: {}", "lorem ipsum ".repeat(10 + i % 7)), "topic": topic}));
    }
    write_jsonl(&root.join("t.jsonl"), &records);
    write_jsonl(&root.join("plain.jsonl"), &docs("plain", 50, 200));
    let cfg = parse_config(&format!(
        "validation: {{fraction: 0}}\nsampler: {{max_repeats: null}}\nmixing: {mixing}\nsources:\n  - {{name: t, paths: {}}}\n  - {{name: plain, paths: {}}}\nstages:\n  - {{weights: {{t: 0.5, plain: 0.5}}}}\n",
        p(&root.join("t.jsonl")),
        p(&root.join("plain.jsonl"))
    ));
    let data = prepare_and_open(&cfg, &tok, &root.join("cache"));
    let s = Sampler::new(&cfg, data, 128, 5).unwrap();
    (tmp, s)
}

fn weights(s: &Sampler, source: usize) -> BTreeMap<String, f64> {
    s.topic_weights(source).into_iter().map(|(t, w)| (t.unwrap_or_default(), w)).collect()
}

fn losses(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(t, l)| (t.to_string(), *l)).collect()
}

/// Token share per topic over the next `n` windows of source `source`.
fn realised_topic_shares(s: &mut Sampler, source: usize, n: usize) -> BTreeMap<String, f64> {
    let mut tokens: BTreeMap<String, f64> = BTreeMap::new();
    let mut seen = 0;
    while seen < n {
        let w = s.next_window().unwrap();
        if w.source != source {
            continue;
        }
        seen += 1;
        for (k, &start) in w.doc_starts.iter().enumerate() {
            let end = w.doc_starts.get(k + 1).copied().unwrap_or(w.tokens.len() as u32 - 1);
            let topic = w.topics[k].and_then(|t| s.topic_name(t)).unwrap_or("").to_string();
            *tokens.entry(topic).or_default() += (end - start) as f64;
        }
    }
    let total: f64 = tokens.values().sum();
    tokens.values_mut().for_each(|v| *v /= total);
    tokens
}

#[test]
fn syne_rule_reweights_topics_as_the_formula_says() {
    let (_tmp, mut s) = setup("{rule: syne, alpha: 0.5, min_weight: 0, priors: {c: 2.0}}");
    let before = weights(&s, 0);
    assert_eq!(before.len(), 3);
    assert_eq!(s.topic_weights(1).len(), 1, "a source without topics keeps one stream");
    // Round 1 only records the perplexities.
    let ln = f64::ln;
    assert!(s.update_topic_mixing(100, &losses(&[("a", ln(10.0)), ("b", ln(10.0)), ("c", ln(10.0))])).unwrap().is_none());
    // Round 2: a falls by 2, b by 1, c rises by 1 -> normalised deltas -1/2, -1/4, +1/4.
    let update = s
        .update_topic_mixing(200, &losses(&[("a", ln(8.0)), ("b", ln(9.0)), ("c", ln(11.0)), ("absent", 1.0)]))
        .unwrap()
        .expect("second round changes the weights");
    let f = [("a", 1.0 - 0.5 * 0.5), ("b", 1.0 - 0.5 * 0.25), ("c", 1.0 + 0.5 * 0.25 * 2.0)];
    let z: f64 = f.iter().map(|(t, f)| before[*t] * f).sum();
    let after = weights(&s, 0);
    for (t, factor) in f {
        let want = before[t] * factor / z;
        assert!((after[t] - want).abs() < 1e-12, "{t}: {} vs {want}", after[t]);
        assert!((update.topics[t].factor - factor).abs() < 1e-12);
        assert_eq!(update.weights["t"][t], [before[t], after[t]]);
    }
    assert!(!update.weights.contains_key("plain"), "sources without topics are not re-weighted");
    assert!(after["c"] > before["c"] && after["a"] < before["a"], "the topic whose perplexity stopped falling gains");
    // The sampler now draws topics in the new shares.
    let shares = realised_topic_shares(&mut s, 0, 800);
    for t in ["a", "b", "c"] {
        assert!((shares[t] - after[t]).abs() < 0.02, "{t}: realised {} vs weight {}", shares[t], after[t]);
    }
    // The change is logged and survives a save/restore.
    let state: SamplerState = serde_json::from_str(&serde_json::to_string(&s.state()).unwrap()).unwrap();
    assert_eq!(state.mixing_log.len(), 1);
    assert_eq!(state.mixing_log[0].step, 200);
    let (_tmp2, mut fresh) = setup("{rule: syne, alpha: 0.5, min_weight: 0, priors: {c: 2.0}}");
    // Another temp dir holds the same corpus, so the continuation must be identical.
    let report = fresh.restore(&state).unwrap();
    assert!(report.is_exact(), "{:?}", report.changes);
    assert_eq!(weights(&fresh, 0), after);
    for _ in 0..200 {
        assert_eq!(s.next_window().unwrap(), fresh.next_window().unwrap());
    }
}

#[test]
fn doremi_rule_uses_exponentiated_excess_loss_with_smoothing() {
    let (_tmp, mut s) = setup("{rule: doremi, eta: 1.0, smoothing: 0.01, min_weight: 0, reference_losses: {a: 1.0, b: 1.0, c: 1.0}}");
    let before = weights(&s, 0);
    let update = s.update_topic_mixing(10, &losses(&[("a", 1.5), ("b", 1.0), ("c", 0.8)])).unwrap().unwrap();
    let f = [("a", 0.5f64.exp()), ("b", 1.0), ("c", 1.0)];
    let z: f64 = f.iter().map(|(t, f)| before[*t] * f).sum();
    let after = weights(&s, 0);
    for (t, factor) in f {
        let want = 0.99 * before[t] * factor / z + 0.01 / 3.0;
        assert!((after[t] - want).abs() < 1e-12, "{t}: {} vs {want}", after[t]);
        assert!((update.topics[t].signal - (update.topics[t].loss - 1.0).max(0.0)).abs() < 1e-12);
    }
    // Without configured references the first round sets them and changes nothing.
    let (_tmp, mut s) = setup("{rule: doremi}");
    let w0 = weights(&s, 0);
    assert!(s.update_topic_mixing(1, &losses(&[("a", 2.0), ("b", 2.0), ("c", 2.0)])).unwrap().is_none());
    assert_eq!(weights(&s, 0), w0);
    assert!(s.update_topic_mixing(2, &losses(&[("a", 2.5), ("b", 1.9), ("c", 2.0)])).unwrap().is_some());
    assert!(weights(&s, 0)["a"] > w0["a"]);
}

#[test]
fn direct_topic_weights_and_bad_updates() {
    let (_tmp, mut s) = setup("{rule: syne}");
    let update = s.set_topic_weights(3, "t", &losses(&[("a", 1.0), ("b", 3.0), ("c", 0.0)])).unwrap();
    assert_eq!(update.weights["t"]["b"][1], 0.75);
    let shares = realised_topic_shares(&mut s, 0, 600);
    assert!(shares.get("c").copied().unwrap_or(0.0) < 0.01, "{shares:?}");
    assert!((shares["b"] - 0.75).abs() < 0.02, "{shares:?}");
    assert!(s.set_topic_weights(3, "t", &losses(&[("nope", 1.0)])).is_err());
    assert!(s.set_topic_weights(3, "missing", &losses(&[("a", 1.0)])).is_err());
    let err = s.update_topic_mixing(4, &losses(&[("a", f64::NAN)])).unwrap_err().to_string();
    assert!(err.contains("not finite"), "{err}");
    assert_eq!(s.mixing_log().len(), 1);
}

/// Documents (`t document N:`) of source 0 in the next `n` of its windows, stitched.
fn t_docs(s: &mut Sampler, n: usize) -> Vec<usize> {
    let mut stream: Vec<u32> = Vec::new();
    let mut seen = 0;
    while seen < n {
        let w = s.next_window().unwrap();
        if w.source != 0 {
            continue;
        }
        let skip = if stream.is_empty() { 0 } else { 1 };
        stream.extend_from_slice(&w.tokens[skip..]);
        seen += 1;
    }
    let text: String = stream.iter().filter(|&&t| t < 256).map(|&t| t as u8 as char).collect();
    text.match_indices("t document ")
        .filter_map(|(i, _)| text[i + 11..].split(':').next().and_then(|n| n.parse().ok()))
        .collect()
}

#[test]
fn switching_topic_mixing_on_at_resume_skips_documents_already_read() {
    let (_a, mut plain) = setup("null");
    assert_eq!(plain.topic_weights(0).len(), 1);
    let before = t_docs(&mut plain, 20);
    let state = plain.state();
    let (_b, mut mixed) = setup("{rule: syne}");
    let report = mixed.restore(&state).unwrap();
    assert!(report.changes.iter().any(|c| c.contains("topic streams")), "{:?}", report.changes);
    // The half-read document continues first; after it, nothing read before comes again
    // until the epoch (120 documents) is used up.
    let after = t_docs(&mut mixed, 20);
    let last = *before.last().unwrap();
    let repeats: Vec<&usize> = after.iter().filter(|d| before.contains(d) && **d != last).collect();
    assert!(repeats.is_empty(), "read again: {repeats:?}");
    assert!(before.len() + after.len() < 120);
}
