//! Token ids written by `prepare` against Hugging Face `tokenizers` (Python) on the same
//! tokenizer: fixtures from scripts/make_data_fixtures.py.
mod data_common;

use std::path::PathBuf;

use cpt::data::prepare::{prepare, PrepareOptions};
use cpt::data::shards::ShardReader;
use cpt::tokenizer::Tokenizer;
use data_common::*;

#[test]
fn shards_hold_the_ids_hf_tokenizers_gives() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json")).unwrap()).unwrap();
    let docs: Vec<String> = serde_json::from_value(expected["docs"].clone()).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(expected["ids"].clone()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("docs.jsonl");
    write_jsonl(&corpus, &docs.iter().map(|d| serde_json::json!({"text": d})).collect::<Vec<_>>());
    // No tokenizer_config.json beside the fixture: EOS comes from the config's override.
    let cfg = parse_config(&format!(
        "tokenizer: {}\neos_token: \"</s>\"\nsources:\n  - {{name: ref, paths: {}}}\n",
        p(&fixtures.join("tokenizer.json")),
        p(&corpus)
    ));
    let tok = Tokenizer::load(cfg.tokenizer.as_ref().unwrap(), &cfg.special_overrides()).unwrap();
    assert_eq!(tok.eos_id(), Some(expected["eos_id"].as_u64().unwrap() as u32));
    prepare(&cfg, &tok, &PrepareOptions { cache_dir: tmp.path().join("cache"), progress: false, force: false }).unwrap();
    let shard = ShardReader::open(&tmp.path().join("cache/ref")).unwrap();
    assert_eq!(shard.num_docs(), docs.len());
    for (i, want) in ids.iter().enumerate() {
        let got = shard.doc_tokens(i);
        assert_eq!(&got, want, "document {i}: {:?}", docs[i]);
        assert_eq!(tok.decode(&got[..got.len() - 1]).unwrap(), docs[i]);
    }
}
