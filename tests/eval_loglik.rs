//! Log-likelihoods and rolling perplexity windows of the tiny Llama match transformers
//! (fixtures: scripts/make_eval_fixtures.py) within 1e-4.
use std::path::PathBuf;

use candle_core::{DType, Device};
use cpt::eval::loglik::{encode_pair, loglikelihoods, EngineOptions, LoglikRequest};
use cpt::eval::model_adapter::CandleLm;
use cpt::eval::perplexity::{rolling_windows, score_documents};
use cpt::eval::requests::TextEncoder;
use cpt::model::Tokenizer;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load() -> (Value, Tokenizer, PathBuf) {
    let root = fixtures();
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(root.join("loglik.json")).unwrap()).unwrap();
    let tok = Tokenizer::from_dir(&root.join("tiny-llama")).unwrap();
    (spec, tok, root.join("tiny-llama"))
}

#[test]
fn multiple_choice_logliks_match_transformers() {
    let (spec, tok, dir) = load();
    let lm = CandleLm::load(&dir, &Device::Cpu, DType::F32, None).unwrap();
    let reqs = spec["requests"].as_array().unwrap();
    let mut built = Vec::new();
    for r in reqs {
        let pair = encode_pair(&tok, r["context"].as_str().unwrap(), r["continuation"].as_str().unwrap(), r["add_special"].as_bool().unwrap()).unwrap();
        assert_eq!(pair.context, ids(&r["context_ids"]), "context tokens of {:?}", r["continuation"]);
        assert_eq!(pair.continuation, ids(&r["continuation_ids"]));
        built.push(pair);
    }
    // Small batches and large ones must agree with the reference alike.
    for batch_tokens in [1, 100_000] {
        let got = loglikelihoods(&lm, &built, EngineOptions { batch_tokens }, &mut |_| {}).unwrap();
        for (g, r) in got.iter().zip(reqs) {
            let want = r["loglik"].as_f64().unwrap();
            assert!((g.logprob - want).abs() < 1e-4, "loglik {} vs transformers {want}", g.logprob);
            assert_eq!(g.greedy, r["greedy"].as_bool().unwrap());
        }
    }
    // Left truncation at a short context.
    let short = CandleLm::load(&dir, &Device::Cpu, DType::F32, Some(24)).unwrap();
    for t in spec["truncated"].as_array().unwrap() {
        let i = t["index"].as_u64().unwrap() as usize;
        let got = loglikelihoods(&short, &built[i..=i], EngineOptions::default(), &mut |_| {}).unwrap();
        let want = t["loglik"].as_f64().unwrap();
        assert!((got[0].logprob - want).abs() < 1e-4, "truncated loglik {} vs {want}", got[0].logprob);
    }
}

#[test]
fn rolling_windows_and_document_logliks_match() {
    let (spec, tok, dir) = load();
    let lm = CandleLm::load(&dir, &Device::Cpu, DType::F32, None).unwrap();
    for d in spec["rolling"].as_array().unwrap() {
        let text = d["text"].as_str().unwrap().to_string();
        let max_len = d["max_len"].as_u64().unwrap() as usize;
        let tokens = tok.encode(&text, false).unwrap();
        assert_eq!(tokens, ids(&d["token_ids"]));
        let windows = rolling_windows(&tokens, tok.prefix_token(), max_len);
        let want: Vec<LoglikRequest> = d["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| LoglikRequest { context: ids(&w[0]), continuation: ids(&w[1]) })
            .collect();
        assert_eq!(windows, want, "windows of {text:?} at {max_len}");
        let scores = score_documents(&lm, &tok, &[text.clone()], max_len, EngineOptions::default(), &mut |_, _| {}).unwrap();
        let want = d["loglik"].as_f64().unwrap();
        assert!((scores[0].logprob - want).abs() < 1e-4, "{text:?}: {} vs {want}", scores[0].logprob);
        assert_eq!(scores[0].tokens, tokens.len());
    }
}
