//! `cpt vocab`: extension of byte-level and SentencePiece-style tokenizers, the embedding
//! resize, bad inputs and stats.
mod vocab_support;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use cpt::tokenizer::Tokenizer;
use cpt::vocab::corpus::Document;
use cpt::vocab::extend::{extend, ExtendOptions, ExtendReport};
use cpt::vocab::resize::InitMethod;
use cpt::vocab::stats;
use serde_json::Value;
use vocab_support::*;

fn options(model: &Path, out: &Path, add: usize, init: InitMethod) -> ExtendOptions {
    ExtendOptions {
        model: model.to_path_buf(),
        corpus: vec![fixture("zh.txt")],
        add,
        min_count: 2,
        init,
        pad_to_multiple: 64,
        out: out.to_path_buf(),
    }
}

/// Texts for the encoding checks: every paragraph of both fixtures, mixed text, and edge cases.
fn probe_texts() -> Vec<String> {
    let mut texts = paragraphs(&read_fixture("en.txt"));
    texts.extend(paragraphs(&read_fixture("zh.txt")));
    texts.extend(
        [
            "Mixed 中文 and English: 北京和上海 are cities; 科学 (science) matters.",
            "  leading spaces, trailing spaces  ",
            "数字 2026 年 11 月，标点！？……",
            "emoji 🙂 and rare characters 龘 䲜",
            "",
            "a",
            "中",
        ]
        .map(String::from),
    );
    texts
}

/// Byte strings of the new tokens' text (byte-level entries may be partial characters).
fn new_token_bytes(report: &ExtendReport, flavor_byte_level: bool) -> Vec<Vec<u8>> {
    report
        .tokens
        .iter()
        .map(|t| {
            if flavor_byte_level {
                let table = cpt::vocab::tokenizer_file::byte_level_alphabet();
                let reverse: HashMap<char, u8> = table.iter().enumerate().map(|(b, c)| (*c, b as u8)).collect();
                t.learned.token.chars().map(|c| reverse[&c]).collect()
            } else {
                t.learned.token.replace('▁', " ").into_bytes()
            }
        })
        .collect()
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The properties every extension must have, for either flavour.
fn check_extension(src: &Path, out: &Path, report: &ExtendReport, byte_level: bool) {
    let old_json: Value = serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap()).unwrap();
    let new_json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer.json")).unwrap()).unwrap();

    // Every existing token keeps its id; added tokens and other sections are untouched.
    let old_vocab = old_json["model"]["vocab"].as_object().unwrap();
    let new_vocab = new_json["model"]["vocab"].as_object().unwrap();
    for (token, id) in old_vocab {
        assert_eq!(new_vocab.get(token), Some(id), "token {token:?} changed id");
    }
    let new_ids = new_vocab.values().filter(|id| id.as_u64().unwrap() >= report.old_id_space as u64).count();
    assert_eq!(new_ids, report.tokens.len());
    for key in ["added_tokens", "normalizer", "pre_tokenizer", "decoder", "post_processor"] {
        assert_eq!(old_json[key], new_json[key], "section {key} changed");
    }
    let old_merges = old_json["model"]["merges"].as_array().unwrap();
    assert_eq!(&new_json["model"]["merges"].as_array().unwrap()[..old_merges.len()], &old_merges[..]);

    // Numbers stay split as the base tokenizer splits them.
    for t in &report.tokens {
        assert!(!t.learned.text.chars().any(char::is_numeric), "new token {:?} holds a digit", t.learned.text);
    }
    let old_tok = load_tokenizer(src);
    let new_tok = load_tokenizer(out);
    // Added (special) tokens keep their ids when the files are loaded.
    for t in old_json["added_tokens"].as_array().unwrap() {
        let content = t["content"].as_str().unwrap();
        assert_eq!(new_tok.token_to_id(content), Some(t["id"].as_u64().unwrap() as u32), "{content}");
        assert_eq!(new_tok.token_to_id(content), old_tok.token_to_id(content), "{content}");
        assert_eq!(encode(&new_tok, content), encode(&old_tok, content), "{content}");
    }
    let new_bytes = new_token_bytes(report, byte_level);
    let first_new = report.old_id_space;
    let mut unchanged_checked = 0;
    let mut saw_new = 0;
    for text in probe_texts() {
        let old_ids = encode(&old_tok, &text);
        let new_ids = encode(&new_tok, &text);
        // Text that contains no new token encodes to exactly the old ids.
        if !new_bytes.iter().any(|b| contains_bytes(text.as_bytes(), b)) {
            assert_eq!(old_ids, new_ids, "encoding of {text:?} changed");
            unchanged_checked += 1;
        }
        assert!(new_ids.len() <= old_ids.len(), "extension made {text:?} longer");
        saw_new += new_ids.iter().filter(|&&id| id >= first_new).count();
        // Decoding round-trips exactly (where the old tokenizer does: SentencePiece's
        // decoder drops one of several leading spaces, before and after).
        let old_text = old_tok.decode(&old_ids, false).unwrap();
        assert_eq!(new_tok.decode(&new_ids, false).unwrap(), old_text, "round trip of {text:?}");
        if !text.starts_with("  ") {
            assert_eq!(old_text, text);
        }
    }
    assert!(unchanged_checked >= 8, "too few texts free of new tokens ({unchanged_checked})");
    assert!(saw_new > 50, "new tokens barely appear when encoding ({saw_new})");

    // Fewer tokens for the Chinese corpus.
    let zh = read_fixture("zh.txt");
    let (before, after) = (encode(&old_tok, &zh).len(), encode(&new_tok, &zh).len());
    assert!(after * 10 < before * 8, "Chinese tokens {before} -> {after}: less than 20% saved");
    let _ = std::fs::remove_file(out.join("unused"));
}

/// Rows of the resized matrices: old rows equal, new rows as `init` says, padding = mean.
fn check_resize(src: &Path, out: &Path, report: &ExtendReport, tied: bool) {
    let old = cpt::model::io::load_safetensors_dir(src).unwrap();
    let new = cpt::model::io::load_safetensors_dir(out).unwrap();
    let config: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"].as_u64().unwrap() as usize, report.new_vocab_size);
    assert_eq!(report.new_vocab_size % 64, 0);
    assert!(report.new_vocab_size >= report.new_id_space as usize);
    assert_eq!(new.contains_key("lm_head.weight"), !tied);
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        let Some(old_w) = old.get(name) else { continue };
        let new_w = &new[name];
        assert_eq!(new_w.dims()[0], report.new_vocab_size, "{name} rows");
        let keep = report.old_id_space as usize;
        let diff = (old_w.i(0..keep).unwrap() - new_w.i(0..keep).unwrap()).unwrap().abs().unwrap();
        assert_eq!(diff.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0, "{name}: old rows changed");
        let mean = old_w.i(0..keep).unwrap().mean(0).unwrap();
        let mut is_token = vec![false; report.new_vocab_size];
        for t in &report.tokens {
            is_token[t.id as usize] = true;
            let expected = match report.init {
                InitMethod::Mean => mean.clone(),
                InitMethod::PieceMean => {
                    let ids = Tensor::new(t.learned.old_pieces.as_slice(), &Device::Cpu).unwrap();
                    old_w.index_select(&ids, 0).unwrap().mean(0).unwrap()
                }
            };
            let got = new_w.i(t.id as usize).unwrap();
            let err = (got - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(err < 1e-6, "{name}: row of new token {} off by {err}", t.id);
        }
        for (row, token) in is_token.iter().enumerate().skip(keep) {
            if !token {
                let got = new_w.i(row).unwrap();
                let err = (got - &mean).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(err < 1e-6, "{name}: padding row {row} is not the mean");
            }
        }
    }
    // Other tensors are copied as they were.
    for (name, t) in &old {
        if name.contains("embed_tokens") || name.contains("lm_head") {
            continue;
        }
        let d = (t - &new[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "{name} changed");
    }
    // The resized checkpoint loads in cpt and runs.
    let model = cpt::model::CausalLm::from_pretrained(out, &Device::Cpu, DType::F32).unwrap();
    let ids = Tensor::new(&[[0u32, report.old_id_space, report.new_id_space - 1]], &Device::Cpu).unwrap();
    let logits = model.forward(&ids, None).unwrap();
    assert_eq!(logits.dims(), &[1, 3, report.new_vocab_size]);
}

#[test]
fn byte_level_bpe_extension() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("base"), dir.path().join("extended"));
    let tok = byte_level_tokenizer_json();
    write_model(&src, &tok, id_space(&tok), false, "PreTrainedTokenizerFast");
    let report = extend(&options(&src, &out, 150, InitMethod::PieceMean)).unwrap();
    assert_eq!(report.tokens.len(), 150);
    assert_eq!(report.old_id_space as usize, id_space(&tok));
    // Frequent Chinese words and characters are among the learned tokens; no token
    // straddles a character boundary.
    for t in &report.tokens {
        let text = &t.learned.text;
        assert!(!text.contains('\u{FFFD}') || text.chars().count() == 1, "token {text:?} straddles characters");
    }
    let texts: Vec<&str> = report.tokens.iter().map(|t| t.learned.text.as_str()).collect();
    for expected in ["中国", "北京", "上海"] {
        assert!(texts.contains(&expected), "{expected} not learned; got {texts:?}");
    }
    check_extension(&src, &out, &report, true);
    check_resize(&src, &out, &report, false);
    // The side files are there and the record of the extension too.
    assert!(out.join("tokenizer_config.json").exists());
    assert!(out.join("vocab_extension.json").exists());
}

#[test]
fn sentencepiece_bpe_extension() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("base"), dir.path().join("extended"));
    let tok = sentencepiece_tokenizer_json();
    write_model(&src, &tok, id_space(&tok), false, "LlamaTokenizer");
    std::fs::write(src.join("tokenizer.model"), b"stale sentencepiece model").unwrap();
    let report = extend(&options(&src, &out, 80, InitMethod::Mean)).unwrap();
    assert_eq!(report.tokens.len(), 80);
    // Characters that fell back to bytes become tokens of their own, with their bytes as pieces.
    let chars: Vec<_> = report.tokens.iter().filter(|t| t.learned.old_pieces.len() == 3 && t.learned.text.chars().count() == 1).collect();
    assert!(!chars.is_empty(), "no byte-fallback character was added");
    let old_json: Value = serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap()).unwrap();
    for t in &chars {
        for p in &t.learned.old_pieces {
            let name = old_json["model"]["vocab"].as_object().unwrap().iter().find(|(_, id)| id.as_u64() == Some(*p as u64)).unwrap().0;
            assert!(name.starts_with("<0x"), "piece {name} of a fallback character");
        }
    }
    // Word merges too.
    assert!(report.tokens.iter().any(|t| t.learned.text.chars().count() >= 2));
    check_extension(&src, &out, &report, false);
    check_resize(&src, &out, &report, false);
    assert_eq!(report.skipped_files, vec!["tokenizer.model".to_string()]);
    assert!(!out.join("tokenizer.model").exists());
}

#[test]
fn tied_embeddings_with_padded_vocabulary() {
    // Qwen2-style: tied embeddings and more rows than the tokenizer uses.
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("base"), dir.path().join("extended"));
    let tok = qwen2_tokenizer_json();
    let padded = id_space(&tok) + 10;
    write_model(&src, &tok, padded, true, "PreTrainedTokenizerFast");
    let report = extend(&options(&src, &out, 30, InitMethod::PieceMean)).unwrap();
    assert!(report.tied_embeddings);
    assert_eq!(report.old_vocab_size, padded);
    assert_eq!(report.tokens[0].id as usize, id_space(&tok), "new ids follow the tokenizer's ids");
    check_resize(&src, &out, &report, true);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("base");
    let tok = byte_level_tokenizer_json();
    write_model(&src, &tok, id_space(&tok), false, "PreTrainedTokenizerFast");
    let err = |opts: &ExtendOptions| format!("{:#}", extend(opts).unwrap_err());

    // More tokens than the corpus offers.
    let e = err(&options(&src, &dir.path().join("o1"), 100_000, InitMethod::PieceMean));
    assert!(e.contains("the corpus offers only") && e.contains("--add"), "{e}");
    assert!(!dir.path().join("o1").exists(), "a failed run left output behind");

    // Output directory that is not empty.
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("x"), "x").unwrap();
    let e = err(&options(&src, &busy, 5, InitMethod::PieceMean));
    assert!(e.contains("already exists"), "{e}");

    // Unsupported tokenizer types.
    let mut unigram = tok.clone();
    unigram["model"] = serde_json::json!({"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]], "byte_fallback": false});
    let mut wordpiece = tok.clone();
    wordpiece["model"]["type"] = "WordPiece".into();
    let mut no_fallback = sentencepiece_tokenizer_json();
    no_fallback["model"]["byte_fallback"] = false.into();
    for (name, bad, needle) in [
        ("unigram", unigram, "model.type"),
        ("wordpiece", wordpiece, "model.type"),
        ("nofallback", no_fallback, "byte fallback"),
    ] {
        let model = dir.path().join(name);
        write_model(&model, &bad, id_space(&tok) + 300, false, "PreTrainedTokenizerFast");
        let e = err(&options(&model, &dir.path().join(format!("{name}-out")), 5, InitMethod::PieceMean));
        assert!(e.contains(needle) && e.contains("tokenizer.json"), "{name}: {e}");
    }

    // A model whose vocabulary does not match its tokenizer.
    let small = dir.path().join("small");
    write_model(&small, &tok, id_space(&tok) - 5, false, "PreTrainedTokenizerFast");
    let e = err(&options(&small, &dir.path().join("small-out"), 5, InitMethod::PieceMean));
    assert!(e.contains("disagree") && e.contains("vocab_size"), "{e}");

    // A checkpoint whose embedding disagrees with its config.json.
    let lying = dir.path().join("lying");
    write_model(&lying, &tok, id_space(&tok), false, "PreTrainedTokenizerFast");
    let cfg_path = lying.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["vocab_size"] = (id_space(&tok) + 64).into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = err(&options(&lying, &dir.path().join("lying-out"), 5, InitMethod::PieceMean));
    assert!(e.contains("embed_tokens") && e.contains("vocab_size"), "{e}");

    // Corpus that does not exist; corpus with a bad JSONL line.
    let mut o = options(&src, &dir.path().join("c-out"), 5, InitMethod::PieceMean);
    o.corpus = vec![dir.path().join("missing.jsonl")];
    assert!(err(&o).contains("missing.jsonl"));
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"txt\": 1}\n").unwrap();
    o.corpus = vec![bad];
    let e = err(&o);
    assert!(e.contains("bad.jsonl:2") && e.contains("text"), "{e}");
}

#[test]
fn stats_show_the_gain_per_language() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("base"), dir.path().join("extended"));
    let tok = byte_level_tokenizer_json();
    write_model(&src, &tok, id_space(&tok), false, "PreTrainedTokenizerFast");
    extend(&options(&src, &out, 60, InitMethod::PieceMean)).unwrap();
    let docs: Vec<Document> = paragraphs(&read_fixture("zh.txt"))
        .into_iter()
        .map(|t| Document { text: t, lang: "zh".into() })
        .chain(paragraphs(&read_fixture("en.txt")).into_iter().map(|t| Document { text: t, lang: "en".into() }))
        .collect();
    let (before, after) = (Tokenizer::from_dir(&src).unwrap(), Tokenizer::from_dir(&out).unwrap());
    let measured = stats::measure(&[&before, &after], &docs).unwrap();
    let before = load_tokenizer(&src);
    let by_lang: HashMap<&str, &stats::LanguageStats> = measured.iter().map(|s| (s.lang.as_str(), s)).collect();
    let zh = by_lang["zh"];
    let zh_text: String = docs.iter().filter(|d| d.lang == "zh").map(|d| d.text.as_str()).collect();
    assert_eq!(zh.chars, zh_text.chars().count() as u64);
    assert_eq!(zh.bytes, zh_text.len() as u64);
    let expected_before: u64 = docs.iter().filter(|d| d.lang == "zh").map(|d| encode(&before, &d.text).len() as u64).sum();
    assert_eq!(zh.per_tokenizer[0].tokens, expected_before);
    assert!(zh.per_tokenizer[1].chars_per_token > zh.per_tokenizer[0].chars_per_token * 1.25);
    // English text is untouched by Chinese tokens.
    let en = by_lang["en"];
    assert_eq!(en.per_tokenizer[0].tokens, en.per_tokenizer[1].tokens);
    assert_eq!(by_lang["all"].docs, docs.len());
    let table = stats::format_table(&["before".into(), "after".into()], &measured);
    assert!(table.contains("tokens after/before") && table.lines().count() == 4, "{table}");
}
