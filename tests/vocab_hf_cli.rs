//! `cpt vocab` through the binary, and the extended models checked with transformers
//! (skipped with a message where Python lacks transformers/torch).
mod vocab_support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vocab_support::*;

fn cpt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cpt")).args(args).output().expect("running cpt")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_extend_then_stats() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("base"), dir.path().join("extended"));
    let tok = byte_level_tokenizer_json();
    write_model(&src, &tok, id_space(&tok), false, "PreTrainedTokenizerFast");
    let zh = fixture("zh.txt");
    let en = fixture("en.txt");

    let o = cpt(&["vocab", "extend", "--model", s(&src), "--corpus", s(&zh), "--add", "50", "--out", s(&out), "--pad-to-multiple", "32"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("added 50 tokens"), "{stdout}");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"].as_u64().unwrap() % 32, 0);

    let o = cpt(&["vocab", "stats", "--tokenizer", s(&src), "--compare", s(&out), "--corpus", s(&zh), s(&en)]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let zh_row: Vec<&str> = table.lines().find(|l| l.trim_start().starts_with("zh")).expect("zh row").split_whitespace().collect();
    let ratio: f64 = zh_row.last().unwrap().parse().unwrap();
    assert!(ratio < 0.8, "Chinese tokens after/before = {ratio}\n{table}");
    let en_row: Vec<&str> = table.lines().find(|l| l.trim_start().starts_with("en")).expect("en row").split_whitespace().collect();
    assert_eq!(en_row.last().unwrap().parse::<f64>().unwrap(), 1.0, "{table}");

    let o = cpt(&["vocab", "stats", "--tokenizer", s(&out), "--corpus", s(&zh), "--json"]);
    let json: Value = serde_json::from_slice(&o.stdout).expect("stats --json");
    assert!(json["languages"][0]["per_tokenizer"][0]["chars_per_token"].as_f64().unwrap() > 0.0);

    // Bad input: a clear message and exit status 1, no output directory.
    let o = cpt(&["vocab", "extend", "--model", s(&src), "--corpus", s(&zh), "--add", "100000", "--out", s(&dir.path().join("x"))]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.starts_with("error:") && stderr.contains("--add"), "{stderr}");
    assert!(!dir.path().join("x").exists());
}

fn python_has_transformers() -> bool {
    Command::new("python3")
        .args(["-c", "import transformers, torch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn probe_texts() -> Vec<String> {
    let mut texts = paragraphs(&read_fixture("zh.txt"));
    texts.extend(paragraphs(&read_fixture("en.txt")).into_iter().take(3));
    texts.push("Mixed 中文 and English: 北京和上海，数字 2026。".into());
    texts
}

/// Extends base models of both flavours (untied and tied) and checks them with
/// transformers in one Python run: the models load and their rows are right (checked in
/// the script), and AutoTokenizer and the raw tokenizer.json give the same ids as the
/// Rust tokenizer.
#[test]
fn transformers_loads_extended_models() {
    if !python_has_transformers() {
        println!("skipped: python3 with transformers and torch is not available (pip install -r scripts/requirements.txt)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("bytelevel", byte_level_tokenizer_json(), "PreTrainedTokenizerFast", false),
        ("qwen2-tied", qwen2_tokenizer_json(), "Qwen2Tokenizer", true),
        ("sentencepiece", sentencepiece_tokenizer_json(), "LlamaTokenizer", false),
    ];
    let texts = probe_texts();
    let texts_path = dir.path().join("texts.json");
    std::fs::write(&texts_path, serde_json::to_string(&texts).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_vocab_hf.py");
    let mut args: Vec<String> = vec![s(&script).into(), "--texts".into(), s(&texts_path).into()];
    for (name, tok, class, tied) in &cases {
        let (src, out) = (dir.path().join(name), dir.path().join(format!("{name}-ext")));
        write_model(&src, tok, id_space(tok) + if *tied { 7 } else { 0 }, *tied, class);
        let o = cpt(&["vocab", "extend", "--model", s(&src), "--corpus", s(&fixture("zh.txt")), "--add", "80", "--out", s(&out)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        args.extend(["--base".into(), s(&src).into(), "--extended".into(), s(&out).into()]);
    }
    let o = Command::new("python3").args(&args).output().unwrap();
    assert!(o.status.success(), "transformers check failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let results: Vec<Value> = serde_json::from_slice(&o.stdout).expect("script output");

    for ((name, _, class, _), py) in cases.iter().zip(&results) {
        let out = dir.path().join(format!("{name}-ext"));
        // transformers 5 names PreTrainedTokenizerFast `TokenizersBackend`.
        let auto_class = py["auto_class"].as_str().unwrap();
        assert!(auto_class == *class || (*class == "PreTrainedTokenizerFast" && auto_class == "TokenizersBackend"), "{name}: AutoTokenizer gave {auto_class}");
        let rust = load_tokenizer(&out);
        let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("vocab_extension.json")).unwrap()).unwrap();
        let first_new = report["old_id_space"].as_u64().unwrap() as u32;
        let mut new_seen = 0;
        for (i, text) in texts.iter().enumerate() {
            let ours = encode(&rust, text);
            let ids = |key: &str| -> Vec<u32> {
                py[key][i].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
            };
            assert_eq!(ids("fast"), ours, "{name}: PreTrainedTokenizerFast ids differ for {text:?}");
            assert_eq!(ids("auto"), ours, "{name}: {class} ids differ for {text:?}");
            assert_eq!(py["decoded"][i].as_str().unwrap(), text.as_str(), "{name}");
            new_seen += ours.iter().filter(|&&id| id >= first_new).count();
        }
        assert!(new_seen > 20, "{name}: new tokens barely used ({new_seen})");
    }
}
