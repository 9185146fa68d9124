//! Tokenizers and tiny checkpoints built inside the vocabulary tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use cpt::model::causal_lm::{CausalLm, SaveOptions};
use cpt::model::config::ModelConfig;
use serde_json::{json, Value};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, SplitDelimiterBehavior, TokenizerImpl,
};

/// Llama-3's pre-tokenizer split.
pub const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vocab").join(name)
}

pub fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture text")
}

pub fn paragraphs(text: &str) -> Vec<String> {
    text.split("\n\n").map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

fn train(texts: &[String], vocab_size: usize, pre: PreTokenizerWrapper, byte_alphabet: bool) -> Value {
    let mut tokenizer: TokenizerImpl<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper> =
        TokenizerImpl::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(pre));
    let mut builder = BpeTrainerBuilder::new().vocab_size(vocab_size).min_frequency(2).show_progress(false);
    if byte_alphabet {
        builder = builder.initial_alphabet(ByteLevel::alphabet().into_iter().collect());
    }
    let mut trainer = builder.build();
    tokenizer.train(&mut trainer, texts.iter()).expect("training a test tokenizer");
    serde_json::from_str(&tokenizer.to_string(false).expect("serialising")).expect("json")
}

/// A Llama-3-like byte-level BPE trained on English only (so Chinese costs several tokens
/// per character), with two special tokens after the vocabulary as Llama-3 has them.
pub fn byte_level_tokenizer_json() -> Value {
    let split = Split::new(SplitPattern::Regex(LLAMA3_SPLIT.into()), SplitDelimiterBehavior::Isolated, false)
        .expect("split regex");
    let pre = Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]);
    let mut json = train(&paragraphs(&read_fixture("en.txt")), 420, PreTokenizerWrapper::Sequence(pre), true);
    let n = json["model"]["vocab"].as_object().unwrap().len();
    json["model"]["ignore_merges"] = json!(true);
    json["added_tokens"] = json!([
        special(n, "<|begin_of_text|>"),
        special(n + 1, "<|end_of_text|>"),
    ]);
    json["decoder"] = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
    json
}

/// A SentencePiece-derived BPE as transformers writes Llama-2/TinyLlama tokenizers:
/// `<unk> <s> </s>`, 256 `<0xNN>` byte tokens, then the merged pieces; byte fallback;
/// Metaspace (prepend first, no split); decoder Replace/ByteFallback/Fuse/Strip.
/// Trained on English plus one Chinese paragraph, so a few Chinese characters are pieces
/// (as in Llama-2) and the rest fall back to bytes.
pub fn sentencepiece_tokenizer_json() -> Value {
    let mut texts = paragraphs(&read_fixture("en.txt"));
    texts.push(paragraphs(&read_fixture("zh.txt"))[0].clone());
    let pre = Metaspace::new('▁', PrependScheme::First, true);
    let trained = train(&texts, 520, PreTokenizerWrapper::Metaspace(pre), false);
    let mut pieces: Vec<(String, u64)> = trained["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(t, id)| (t.clone(), id.as_u64().unwrap()))
        .collect();
    pieces.sort_by_key(|p| p.1);
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    for b in 0..=255u32 {
        vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
    }
    for (t, _) in pieces {
        let id = vocab.len();
        vocab.entry(t).or_insert(json!(id));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": trained["model"]["merges"].clone()
        }
    })
}

fn special(id: usize, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": true})
}

pub fn id_space(tokenizer: &Value) -> usize {
    let vocab_max = tokenizer["model"]["vocab"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).max();
    let added_max = tokenizer["added_tokens"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).max();
    (vocab_max.max(added_max).unwrap() + 1) as usize
}

/// A tiny random checkpoint with this tokenizer. `tied`: Qwen2-style tied embeddings;
/// `vocab_size` may exceed the tokenizer (padded rows, as Qwen2 has).
pub fn write_model(dir: &Path, tokenizer: &Value, vocab_size: usize, tied: bool, tokenizer_class: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let (arch, model_type) = if tied { ("Qwen2ForCausalLM", "qwen2") } else { ("LlamaForCausalLM", "llama") };
    let config = json!({
        "architectures": [arch], "model_type": model_type, "vocab_size": vocab_size,
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": tied,
        "hidden_act": "silu", "torch_dtype": "float32"
    });
    let config = ModelConfig::from_json(&config).expect("test model config");
    let model = CausalLm::new_random(config, 7, &Device::Cpu, DType::F32).expect("random model");
    model
        .save_pretrained(dir, &SaveOptions { dtype: DType::F32, max_shard_bytes: 0, assets_from: None })
        .expect("saving test model");
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string_pretty(tokenizer).unwrap()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&json!({"tokenizer_class": tokenizer_class})).unwrap(),
    )
    .unwrap();
}

pub fn load_tokenizer(dir: &Path) -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("loading tokenizer")
}

pub fn encode(t: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    t.encode(text, false).expect("encode").get_ids().to_vec()
}
