//! `cpt prepare` and `cpt data inspect` as a user runs them, on a training config whose
//! other sections the data pipeline ignores.
mod data_common;

use std::process::Command;

use data_common::*;

fn cpt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpt")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn prepare_then_inspect_a_training_config() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The model directory holds the tokenizer; the data section names no tokenizer.
    byte_tokenizer(&root.join("model"), 0);
    write_jsonl(&root.join("zh/web.jsonl"), &docs("zh", 60, 200));
    write_jsonl(&root.join("en/web.jsonl"), &docs("en", 120, 200));
    let mut bad = docs("en", 3, 50);
    bad.push(serde_json::json!({"txt": "no text field"}));
    write_jsonl(&root.join("en/extra.jsonl"), &bad);
    let config = root.join("train.yaml");
    std::fs::write(
        &config,
        format!(
            "run: {{out_dir: {r}/runs/a, seed: 3}}\nmodel: {{path: {r}/model}}\nbatch: {{seq_len: 64, micro_batch: 2}}\noptim: {{lr: 1.0e-5}}\n\
             data:\n  sources:\n    - {{name: zh_web, paths: {r}/zh, group: zh}}\n    - {{name: en_web, paths: {r}/en, group: en}}\n  \
             stages:\n    - {{name: bilingual, tokens: 6400, groups: {{zh: 0.2, en: 0.8}}}}\n    - {{name: rest, groups: {{zh: 0.5, en: 0.5}}}}\n",
            r = p(root)
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (ok, out, err) = cpt(&["prepare", "--config", cfg, "--quiet"]);
    assert!(ok, "{err}");
    assert!(out.contains("zh_web: built: 1 files, 60 documents"), "{out}");
    assert!(out.contains("en_web: built: 2 files, 123 documents") && out.contains("skipped 1: missing text field"), "{out}");
    assert!(out.contains("extra.jsonl:4"), "{out}");
    // The default cache sits beside the run directory.
    assert!(root.join("runs/data-cache/zh_web/tokens.bin").is_file());
    let (ok, out, _) = cpt(&["prepare", "--config", cfg, "--quiet"]);
    assert!(ok && out.contains("zh_web: reused"), "{out}");

    let (ok, out, err) = cpt(&["data", "inspect", "--config", cfg, "--json", "--windows", "3"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["seq_len"], 64, "batch.seq_len of the training config");
    assert_eq!(report["seed"], 3);
    let stage = &report["stages"][0];
    assert_eq!(stage["name"], "bilingual");
    assert_eq!(stage["windows"], 100);
    assert_eq!(stage["sources"][0]["realised_tokens"], 20 * 64);
    assert_eq!(stage["sources"][1]["realised_tokens"], 80 * 64);
    assert_eq!(stage["groups"]["zh"]["realised_tokens"], 20 * 64);
    assert!(stage["sources"][1]["epochs_at_end"].as_f64().unwrap() > 0.0);
    assert_eq!(report["stages"][1]["tokens"], serde_json::Value::Null);
    let windows = report["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 3);
    assert_eq!(windows[0]["source"], "en_web", "the larger weight goes first");
    assert!(windows[0]["text"].as_str().unwrap().contains("en document"));

    let (ok, out, _) = cpt(&["data", "inspect", "--config", cfg, "--seq-len", "32", "--windows", "1"]);
    assert!(ok);
    assert!(out.contains("stage bilingual") && out.contains("group zh") && out.contains("window 0"), "{out}");
}

#[test]
fn cli_errors_name_the_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    byte_tokenizer(&root.join("tok"), 0);
    write_jsonl(&root.join("a.jsonl"), &docs("a", 10, 100));
    let config = root.join("data.yaml");
    std::fs::write(&config, format!("tokenizer: {r}/tok\nsources:\n  - {{name: a, paths: {r}/a.jsonl, weigth: 1}}\n", r = p(root))).unwrap();
    let (ok, _, err) = cpt(&["prepare", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("data.yaml") && err.contains("sources[0]") && err.contains("weigth"), "{err}");
    std::fs::write(
        &config,
        format!("tokenizer: {r}/tok\nsampler: {{max_repeats: 1}}\nsources:\n  - {{name: a, paths: {r}/a.jsonl}}\nstages:\n  - {{tokens: 1M, weights: {{a: 1}}}}\n", r = p(root)),
    )
    .unwrap();
    // Inspect shows what training would refuse instead of stopping.
    let (ok, out, err) = cpt(&["data", "inspect", "--config", config.to_str().unwrap(), "--seq-len", "64"]);
    assert!(ok, "{err}");
    assert!(out.contains("error (training would stop)") && out.contains("max_repeats 1"), "{out}");
    std::fs::write(&config, format!("sources:\n  - {{name: a, paths: {r}/a.jsonl}}\n", r = p(root))).unwrap();
    let (ok, _, err) = cpt(&["prepare", "--config", config.to_str().unwrap()]);
    assert!(!ok && err.contains("no tokenizer"), "{err}");
}
