//! `cpt score` on raw corpora and on prepared shards: per-document scores land where the
//! curriculum reads them.
use std::path::PathBuf;

use candle_core::{DType, Device};
use cpt::data::shards::{DocLabels, ShardReader, ShardWriter, SourceSummary};
use cpt::eval::documents::{read_documents, TextSplit};
use cpt::eval::loglik::EngineOptions;
use cpt::eval::model_adapter::CandleLm;
use cpt::eval::perplexity::score_documents;
use cpt::eval::requests::TextEncoder;
use cpt::eval::score::{score_prepared_source, write_scored_jsonl, ScoreFields};
use cpt::model::Tokenizer;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/tiny-llama")
}

const TEXTS: [&str; 3] = ["The quick brown fox jumps over the lazy dog.", "以下是关于农学的单项选择题", "short"];

#[test]
fn prepared_shards_get_perplexity_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let lm = CandleLm::load(&model_dir(), &Device::Cpu, DType::F32, Some(16)).unwrap();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    // A prepared source as `cpt prepare` writes it: BOS + text tokens per document.
    let mut w = ShardWriter::create(tmp.path(), tok.vocab_size()).unwrap();
    for (i, t) in TEXTS.iter().enumerate() {
        let ids = tok.encode(t, true).unwrap();
        w.push(&ids, &DocLabels { lang: None, topic: None, id: None, score: None }, i as u64).unwrap();
    }
    w.finish(SourceSummary::default()).unwrap();

    let scores = score_prepared_source(&lm, tmp.path(), tok.prefix_token(), usize::MAX, EngineOptions::default(), &mut |_, _| {}).unwrap();
    // Same numbers as scoring the raw text (the document's BOS serves as the prefix).
    let texts: Vec<String> = TEXTS.iter().map(|s| s.to_string()).collect();
    let raw = score_documents(&lm, &tok, &texts, usize::MAX, EngineOptions::default(), &mut |_, _| {}).unwrap();
    let reader = ShardReader::open(tmp.path()).unwrap();
    assert_eq!(reader.meta().scored_docs, 3);
    for i in 0..3 {
        assert!((scores[i].logprob - raw[i].logprob).abs() < 1e-9);
        let want = raw[i].mean_loss().exp();
        let got = reader.doc(i).score as f64;
        assert!((got - want).abs() / want < 1e-6, "doc {i}: {got} vs {want}");
        assert_eq!(reader.doc_tokens(i), tok.encode(TEXTS[i], true).unwrap(), "tokens untouched");
    }
}

#[test]
fn raw_jsonl_keeps_fields_and_adds_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("c.jsonl");
    let lines: Vec<String> = TEXTS.iter().enumerate().map(|(i, t)| format!("{{\"id\":{i},\"lang\":\"x\",\"text\":{:?}}}", t)).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let docs = read_documents(&input, "text", TextSplit::File).unwrap();
    let lm = CandleLm::load(&model_dir(), &Device::Cpu, DType::F32, None).unwrap();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let texts: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
    let scores = score_documents(&lm, &tok, &texts, usize::MAX, EngineOptions::default(), &mut |_, _| {}).unwrap();
    let out = tmp.path().join("out.jsonl");
    write_scored_jsonl(&out, &docs, &scores, &ScoreFields::default()).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["id"], i);
        assert_eq!(v["lang"], "x");
        assert_eq!(v["text"], TEXTS[i]);
        let ppl = v["score"].as_f64().unwrap();
        assert!((ppl - scores[i].mean_loss().exp()).abs() < 1e-9);
        assert_eq!(v["score_tokens"], scores[i].tokens);
    }
}
