//! The training loop's evaluation hook: the `eval:` YAML section parses strictly and its
//! tasks run against a model, returning metrics to log.
use std::path::PathBuf;

use candle_core::{DType, Device};
use cpt::eval::model_adapter::ModelScorer;
use cpt::model::CausalLm;
use cpt::eval::training::{parse_tasks, PreparedEvalTasks};
use cpt::model::Tokenizer;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

#[test]
fn eval_section_runs_benchmarks_and_perplexity() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("val.jsonl");
    std::fs::write(&corpus, "{\"text\":\"The quick brown fox.\"}\n{\"text\":\"以下是关于农学的单项选择题\"}\n").unwrap();
    let yaml = format!(
        "- kind: benchmark\n  benchmark: cmmlu\n  path: {}\n  shots: 2\n  limit: 2\n- kind: benchmark\n  name: mmlu_lm_eval\n  benchmark: mmlu\n  style: lm-eval\n  path: {}\n- kind: perplexity\n  name: zh_val\n  paths: [{}]\n  max_len: 16\n",
        fixtures().join("cmmlu").display(),
        fixtures().join("mmlu").display(),
        corpus.display()
    );
    let values: Vec<serde_yaml::Value> = serde_yaml::from_str(&yaml).unwrap();
    let tasks = PreparedEvalTasks::from_tasks(&parse_tasks(&values).unwrap(), 4096).unwrap();
    let dir = fixtures().join("tiny-llama");
    // The training loop keeps its model and lends it to the scorer.
    let model = CausalLm::from_pretrained(&dir, &Device::Cpu, DType::F32).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let m = tasks.run(&ModelScorer::new(&model, None), &tok).unwrap();
    assert_eq!(m["cmmlu"]["questions"], 4);
    assert_eq!(m["mmlu_lm_eval"]["questions"], 11);
    let acc = m["cmmlu"]["acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let ppl = m["zh_val"]["ppl"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{m}");
    assert!(m["zh_val"]["bits_per_byte"].as_f64().unwrap() > 0.0);
}

#[test]
fn eval_section_rejects_unknown_keys_and_bad_paths() {
    let yaml = |s: &str| -> Vec<serde_yaml::Value> { serde_yaml::from_str(s).unwrap() };
    let e = format!("{:#}", parse_tasks(&yaml("- kind: benchmark\n  benchmark: cmmlu\n  path: x\n  shotz: 3\n")).unwrap_err());
    assert!(e.contains("eval.tasks[0]") && e.contains("shotz"), "{e}");
    let e = format!(
        "{:#}",
        cpt::config::parse_config("model: {path: m}\ndata: {}\ntrain: {max_steps: 1}\neval: {every: 3}\n", "run.yaml", &[]).unwrap_err()
    );
    assert!(e.contains("eval") && e.contains("every_steps"), "{e}");
    let tasks = parse_tasks(&yaml("- kind: benchmark\n  benchmark: mmlu\n  path: no/such/dir\n")).unwrap();
    let e = format!("{:#}", PreparedEvalTasks::from_tasks(&tasks, 4096).err().unwrap());
    assert!(e.contains("eval.tasks[0].path") && e.contains("no/such/dir"), "{e}");

    // The training config's raw task values.
    let values: Vec<serde_yaml::Value> = serde_yaml::from_str(
        "- kind: perplexity\n  name: v\n  paths: [a.jsonl]\n- kind: benchmark\n  benchmark: cmmlu\n  path: x\n  shots: five\n",
    )
    .unwrap();
    let e = format!("{:#}", parse_tasks(&values).unwrap_err());
    assert!(e.contains("eval.tasks[1]") && e.contains("five"), "{e}");
    let values: Vec<serde_yaml::Value> = serde_yaml::from_str("- kind: benchmark\n  benchmark: gsm8k\n  path: x\n").unwrap();
    let e = format!("{:#}", parse_tasks(&values).unwrap_err());
    assert!(e.contains("eval.tasks[0]") && e.contains("gsm8k"), "{e}");
    let ok: Vec<serde_yaml::Value> = serde_yaml::from_str("- kind: perplexity\n  name: v\n  paths: [a.jsonl]\n").unwrap();
    assert_eq!(parse_tasks(&ok).unwrap().len(), 1);
}
