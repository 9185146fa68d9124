//! The scoring machinery on a deterministic stand-in model: batching and prefix sharing
//! change nothing, windows cover every token once, metrics and k-means behave.
use cpt::eval::entropy::{kmeans_1d, select_by_entropy};
use cpt::eval::loglik::{encode_pair, loglikelihoods, EngineOptions, LoglikRequest};
use cpt::eval::metrics::{predict, summarize, QuestionResult};
use cpt::eval::perplexity::{aggregate, count_words, rolling_windows, DocScore};
use cpt::eval::testing::{ByteEncoder, ToyLm, BYTE_BOS};

fn naive(lm: &ToyLm, r: &LoglikRequest) -> f64 {
    let mut full: Vec<u32> = r.context.iter().chain(&r.continuation).copied().collect();
    if full.len() > lm.max_len + 1 {
        full.drain(..full.len() - lm.max_len - 1);
    }
    let start = full.len() - r.continuation.len();
    (start..full.len()).map(|i| lm.log_probs(&full[..i])[full[i] as usize]).sum()
}

#[test]
fn batching_and_prefix_sharing_do_not_change_scores() {
    let lm = ToyLm { vocab: 300, max_len: 40 };
    let enc = ByteEncoder;
    let mut reqs = Vec::new();
    for ctx in ["Question one?\nAnswer:", "Question one?\nAnswer: A\n\nQuestion two?\nAnswer:", "", "a much longer context that will need left truncation, certainly more than forty bytes"] {
        for cont in [" A", " B", " CD", " A longer continuation"] {
            reqs.push(encode_pair(&enc, ctx, cont, true).unwrap());
        }
    }
    let reference: Vec<f64> = reqs.iter().map(|r| naive(&lm, r)).collect();
    for batch_tokens in [1, 50, 100_000] {
        let mut calls = 0;
        let got = loglikelihoods(&lm, &reqs, EngineOptions { batch_tokens }, &mut |_| calls += 1).unwrap();
        for (g, want) in got.iter().zip(&reference) {
            assert!((g.logprob - want).abs() < 1e-12, "batch_tokens {batch_tokens}: {} vs {want}", g.logprob);
        }
        assert!(calls >= 1);
    }
}

#[test]
fn one_forward_serves_all_single_token_choices() {
    struct Counting(ToyLm, std::cell::Cell<usize>);
    impl cpt::eval::LogitsModel for Counting {
        fn max_len(&self) -> usize {
            self.0.max_len
        }
        fn score_batch(&self, rows: &[cpt::eval::loglik::ScoreRow]) -> anyhow::Result<Vec<Vec<cpt::eval::TokenScore>>> {
            self.1.set(self.1.get() + rows.len());
            self.0.score_batch(rows)
        }
    }
    let lm = Counting(ToyLm { vocab: 300, max_len: 100 }, std::cell::Cell::new(0));
    let reqs: Vec<_> = ["A", "B", "C", "D"].iter().map(|c| encode_pair(&ByteEncoder, "Q?\n答案：", c, true).unwrap()).collect();
    loglikelihoods(&lm, &reqs, EngineOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(lm.1.get(), 1, "four letter choices should share one row");
}

#[test]
fn encode_pair_moves_trailing_space_to_the_continuation() {
    let r = encode_pair(&ByteEncoder, "Answer: ", "A", false).unwrap();
    assert_eq!(r.context, b"Answer:".iter().map(|&b| b as u32).collect::<Vec<_>>());
    assert_eq!(r.continuation, vec![b' ' as u32, b'A' as u32]);
    let empty = encode_pair(&ByteEncoder, "", "hi", true).unwrap();
    assert_eq!(empty.context, vec![BYTE_BOS]);
}

#[test]
fn rolling_windows_predict_every_token_once() {
    let tokens: Vec<u32> = (0..23).collect();
    for max_len in [1, 4, 7, 23, 50] {
        let w = rolling_windows(&tokens, 99, max_len);
        let predicted: Vec<u32> = w.iter().flat_map(|r| r.continuation.clone()).collect();
        assert_eq!(predicted, tokens, "max_len {max_len}");
        assert_eq!(w[0].context, vec![99]);
        for r in &w {
            assert!(r.context.len() + r.continuation.len() - 1 <= max_len, "window longer than {max_len}");
            assert!(!r.context.is_empty());
        }
    }
    // lm-evaluation-harness' rule: a full later window sees one token of context.
    let w = rolling_windows(&tokens, 99, 5);
    assert_eq!(w[1].context, vec![4]);
    assert_eq!(w[1].continuation, vec![5, 6, 7, 8, 9]);
    // The last, short window is filled up with earlier tokens.
    assert_eq!(w.last().unwrap().continuation, vec![20, 21, 22]);
    assert_eq!(w.last().unwrap().context, vec![17, 18, 19]);
}

#[test]
fn perplexity_aggregates() {
    assert_eq!(count_words("a b  c"), 3);
    assert_eq!(count_words(" a"), 2); // re.split(r"\s+", " a") == ['', 'a']
    let docs = [
        DocScore { tokens: 4, bytes: 10, words: 2, logprob: -8.0, entropy: 0.0 },
        DocScore { tokens: 6, bytes: 10, words: 3, logprob: -12.0, entropy: 0.0 },
    ];
    let r = aggregate("x", &docs);
    assert!((r.token_loss - 2.0).abs() < 1e-12);
    assert!((r.token_perplexity - 2f64.exp()).abs() < 1e-9);
    assert!((r.bits_per_byte - 1.0 / std::f64::consts::LN_2).abs() < 1e-12);
    assert!((r.word_perplexity - 4f64.exp()).abs() < 1e-9);
}

fn result(subject: &str, correct: bool) -> QuestionResult {
    QuestionResult {
        benchmark: "cmmlu".into(),
        subject: subject.into(),
        id: "0".into(),
        line: 2,
        shots: 5,
        loglik: vec![-1.0; 4],
        greedy: vec![false; 4],
        prediction: "A".into(),
        prediction_norm: "A".into(),
        answer: if correct { "A" } else { "B" }.into(),
        correct,
        correct_norm: correct,
    }
}

#[test]
fn micro_and_macro_accuracy() {
    // s1: 3/4 correct, s2: 0/1 correct.
    let mut rs: Vec<_> = [true, true, true, false].iter().map(|&c| result("s1", c)).collect();
    rs.push(result("s2", false));
    let cats = |s: &str| if s == "s1" { vec!["X".to_string(), "Y".to_string()] } else { vec!["X".to_string()] };
    let rep = summarize(&rs, &cats);
    assert!((rep.overall.acc_micro - 0.6).abs() < 1e-12);
    assert!((rep.overall.acc_macro - 0.375).abs() < 1e-12);
    assert_eq!(rep.categories["X"].subjects, 2);
    assert!((rep.categories["Y"].acc_micro - 0.75).abs() < 1e-12);
    // Ties go to the first choice, as numpy's argmax.
    assert_eq!(predict(&[-1.0, -1.0, -2.0, -3.0], &["A".into(), "B".into(), "C".into(), "D".into()]), (0, 0));
    // acc_norm divides by the choice's length in characters.
    assert_eq!(predict(&[-3.0, -4.0], &["abc".into(), "abcdefgh".into()]), (0, 1));
}

#[test]
fn kmeans_and_entropy_band() {
    let values = [1.0, 1.1, 0.9, 3.0, 3.2, 2.8, 6.0, 6.1];
    let (centres, assign) = kmeans_1d(&values, 3, 100);
    assert_eq!(centres.len(), 3);
    assert!((centres[0] - 1.0).abs() < 1e-9 && (centres[1] - 3.0).abs() < 1e-9 && (centres[2] - 6.05).abs() < 1e-9);
    assert_eq!(assign, vec![0, 0, 0, 1, 1, 1, 2, 2]);
    // Model entropy 1.8: the band 1..1.5 nats above holds the cluster at 3.0.
    let sel = select_by_entropy(&values, 1.8, 3, (1.0, 1.5));
    assert_eq!(sel.selected, vec![3, 4, 5]);
    assert!(!sel.nearest_fallback);
    let none = select_by_entropy(&values, 10.0, 3, (1.0, 1.5));
    assert!(none.nearest_fallback);
    assert_eq!(none.selected, vec![6, 7]);
}

#[test]
fn documents_read_jsonl_fields_and_text_blocks() {
    use cpt::eval::documents::{read_documents, TextSplit};
    let tmp = tempfile::tempdir().unwrap();
    let j = tmp.path().join("sft.jsonl");
    std::fs::write(&j, "{\"instruction\":\"Add.\",\"input\":\"\",\"output\":\"2\"}\n\n{\"instruction\":\"Hi\",\"output\":\"Hello\"}\n").unwrap();
    let docs = read_documents(&j, "instruction,input,output", TextSplit::File).unwrap();
    assert_eq!(docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(), vec!["Add.\n2", "Hi\nHello"]);
    assert_eq!(docs[1].location, format!("{}:3", j.display()));
    std::fs::write(&j, "{\"text\":\"ok\"}\n{\"text\":3}\n").unwrap();
    let e = format!("{:#}", read_documents(&j, "text", TextSplit::File).unwrap_err());
    assert!(e.contains("sft.jsonl:2") && e.contains("not a string"), "{e}");
    let t = tmp.path().join("a.txt");
    std::fs::write(&t, "para one\nline two\n\n\npara two\n").unwrap();
    let docs = read_documents(&t, "text", TextSplit::BlankLine).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].text, "para one\nline two");
    assert_eq!(docs[1].location, format!("{}:5", t.display()));
    assert_eq!(read_documents(&t, "text", TextSplit::File).unwrap().len(), 1);
}
