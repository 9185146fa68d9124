//! Helpers shared by the data tests: a tiny byte-level tokenizer, corpus writers, and a
//! prepare-and-open shortcut. Everything lives in a temporary directory per test.
#![allow(dead_code)]
use std::io::Write;
use std::path::{Path, PathBuf};

use cpt::data::{self, DataConfig, PrepareOptions, PreparedData};
use cpt::tokenizer::Tokenizer;

/// GPT-2's byte -> printable character table, as byte-level BPE vocabularies use it.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in printable.iter().zip(chars) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}

/// Writes a byte-level BPE tokenizer with no merges (one token per UTF-8 byte, ids
/// 0..256), `<s>`=256 and `</s>`=257, plus `extra` unused entries (to make the vocabulary
/// too large for u16). Returns the directory (with tokenizer_config.json naming BOS/EOS).
pub fn byte_tokenizer(dir: &Path, extra: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab = serde_json::Map::new();
    for (b, c) in byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), serde_json::json!(b));
    }
    for k in 0..extra {
        vocab.insert(format!("<x{k}>"), serde_json::json!(258 + k));
    }
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(256, "<s>"), special(257, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&tok).unwrap()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"bos_token": "<s>", "eos_token": "</s>"}"#).unwrap();
    dir.to_path_buf()
}

pub fn load_tokenizer(dir: &Path) -> Tokenizer {
    Tokenizer::from_dir(dir).unwrap()
}

/// Writes JSONL lines (each a JSON value) to `path`.
pub fn write_jsonl(path: &Path, records: &[serde_json::Value]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    for r in records {
        writeln!(f, "{}", serde_json::to_string(r).unwrap()).unwrap();
    }
}

/// `n` distinct documents of roughly `len` bytes, tagged with `tag` so sources differ.
pub fn docs(tag: &str, n: usize, len: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            let mut text = format!("{tag} document {i}:");
            let mut k = 0;
            while text.len() < len + (i * 7919) % (len / 2 + 1) {
                text.push_str(&format!(" w{}", (i * 31 + k * 17) % 1000));
                k += 1;
            }
            serde_json::json!({"text": text})
        })
        .collect()
}

pub fn parse_config(yaml: &str) -> DataConfig {
    DataConfig::load_str(yaml, "test config").unwrap().data
}

/// Prepares `config` into `cache` with the tokenizer in `tok_dir` and opens the result.
pub fn prepare_and_open(config: &DataConfig, tok_dir: &Path, cache: &Path) -> PreparedData {
    let tok = load_tokenizer(tok_dir);
    data::prepare(config, &tok, &PrepareOptions { cache_dir: cache.to_path_buf(), progress: false, force: false }).unwrap();
    PreparedData::open(cache, config, Some(&tok)).unwrap()
}

/// A YAML-safe path string.
pub fn p(path: &Path) -> String {
    path.display().to_string()
}
