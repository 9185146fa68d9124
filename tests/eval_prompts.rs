//! Prompts match the official scripts and lm-evaluation-harness byte for byte, including
//! shot dropping with a real tokenizer (fixtures: scripts/make_eval_fixtures.py).
use std::path::PathBuf;

use cpt::eval::benchmarks::{load_benchmark, BenchmarkKind};
use cpt::eval::requests::{build_request, Fit};
use cpt::eval::templates::{PromptStyle, Template};
use cpt::model::Tokenizer;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

#[test]
fn prompts_match_reference_byte_for_byte() {
    let root = fixtures();
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("prompts.json")).unwrap()).unwrap();
    let tok = Tokenizer::from_dir(&root.join("tiny-llama")).unwrap();
    let mut checked = 0;
    let mut dropped = 0;
    let mut with_continuations = 0;
    for p in spec["prompts"].as_array().unwrap() {
        let kind: BenchmarkKind = p["benchmark"].as_str().unwrap().parse().unwrap();
        let style: PromptStyle = p["style"].as_str().unwrap().parse().unwrap();
        let subject = p["subject"].as_str().unwrap().to_string();
        let dir = root.join(kind.name());
        let bench = load_benchmark(kind, &dir, None, Some(std::slice::from_ref(&subject))).unwrap();
        let s = &bench.subjects[0];
        let q = &s.questions[p["index"].as_u64().unwrap() as usize];
        let tpl = Template::new(kind, style, &subject);
        let shots = p["shots"].as_u64().unwrap() as usize;
        let fit = p["max_len"].as_u64().map(|m| Fit { encoder: &tok, max_len: m as usize, add_special: true });
        let req = build_request(&tpl, &s.dev, shots, q, fit.as_ref()).unwrap();
        assert_eq!(
            req.context,
            p["context"].as_str().unwrap(),
            "{kind} {style:?} {subject} #{} {shots}-shot (max_len {:?})",
            p["index"],
            p["max_len"]
        );
        assert_eq!(req.shots_used as u64, p["shots_used"].as_u64().unwrap());
        if let Some(conts) = p.get("continuations") {
            let want: Vec<String> = conts.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
            assert_eq!(req.continuations, want, "{kind} {subject} #{}", p["index"]);
            with_continuations += 1;
        }
        if req.shots_used < shots {
            dropped += 1;
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} prompts checked");
    assert!(dropped > 5, "shot dropping exercised only {dropped} times");
    assert_eq!(with_continuations, 6, "ARC and HellaSwag prompts");
}

#[test]
fn continuations_follow_each_style() {
    let root = fixtures();
    let bench = load_benchmark(BenchmarkKind::Cmmlu, &root.join("cmmlu"), None, None).unwrap();
    let q = &bench.subjects[0].questions[0];
    let t = |k, s| Template::new(k, s, "agronomy").continuation(q, 0);
    assert_eq!(t(BenchmarkKind::Mmlu, PromptStyle::Official), " A");
    assert_eq!(t(BenchmarkKind::Ceval, PromptStyle::Official), "A");
    assert_eq!(t(BenchmarkKind::Cmmlu, PromptStyle::Official), "A");
    assert_eq!(t(BenchmarkKind::Cmmlu, PromptStyle::LmEval), " A");
}
