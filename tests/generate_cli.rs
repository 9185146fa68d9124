//! `cpt generate` end to end: one prompt streamed to stdout, a JSONL file of prompts with
//! `--chat`, and bad input reported with its file and line.
use std::path::{Path, PathBuf};
use std::process::Command;

const CPT: &str = env!("CARGO_BIN_EXE_cpt");

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate/text-llama")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(model().join("text.json")).unwrap()).unwrap()
}

#[test]
fn one_prompt_streams_the_greedy_text() {
    let fx = reference();
    let out = Command::new(CPT)
        .args(["generate", "--max-new-tokens", "16", "--prompt", fx["prompts"][0].as_str().unwrap(), "--model"])
        .arg(model())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", fx["texts"][0].as_str().unwrap()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("decode:"));
}

#[test]
fn a_file_of_prompts_with_the_chat_template() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.jsonl");
    std::fs::write(&prompts, "{\"id\": 7, \"prompt\": \"Hi\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"Yo\"}]}\n").unwrap();
    let out_path = dir.path().join("out.jsonl");
    let out = Command::new(CPT)
        .args(["generate", "--chat", "--max-new-tokens", "5", "--temperature", "0.7", "--seed", "1", "--model"])
        .arg(model())
        .arg("--prompts")
        .arg(&prompts)
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&out_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], 7);
    for r in &rows {
        assert!(r["output"].is_string());
        assert!(r["new_tokens"].as_u64().unwrap() <= 5);
        assert!(["eos", "length"].contains(&r["finish_reason"].as_str().unwrap()));
    }
}

#[test]
fn bad_prompt_files_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"ok\"}\n{\"text\": \"no prompt field\"}\n").unwrap();
    let out = Command::new(CPT)
        .args(["generate", "--model"])
        .arg(model())
        .arg("--prompts")
        .arg(&prompts)
        .arg("--out")
        .arg(dir.path().join("o.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.jsonl: line 2") && err.contains("`prompt`"), "{err}");
    assert!(!dir.path().join("o.jsonl").exists(), "no output on error");
    // A model without a chat template.
    let plain = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/tiny-llama");
    let out = Command::new(CPT).args(["generate", "--chat", "--prompt", "x", "--model"]).arg(plain).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no chat template"));
}
