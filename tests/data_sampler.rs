//! The sampler: proportions, stage boundaries, determinism, exact resume, changed mixtures
//! on resume, repeat caps, curriculum order, validation split and packing.
mod data_common;

use std::collections::{BTreeMap, HashSet};

use cpt::data::{PreparedData, Sampler, SamplerState};
use data_common::*;

const EOS: u32 = 257;

struct Corpus {
    _tmp: tempfile::TempDir,
    tok: std::path::PathBuf,
    cache: std::path::PathBuf,
    root: std::path::PathBuf,
}

/// Three JSONL sources `a`, `b`, `c` (groups `x`, `x`, `y`) of `n` documents each.
fn corpus(n: usize) -> Corpus {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let tok = byte_tokenizer(&root.join("tok"), 0);
    for name in ["a", "b", "c"] {
        write_jsonl(&root.join(format!("{name}/part.jsonl")), &docs(name, n, 300));
    }
    Corpus { tok, cache: root.join("cache"), root, _tmp: tmp }
}

fn config(c: &Corpus, extra: &str) -> cpt::data::DataConfig {
    let r = p(&c.root);
    parse_config(&format!(
        "sources:\n  - {{name: a, paths: {r}/a, group: x}}\n  - {{name: b, paths: {r}/b, group: x}}\n  - {{name: c, paths: {r}/c, group: y}}\n{extra}"
    ))
}

fn open(c: &Corpus, cfg: &cpt::data::DataConfig) -> PreparedData {
    prepare_and_open(cfg, &c.tok, &c.cache)
}

/// The document numbers (`<tag> document N:`) that start inside a window, in order.
fn doc_ids(tokens: &[u32]) -> Vec<(char, usize)> {
    let bytes: Vec<u8> = tokens.iter().filter(|&&t| t < 256).map(|&t| t as u8).collect();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(pos) = rest.find(" document ") {
        let tag = rest[..pos].chars().last().unwrap_or('?');
        let after = &rest[pos + 10..];
        let num: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
        if after[num.len()..].starts_with(':') && !num.is_empty() {
            out.push((tag, num.parse().unwrap()));
        }
        rest = &rest[pos + 10..];
    }
    out
}

#[test]
fn realised_proportions_match_weights_within_half_a_percent() {
    let c = corpus(200);
    let cfg = config(&c, "sampler: {max_repeats: null}\nstages:\n  - {name: s1, tokens: 3M, weights: {a: 0.5, b: 0.3, c: 0.2}}\n");
    let mut s = Sampler::new(&cfg, open(&c, &cfg), 256, 7).unwrap();
    let mut per_source = [0u64; 3];
    while s.tokens() < 3_000_000 {
        let w = s.next_window().unwrap();
        assert_eq!(w.tokens.len(), 257);
        per_source[w.source] += 256;
    }
    let total: u64 = per_source.iter().sum();
    assert!(total >= 3_000_000);
    for (i, want) in [0.5, 0.3, 0.2].iter().enumerate() {
        let got = per_source[i] as f64 / total as f64;
        assert!((got - want).abs() / want < 0.005, "source {i}: {got} vs {want}");
        assert_eq!(s.source_tokens(i), per_source[i]);
    }
    // Prefix-exactness: at every prefix the counts stay within one window of the weights.
    let mut s = Sampler::new(&cfg, open(&c, &cfg), 256, 7).unwrap();
    let mut counts = [0f64; 3];
    for k in 1..=2000 {
        counts[s.next_window().unwrap().source] += 1.0;
        for (i, w) in [0.5, 0.3, 0.2].iter().enumerate() {
            assert!((counts[i] - w * k as f64).abs() <= 1.0, "window {k}: {counts:?}");
        }
    }
}

#[test]
fn group_weights_split_inside_the_group() {
    let c = corpus(50);
    let cfg = config(
        &c,
        "sampler: {max_repeats: null}\nstages:\n  - {tokens: 1M, groups: {x: 0.8, y: 0.2}, weights: {a: 0.75, b: 0.25}}\n  - {groups: {x: 0.5, y: 0.5}}\n",
    );
    let s = Sampler::new(&cfg, open(&c, &cfg), 128, 1).unwrap();
    let w = &s.stages()[0].weights;
    assert!((w[0] - 0.6).abs() < 1e-12 && (w[1] - 0.2).abs() < 1e-12 && (w[2] - 0.2).abs() < 1e-12, "{w:?}");
    let w = &s.stages()[1].weights;
    assert!((w[0] - 0.25).abs() < 1e-12 && (w[1] - 0.25).abs() < 1e-12 && (w[2] - 0.5).abs() < 1e-12, "{w:?}");
    assert_eq!(s.stages()[1].start, 1_000_000);
    assert_eq!(s.stages()[1].tokens, None);
}

#[test]
fn stages_switch_at_the_exact_token_boundary() {
    let c = corpus(100);
    let seq = 128u64;
    let cfg = config(
        &c,
        &format!("sampler: {{max_repeats: null}}\nstages:\n  - {{name: one, tokens: {}, weights: {{a: 1}}}}\n  - {{name: two, tokens: {}, weights: {{b: 1}}}}\n  - {{name: three, weights: {{c: 1}}}}\n", 100 * seq, 37 * seq + 5),
    );
    let mut s = Sampler::new(&cfg, open(&c, &cfg), seq as usize, 3).unwrap();
    for k in 0..100 {
        assert_eq!(s.stage(), 0);
        let w = s.next_window().unwrap();
        assert_eq!((w.source, w.stage), (0, 0), "window {k}");
    }
    assert_eq!(s.tokens(), 100 * seq);
    assert_eq!(s.stage(), 1);
    // Stage two's budget ends 5 tokens into window 137: that window, whose first token is
    // before the boundary, is still stage two's; the next one is stage three's.
    for _ in 0..38 {
        let w = s.next_window().unwrap();
        assert_eq!((w.source, w.stage), (1, 1));
    }
    let w = s.next_window().unwrap();
    assert_eq!((w.source, w.stage), (2, 2));
    assert!(!s.past_plan());
}

#[test]
fn same_seed_same_stream_and_another_seed_another() {
    let c = corpus(80);
    let cfg = config(&c, "sampler: {max_repeats: null}\nstages:\n  - {tokens: 1M, weights: {a: 2, b: 1, c: 1}}\n");
    let take = |seed: u64| -> Vec<cpt::data::Window> {
        let mut s = Sampler::new(&cfg, open(&c, &cfg), 200, seed).unwrap();
        (0..300).map(|_| s.next_window().unwrap()).collect()
    };
    let first = take(11);
    assert_eq!(first, take(11));
    assert_ne!(first, take(12));
}

#[test]
fn packing_keeps_document_boundaries() {
    let c = corpus(60);
    let cfg = config(&c, "sampler: {max_repeats: null}\nstages:\n  - {tokens: 1M, weights: {a: 1, b: 1}}\n");
    let mut s = Sampler::new(&cfg, open(&c, &cfg), 300, 5).unwrap();
    let mut last_by_source: BTreeMap<usize, u32> = BTreeMap::new();
    for _ in 0..200 {
        let w = s.next_window().unwrap();
        assert_eq!(w.doc_starts[0], 0);
        assert_eq!(w.doc_starts.len(), w.topics.len());
        for pair in w.doc_starts.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        for &d in &w.doc_starts[1..] {
            assert_eq!(w.tokens[d as usize - 1], EOS, "a document starts right after an EOS");
        }
        for (k, &t) in w.tokens.iter().enumerate() {
            if t == EOS && k + 1 < w.tokens.len() {
                assert!(w.doc_starts.contains(&(k as u32 + 1)), "after every EOS a document starts");
            }
        }
        // One-token overlap: a window starts with its source's previous last token.
        if let Some(prev) = last_by_source.get(&w.source) {
            assert_eq!(w.tokens[0], *prev);
        }
        last_by_source.insert(w.source, *w.tokens.last().unwrap());
    }
}

fn resume_config(c: &Corpus) -> cpt::data::DataConfig {
    config(c, "sampler: {max_repeats: null}\nstages:\n  - {name: s1, tokens: 200000, weights: {a: 0.6, b: 0.4}}\n  - {name: s2, weights: {b: 0.5, c: 0.5}}\n")
}

#[test]
fn save_and_restore_mid_stage_continues_identically() {
    let c = corpus(120);
    let cfg = resume_config(&c);
    let mut original = Sampler::new(&cfg, open(&c, &cfg), 250, 9).unwrap();
    for _ in 0..333 {
        original.next_window().unwrap();
    }
    // Through JSON, as a checkpoint stores it.
    let saved = serde_json::to_string(&original.state()).unwrap();
    let state: SamplerState = serde_json::from_str(&saved).unwrap();
    let mut resumed = Sampler::new(&cfg, open(&c, &cfg), 250, 9).unwrap();
    let report = resumed.restore(&state).unwrap();
    assert!(report.is_exact(), "{:?}", report.changes);
    assert_eq!(resumed.state(), original.state());
    // Continue across the stage switch (window 800) and through epochs.
    for k in 0..2500 {
        assert_eq!(original.next_window().unwrap(), resumed.next_window().unwrap(), "window {k} after resume");
    }
}

#[test]
fn restore_exactly_at_a_stage_boundary_is_exact() {
    let c = corpus(120);
    let cfg = resume_config(&c); // stage one ends at 200000 tokens = 800 windows of 250
    let mut original = Sampler::new(&cfg, open(&c, &cfg), 250, 2).unwrap();
    for _ in 0..800 {
        original.next_window().unwrap();
    }
    assert_eq!(original.stage(), 1);
    let mut resumed = Sampler::new(&cfg, open(&c, &cfg), 250, 2).unwrap();
    let report = resumed.restore(&original.state()).unwrap();
    assert!(report.is_exact(), "{:?}", report.changes);
    for _ in 0..300 {
        assert_eq!(original.next_window().unwrap(), resumed.next_window().unwrap());
    }
}

#[test]
fn changed_mixture_on_resume_reports_and_does_not_reread_documents() {
    let c = corpus(400);
    let cfg = resume_config(&c);
    let mut first = Sampler::new(&cfg, open(&c, &cfg), 250, 4).unwrap();
    let mut seen: HashSet<(char, usize)> = HashSet::new();
    for _ in 0..200 {
        seen.extend(doc_ids(&first.next_window().unwrap().tokens));
    }
    let state = first.state();
    let changed = config(&c, "sampler: {max_repeats: null}\nstages:\n  - {name: s1, tokens: 200000, weights: {a: 0.2, b: 0.8}}\n  - {name: s2, weights: {b: 0.5, c: 0.5}}\n");
    let mut resumed = Sampler::new(&changed, open(&c, &changed), 250, 4).unwrap();
    let report = resumed.restore(&state).unwrap();
    assert!(!report.is_exact());
    assert!(report.changes.iter().any(|c| c.contains("weight of `a`") && c.contains("0.600000 -> 0.200000")), "{:?}", report.changes);
    assert_eq!(resumed.tokens(), first.tokens());
    // The rest of stage one follows the new weights, counted from the resume point.
    let mut counts = [0u64; 3];
    let mut again = 0;
    let mut first_window = true;
    while resumed.stage() == 0 {
        let w = resumed.next_window().unwrap();
        counts[w.source] += 1;
        for id in doc_ids(&w.tokens) {
            // The window that continues a half-read document may show its header again.
            if seen.contains(&id) && !first_window {
                again += 1;
            }
        }
        first_window = false;
    }
    let total = (counts[0] + counts[1]) as f64;
    assert!((counts[0] as f64 / total - 0.2).abs() < 0.02, "{counts:?}");
    assert!(again <= 2, "{again} documents read again (at most the two half-read ones may show)");
}

#[test]
fn repeat_cap_is_checked_before_training() {
    let c = corpus(20); // ~20 * 450 tokens per source
    let cfg = config(&c, "sampler: {max_repeats: 2}\nstages:\n  - {tokens: 500000, weights: {a: 1, b: 1}}\n");
    let err = Sampler::new(&cfg, open(&c, &cfg), 128, 1).err().expect("plan needs too many epochs").to_string();
    assert!(err.contains("source `a`") && err.contains("max_repeats 2"), "{err}");
    let warn = config(&c, "sampler: {max_repeats: 2, on_repeat_excess: warn}\nstages:\n  - {tokens: 500000, weights: {a: 1, b: 1}}\n");
    let s = Sampler::new(&warn, open(&c, &warn), 128, 1).unwrap();
    assert_eq!(s.warnings().len(), 2, "{:?}", s.warnings());
    // A per-source cap overrides the global one; an open-ended stage is caught while running.
    let r = p(&c.root);
    let open_ended = parse_config(&format!(
        "sampler: {{max_repeats: null}}\nsources:\n  - {{name: a, paths: {r}/a, max_repeats: 1}}\nstages:\n  - {{weights: {{a: 1}}}}\n"
    ));
    let mut s = Sampler::new(&open_ended, prepare_and_open(&open_ended, &c.tok, &c.cache), 128, 1).unwrap();
    let train = s.source_train_tokens(0);
    let mut err = None;
    for _ in 0..(train / 128 + 10) {
        if let Err(e) = s.next_window() {
            err = Some(e.to_string());
            break;
        }
    }
    let err = err.expect("reading past the cap fails");
    assert!(err.contains("repeat cap"), "{err}");
    assert!(s.source_epochs(0) <= 1.0 + 128.0 / train as f64);
}

#[test]
fn curriculum_orders_easy_to_hard_in_buckets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tok = byte_tokenizer(&root.join("tok"), 0);
    // Scores are a scrambled function of the document number.
    let records: Vec<serde_json::Value> = (0..200)
        .map(|i| serde_json::json!({"text": format!("s document {i}: {}", "x ".repeat(40)), "score": ((i * 37) % 200) as f64}))
        .collect();
    write_jsonl(&root.join("s/d.jsonl"), &records);
    let score_of = |i: usize| ((i * 37) % 200) as f64;
    for (order, buckets) in [("easy_to_hard", 4usize), ("hard_to_easy", 5)] {
        let cfg = parse_config(&format!(
            "validation: {{fraction: 0}}\nsampler: {{max_repeats: null}}\ncurriculum: {{order: {order}, buckets: {buckets}}}\nsources:\n  - {{name: s, paths: {}}}\n",
            p(&root.join("s"))
        ));
        let mut s = Sampler::new(&cfg, prepare_and_open(&cfg, &tok, &root.join("cache")), 100, 3).unwrap();
        // Windows of one source overlap by one token: stitch them back into its stream.
        let mut stream: Vec<u32> = s.next_window().unwrap().tokens;
        for _ in 0..250 {
            stream.extend_from_slice(&s.next_window().unwrap().tokens[1..]);
        }
        let seq: Vec<usize> = doc_ids(&stream).into_iter().map(|(_, i)| i).collect();
        assert!(seq.len() > 200);
        let seq = &seq[..200];
        assert_eq!(seq.iter().collect::<HashSet<_>>().len(), 200, "one epoch shows every document once");
        let bucket = |i: usize| {
            let rank = score_of(i) as usize; // scores are a permutation of 0..200
            let rank = if order == "easy_to_hard" { rank } else { 199 - rank };
            rank * buckets / 200
        };
        let buckets_seen: Vec<usize> = seq.iter().map(|&i| bucket(i)).collect();
        assert!(buckets_seen.windows(2).all(|w| w[0] <= w[1]), "{order}: buckets out of order: {buckets_seen:?}");
        // Inside a bucket the order is shuffled, not sorted.
        let first: Vec<f64> = seq[..200 / buckets].iter().map(|&i| score_of(i)).collect();
        assert!(first.windows(2).any(|w| w[0] > w[1]) && first.windows(2).any(|w| w[0] < w[1]));
    }
}

#[test]
fn validation_split_is_held_out_stable_and_packed() {
    let c = corpus(300);
    let cfg = config(&c, "validation: {fraction: 0.05, max_docs: 10}\nsampler: {max_repeats: null}\nstages:\n  - {tokens: 400000, weights: {a: 1}}\n");
    let s1 = Sampler::new(&cfg, open(&c, &cfg), 256, 1).unwrap();
    let s2 = Sampler::new(&cfg, open(&c, &cfg), 256, 2).unwrap();
    assert_eq!(s1.validation_docs(0).len(), 10);
    assert_eq!(s1.validation_docs(0), s2.validation_docs(0), "the split does not depend on the seed");
    let val_ids: HashSet<usize> = s1
        .validation_windows(0)
        .iter()
        .flat_map(|w| doc_ids(&w.tokens))
        .map(|(_, i)| i)
        .collect();
    assert_eq!(val_ids.len(), 10);
    let val_tokens: usize = s1.validation_docs(0).iter().map(|&d| s1.data().source(0).doc(d as usize).len as usize).sum();
    let windows = s1.validation_windows(0);
    let packed: usize = windows.iter().map(|w| w.tokens.len()).sum::<usize>() - (windows.len() - 1);
    assert_eq!(packed, val_tokens, "every held-out token appears once (plus the overlaps)");
    // Training never shows a held-out document.
    let mut s = s1;
    for _ in 0..1500 {
        for (tag, id) in doc_ids(&s.next_window().unwrap().tokens) {
            assert!(!(tag == 'a' && val_ids.contains(&id)), "held-out document {id} in training");
        }
    }
}

#[test]
fn token_counts_parse_with_suffixes() {
    use cpt::data::config::parse_token_count;
    assert_eq!(parse_token_count("92.5B"), Ok(92_500_000_000));
    assert_eq!(parse_token_count("10M"), Ok(10_000_000));
    assert_eq!(parse_token_count("64k"), Ok(64_000));
    assert_eq!(parse_token_count("1_000_000"), Ok(1_000_000));
    assert!(parse_token_count("1.5").is_err());
    assert!(parse_token_count("-3M").is_err());
    assert!(parse_token_count("lots").is_err());
}

#[test]
fn unknown_names_in_stages_are_errors_with_the_field_path() {
    let c = corpus(5);
    let r = p(&c.root);
    let err = cpt::data::DataConfig::load_str(
        &format!("sources:\n  - {{name: zh_web, paths: {r}/a}}\nstages:\n  - {{tokens: 10M, weights: {{zh_wbe: 1}}}}\n"),
        "cfg.yaml",
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("data.stages[0].weights.zh_wbe") && msg.contains("did you mean `zh_web`"), "{msg}");
    let err = cpt::data::DataConfig::load_str(&format!("sources:\n  - {{name: a, paths: {r}/a, fromat: jsonl}}\n"), "cfg.yaml").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("cfg.yaml") && msg.contains("sources[0]") && msg.contains("fromat"), "{msg}");
    let err = cpt::data::DataConfig::load_str(
        &format!("sources:\n  - {{name: a, paths: {r}/a}}\nstages:\n  - {{tokens: 12Q, weights: {{a: 1}}}}\n"),
        "cfg.yaml",
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("stages[0].tokens"), "{err:#}");
}

#[test]
fn ranks_split_each_step_exactly_as_one_rank_draws_it() {
    use cpt::data::RankSlice;
    let c = corpus(60);
    let cfg = resume_config(&c);
    let (per_rank, world, steps) = (3usize, 3usize, 40);
    let mut one = Sampler::new(&cfg, open(&c, &cfg), 250, 5).unwrap();
    let mut ranks: Vec<Sampler> = (0..world).map(|_| Sampler::new(&cfg, open(&c, &cfg), 250, 5).unwrap()).collect();
    for step in 0..steps {
        let global = RankSlice::all().draw_step(&mut one, per_rank * world).unwrap();
        for (r, sampler) in ranks.iter_mut().enumerate() {
            let mine = RankSlice { rank: r, world }.draw_step(sampler, per_rank).unwrap();
            assert_eq!(mine, global[r * per_rank..(r + 1) * per_rank].to_vec(), "step {step}, rank {r}");
            // Skipping leaves exactly the state drawing would: one sampler state for all ranks.
            assert_eq!(sampler.state(), one.state(), "step {step}, rank {r}");
        }
    }
}
