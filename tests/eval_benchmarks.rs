//! Benchmark files: the released layouts parse; malformed files fail naming file and line;
//! the real CMMLU release parses and evaluates when `../shared/benchmarks/cmmlu` (relative
//! to the repository root, or `CPT_CMMLU_DIR`) is present.
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use cpt::eval::benchmarks::{load_benchmark, read_jsonl_file, read_subject_file, BenchmarkKind};
use cpt::eval::model_adapter::CandleLm;
use cpt::eval::multiple_choice::{evaluate_benchmark, McOptions};
use cpt::eval::subjects::is_known;
use cpt::model::Tokenizer;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn err_of(kind: BenchmarkKind, path: &Path, split: &str) -> String {
    format!("{:#}", read_subject_file(kind, path, split).unwrap_err())
}

#[test]
fn fixture_layouts_parse() {
    let m = load_benchmark(BenchmarkKind::Mmlu, &fixtures().join("mmlu"), None, None).unwrap();
    assert_eq!(m.subjects.len(), 3);
    assert_eq!(m.split, "test");
    let q = &m.subjects[0].questions[1];
    assert!(q.question.contains("\"x, y\"?\nConsider"));
    assert_eq!(q.official_choices[1], "nan"); // pandas reads "None" as NaN
    let c = load_benchmark(BenchmarkKind::Ceval, &fixtures().join("ceval"), None, None).unwrap();
    assert_eq!(c.split, "val");
    assert_eq!(c.subjects[0].dev.len(), 5);
    let cm = load_benchmark(BenchmarkKind::Cmmlu, &fixtures().join("cmmlu"), None, None).unwrap();
    assert_eq!(cm.num_questions(), 8);
    assert_eq!(cm.subjects[1].questions[0].line, 2);
    let arc = load_benchmark(BenchmarkKind::Arc, &fixtures().join("arc"), None, None).unwrap();
    assert_eq!(arc.num_questions(), 4);
    let easy = &arc.subjects[1].questions;
    assert_eq!((easy[1].answer, easy[1].labels[0].as_str()), (0, "1"));
    assert_eq!(easy[2].choices.len(), 5);
    let hs = load_benchmark(BenchmarkKind::Hellaswag, &fixtures().join("hellaswag/hellaswag_val.jsonl"), None, None).unwrap();
    assert_eq!(hs.subjects[0].questions[1].answer, 0);
}

#[test]
fn malformed_files_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let p = write(d, "x_test.csv", "q1,a,b,c,d,A\nq2,a,b,c,E\n");
    let e = err_of(BenchmarkKind::Mmlu, &p, "test");
    assert!(e.contains("x_test.csv") && e.contains("line 2") && e.contains("expected 6 fields"), "{e}");

    let p = write(d, "y_test.csv", "q1,a,b,c,d,A\n\"q2\nspans lines\",a,b,c,d,Z\n");
    let e = err_of(BenchmarkKind::Mmlu, &p, "test");
    assert!(e.contains("y_test.csv") && e.contains("line 2") && e.contains("\"Z\""), "{e}");

    let p = write(d, "z_test.csv", "q1,a,b,c,d,A\n\"open,a,b,c,d,A\n");
    let e = err_of(BenchmarkKind::Mmlu, &p, "test");
    assert!(e.contains("z_test.csv") && e.contains("line 2") && e.contains("never closed"), "{e}");

    let p = write(d, "h.csv", ",Question,A,B,C\n0,q,a,b,c\n");
    let e = err_of(BenchmarkKind::Cmmlu, &p, "test");
    assert!(e.contains("h.csv") && e.contains("line 1") && e.contains("`D`"), "{e}");

    let p = write(d, "law_test.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,\n");
    let e = err_of(BenchmarkKind::Ceval, &p, "test");
    assert!(e.contains("law_test.csv") && e.contains("hidden") && e.contains("val"), "{e}");

    let p = write(d, "bad_utf8_test.csv", "");
    std::fs::write(&p, b"q,\xff,b,c,d,A\n").unwrap();
    let e = err_of(BenchmarkKind::Mmlu, &p, "test");
    assert!(e.contains("bad_utf8_test.csv") && e.contains("UTF-8"), "{e}");

    let p = write(d, "arc.jsonl", "{\"id\":\"a\",\"question\":\"q\",\"choices\":{\"text\":[\"x\",\"y\"],\"label\":[\"A\",\"B\"]},\"answerKey\":\"A\"}\n{not json\n");
    let e = format!("{:#}", read_jsonl_file(BenchmarkKind::Arc, &p).unwrap_err());
    assert!(e.contains("arc.jsonl: line 2") && e.contains("bad JSON"), "{e}");
    let p = write(d, "arc2.jsonl", "{\"id\":\"a\",\"question\":\"q\",\"choices\":{\"text\":[\"x\",\"y\"],\"label\":[\"A\",\"B\"]},\"answerKey\":\"C\"}\n");
    let e = format!("{:#}", read_jsonl_file(BenchmarkKind::Arc, &p).unwrap_err());
    assert!(e.contains("arc2.jsonl: line 1") && e.contains("answerKey"), "{e}");
    let p = write(d, "hs.jsonl", "{\"activity_label\":\"a\",\"ctx_a\":\"b\",\"ctx_b\":\"c\",\"endings\":[\"x\",\"y\"],\"label\":\"\"}\n");
    let e = format!("{:#}", read_jsonl_file(BenchmarkKind::Hellaswag, &p).unwrap_err());
    assert!(e.contains("hs.jsonl: line 1") && e.contains("hidden"), "{e}");

    let e = format!("{:#}", load_benchmark(BenchmarkKind::Mmlu, &d.join("missing"), None, None).unwrap_err());
    assert!(e.contains("missing") && e.contains("does not exist"), "{e}");
    let e = format!("{:#}", load_benchmark(BenchmarkKind::Cmmlu, &fixtures().join("cmmlu"), None, Some(&["nope".into()])).unwrap_err());
    assert!(e.contains("nope"), "{e}");
}

fn cmmlu_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("CPT_CMMLU_DIR") {
        return Some(PathBuf::from(d));
    }
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/benchmarks/cmmlu");
    d.is_dir().then_some(d)
}

#[test]
fn real_cmmlu_parses_and_evaluates() {
    let Some(dir) = cmmlu_dir() else {
        println!("skipped: no CMMLU release at ../shared/benchmarks/cmmlu (or CPT_CMMLU_DIR)");
        return;
    };
    let bench = load_benchmark(BenchmarkKind::Cmmlu, &dir, None, None).unwrap();
    assert_eq!(bench.subjects.len(), 67);
    for s in &bench.subjects {
        assert!(is_known(BenchmarkKind::Cmmlu, &s.name), "unknown subject {}", s.name);
        assert_eq!(s.dev.len(), 5, "{}", s.name);
        assert!(!s.questions.is_empty(), "{}", s.name);
    }
    let n = bench.num_questions();
    assert!(n > 11_000, "only {n} test questions");

    // Evaluate two questions per subject with the tiny model (shots get dropped to fit).
    let model_dir = fixtures().join("tiny-llama");
    let lm = CandleLm::load(&model_dir, &Device::Cpu, DType::F32, None).unwrap();
    let tok = Tokenizer::from_dir(&model_dir).unwrap();
    let opts = McOptions { limit: Some(2), ..Default::default() };
    let run = evaluate_benchmark(&lm, &tok, &bench, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(run.results.len(), 134);
    assert_eq!(run.report.subjects.len(), 67);
    assert!(run.report.categories.contains_key("China specific"));
    for r in &run.results {
        assert_eq!(r.loglik.len(), 4);
        assert!(r.loglik.iter().all(|l| l.is_finite() && *l < 0.0));
    }
    println!("tiny random model on CMMLU (2 per subject): acc {:.3}", run.report.overall.acc_micro);
}
