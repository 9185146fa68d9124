//! BOS, EOS and PAD of five families' tokenizer setups against what transformers'
//! `AutoTokenizer` and `GenerationConfig` report on the same files (tiny copies and reference
//! values from scripts/make_tokenizer_families.py), the order of the rule when files disagree
//! or are missing, and that data preparation writes the EOS evaluation reads.
mod data_common;

use std::path::{Path, PathBuf};

use cpt::data::prepare::{prepare, PrepareOptions};
use cpt::data::shards::ShardReader;
use cpt::tokenizer::{SpecialOverrides, Tokenizer};
use data_common::{p, parse_config, write_jsonl};
use serde_json::Value;

const FAMILIES: &[&str] = &["llama3", "llama3-instruct", "qwen2", "mistral", "smollm"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn id(v: &Value) -> Option<u32> {
    v.as_u64().map(|x| x as u32)
}

/// A copy of a family's directory in `dir`, without the files named in `drop`.
fn copy_family(family: &str, dir: &Path, drop: &[&str]) -> PathBuf {
    let out = dir.join(family);
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(fixtures().join(family)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !drop.contains(&name.as_str()) {
            std::fs::copy(&path, out.join(&name)).unwrap();
        }
    }
    out
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn special_tokens_agree_with_transformers_for_every_family() {
    let expected = expected();
    for family in FAMILIES {
        let want = &expected[family];
        let tok = Tokenizer::from_dir(&fixtures().join(family)).unwrap();
        assert_eq!(tok.bos_id(), id(&want["bos_token_id"]), "{family}: BOS");
        assert_eq!(tok.eos_id(), id(&want["eos_token_id"]), "{family}: EOS");
        assert_eq!(tok.pad_id(), id(&want["pad_token_id"]), "{family}: PAD");
        let special = tok.special_tokens();
        for (what, got, text) in [
            ("bos", &special.bos, &want["bos_token"]),
            ("eos", &special.eos, &want["eos_token"]),
            ("pad", &special.pad, &want["pad_token"]),
        ] {
            assert_eq!(got.as_ref().map(|t| t.token.as_str()), text.as_str(), "{family}: {what} token");
        }
        // Generation stops on EOS and on every id transformers' GenerationConfig lists.
        let mut stops: Vec<u32> = want["generation_eos_token_ids"].as_array().unwrap().iter().filter_map(id).collect();
        assert_eq!(tok.stop_ids().first().copied(), tok.eos_id(), "{family}: EOS stops first");
        stops.extend(tok.eos_id());
        stops.sort();
        stops.dedup();
        let mut got = tok.stop_ids().to_vec();
        got.sort();
        assert_eq!(got, stops, "{family}: stop ids");
        assert_eq!(tok.vocab_size(), want["vocab_size"].as_u64().unwrap() as usize, "{family}");
        for (text, ids) in want["texts"].as_object().unwrap() {
            let ids: Vec<u32> = ids.as_array().unwrap().iter().filter_map(id).collect();
            assert_eq!(tok.encode(text, false).unwrap(), ids, "{family}: {text:?}");
            assert_eq!(tok.decode(&ids).unwrap(), *text, "{family}: decode");
        }
    }
}

#[test]
fn llama3_instruct_documents_end_with_the_eos_evaluation_uses() {
    // The case that made two wrappers disagree: tokenizer_config.json says <|eot_id|>,
    // config.json lists [<|end_of_text|>, <|eom_id|>, <|eot_id|>].
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("llama3-instruct");
    let corpus = tmp.path().join("docs.jsonl");
    write_jsonl(&corpus, &[serde_json::json!({"text": "The lazy fox learns."})]);
    let cfg = parse_config(&format!("tokenizer: {}\nadd_bos: true\nsources:\n  - {{name: d, paths: {}}}\n", p(&model), p(&corpus)));
    let data_tok = cfg.open_tokenizer(&model).unwrap();
    prepare(&cfg, &data_tok, &PrepareOptions { cache_dir: tmp.path().join("cache"), progress: false, force: false }).unwrap();
    let doc = ShardReader::open(&tmp.path().join("cache/d")).unwrap().doc_tokens(0);
    let eval_tok = cpt::model::Tokenizer::from_dir(&model).unwrap();
    let eot = eval_tok.token_to_id("<|eot_id|>").unwrap();
    assert_eq!((doc.first().copied(), doc.last().copied()), (eval_tok.bos_id(), Some(eot)));
    assert_eq!(eval_tok.eos_id(), Some(eot));
}

#[test]
fn the_rule_takes_overrides_then_tokenizer_config_then_config() {
    let tmp = tempfile::tempdir().unwrap();
    let end_of_text = 321;
    let (eom, eot) = (328, 329);

    // No tokenizer_config.json: config.json decides; of a list of EOS ids, the first ends
    // documents and all of them stop generation.
    let bare = copy_family("llama3-instruct", &tmp.path().join("bare"), &["tokenizer_config.json", "generation_config.json"]);
    let tok = Tokenizer::from_dir(&bare).unwrap();
    let eos = tok.special_tokens().eos.clone().unwrap();
    assert_eq!((eos.id, eos.token.as_str(), eos.from.as_str()), (end_of_text, "<|end_of_text|>", "config.json `eos_token_id`"));
    assert_eq!(tok.stop_ids(), &[end_of_text, eom, eot]);
    assert_eq!(tok.bos_id(), Some(320));

    // A config override wins over both files, and is checked against the vocabulary.
    let full = fixtures().join("llama3-instruct");
    let overrides = SpecialOverrides { eos_token: Some("<|end_of_text|>".into()), pad_token: Some("<|finetune_right_pad_id|>".into()), ..Default::default() };
    let tok = Tokenizer::load(&full, &overrides).unwrap();
    assert_eq!((tok.eos_id(), tok.pad_id()), (Some(end_of_text), Some(324)));
    assert_eq!(tok.special_tokens().eos.as_ref().unwrap().from, "data.eos_token");
    assert_eq!(tok.stop_ids(), &[end_of_text, eom, eot], "the override EOS first, then generation_config.json's");
    let missing = SpecialOverrides { eos_token: Some("<|im_end|>".into()), ..Default::default() };
    let err = format!("{:#}", Tokenizer::load(&full, &missing).err().unwrap());
    assert!(err.contains("data.eos_token") && err.contains("<|im_end|>") && err.contains("tokenizer.json"), "{err}");

    // tokenizer_config.json's `bos_token: null` means no BOS (Qwen2), though config.json
    // names one; without the key, config.json's id is taken.
    let qwen = copy_family("qwen2", &tmp.path().join("q"), &[]);
    assert_eq!(Tokenizer::from_dir(&qwen).unwrap().bos_id(), None);
    edit_json(&qwen.join("tokenizer_config.json"), |v| {
        v.as_object_mut().unwrap().remove("bos_token");
    });
    let tok = Tokenizer::from_dir(&qwen).unwrap();
    assert_eq!(tok.bos_id(), tok.token_to_id("<|endoftext|>"));
    assert_eq!(tok.special_tokens().bos.as_ref().unwrap().from, "config.json `bos_token_id`");

    // A tokenizer.json given as a file reads the side files of its directory.
    let tok = Tokenizer::from_dir(&full.join("tokenizer.json")).unwrap();
    assert_eq!(tok.eos_id(), Some(eot));
}

#[test]
fn bad_special_tokens_name_the_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let err_of = |dir: &Path| format!("{:#}", Tokenizer::from_dir(dir).err().unwrap());

    let dir = copy_family("mistral", &tmp.path().join("a"), &[]);
    edit_json(&dir.join("tokenizer_config.json"), |v| v["eos_token"] = "<|eot|>".into());
    let err = err_of(&dir);
    assert!(err.contains("tokenizer_config.json") && err.contains("eos_token") && err.contains("<|eot|>"), "{err}");
    edit_json(&dir.join("tokenizer_config.json"), |v| v["eos_token"] = serde_json::json!(7));
    let err = err_of(&dir);
    assert!(err.contains("tokenizer_config.json") && err.contains("eos_token") && err.contains("expected a token string"), "{err}");

    let dir = copy_family("smollm", &tmp.path().join("b"), &["tokenizer_config.json"]);
    edit_json(&dir.join("config.json"), |v| v["eos_token_id"] = serde_json::json!([0, 100000]));
    let err = err_of(&dir);
    assert!(err.contains("config.json") && err.contains("eos_token_id") && err.contains("100000"), "{err}");
    edit_json(&dir.join("config.json"), |v| v["eos_token_id"] = "0".into());
    let err = err_of(&dir);
    assert!(err.contains("config.json") && err.contains("eos_token_id") && err.contains("expected a token id"), "{err}");

    let dir = copy_family("llama3", &tmp.path().join("c"), &[]);
    std::fs::write(dir.join("generation_config.json"), "{ not json").unwrap();
    let err = err_of(&dir);
    assert!(err.contains("generation_config.json") && err.contains("not valid JSON"), "{err}");
}
