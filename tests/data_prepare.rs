//! `prepare`: every source format and compression, metadata, malformed records, dedup,
//! BOS/EOS, token width, the manifest (reuse / rebuild / refuse) and bad inputs.
mod data_common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use cpt::data::manifest::Decision;
use cpt::data::prepare::{prepare, PrepareOptions, PreparedData};
use cpt::data::shards::{ShardReader, TokenWidth};
use cpt::data::DataConfig;
use data_common::*;

const BOS: u32 = 256;
const EOS: u32 = 257;

fn opts(cache: &Path) -> PrepareOptions {
    PrepareOptions { cache_dir: cache.to_path_buf(), progress: false, force: false }
}

fn bytes_of(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

fn gzip(path: &Path, text: &str) {
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
}

fn zstd_file(path: &Path, text: &str) {
    std::fs::write(path, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
}

/// A Parquet file shaped like a Hugging Face dataset: `text` and an optional `topic`.
fn write_parquet(path: &Path, rows: &[(&str, Option<&str>)]) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { REQUIRED BYTE_ARRAY text (UTF8); OPTIONAL BYTE_ARRAY topic (UTF8); OPTIONAL DOUBLE extra; }",
        )
        .unwrap(),
    );
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    let mut rg = writer.next_row_group().unwrap();
    let texts: Vec<ByteArray> = rows.iter().map(|(t, _)| ByteArray::from(*t)).collect();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>().write_batch(&texts, None, None).unwrap();
    col.close().unwrap();
    let topics: Vec<ByteArray> = rows.iter().filter_map(|(_, t)| t.map(ByteArray::from)).collect();
    let defs: Vec<i16> = rows.iter().map(|(_, t)| t.is_some() as i16).collect();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>().write_batch(&topics, Some(&defs), None).unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<parquet::data_type::DoubleType>().write_batch(&[], Some(&vec![0i16; rows.len()]), None).unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    writer.close().unwrap();
}

fn single(root: &Path, source_yaml: &str, extra: &str) -> DataConfig {
    let _ = root;
    parse_config(&format!("sources:\n  - {source_yaml}\n{extra}"))
}

/// Every document of source 0, as token ids.
fn all_docs(cache: &Path, name: &str) -> Vec<Vec<u32>> {
    let r = ShardReader::open(&cache.join(name)).unwrap();
    (0..r.num_docs()).map(|i| r.doc_tokens(i)).collect()
}

#[test]
fn reads_every_format_and_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tok = byte_tokenizer(&root.join("tok"), 0);
    let t = load_tokenizer(&tok);
    let corpus = root.join("corpus");
    std::fs::create_dir_all(corpus.join("nested")).unwrap();
    std::fs::write(corpus.join("a.jsonl"), "{\"text\": \"plain one\"}\n{\"text\": \"plain two\"}\n").unwrap();
    gzip(&corpus.join("b.jsonl.gz"), "{\"text\": \"gzip one\"}\n");
    zstd_file(&corpus.join("nested/c.json.zst"), "{\"text\": \"zstd one\"}\r\n{\"text\": \"中文 zstd\"}\n");
    std::fs::write(corpus.join(".hidden.jsonl"), "{\"text\": \"hidden\"}\n").unwrap();
    std::fs::write(corpus.join("notes.csv"), "not a corpus file").unwrap();
    let cfg = single(root, &format!("{{name: j, paths: {}}}", p(&corpus)), "");
    let report = prepare(&cfg, &t, &opts(&root.join("cache"))).unwrap();
    assert_eq!(report.sources[0].decision, Decision::Build);
    let got = all_docs(&root.join("cache"), "j");
    let want: Vec<Vec<u32>> = ["plain one", "plain two", "gzip one", "zstd one", "中文 zstd"]
        .iter()
        .map(|s| {
            let mut v = bytes_of(s);
            v.push(EOS);
            v
        })
        .collect();
    assert_eq!(got, want, "files in sorted order (directories walked, hidden and unknown files skipped)");
    assert_eq!(report.sources[0].summary.files, 3);

    // Plain text: a document per file, or blank-line separated (here gzip-compressed).
    std::fs::create_dir_all(root.join("txt")).unwrap();
    std::fs::write(root.join("txt/one.txt"), "first file\nsecond line\n").unwrap();
    std::fs::write(root.join("txt/two.md"), "another file").unwrap();
    gzip(&root.join("blank.txt.gz"), "para one\nline two\n\n\n  \npara two\n\nlast\n");
    let cfg = parse_config(&format!(
        "sources:\n  - {{name: files, paths: '{}/*.txt'}}\n  - {{name: paras, paths: [{}], text_mode: blank_line, language: en}}\n  - {{name: md, paths: {}, format: text}}\n",
        p(&root.join("txt")),
        p(&root.join("blank.txt.gz")),
        p(&root.join("txt/two.md"))
    ));
    prepare(&cfg, &t, &opts(&root.join("cache"))).unwrap();
    let files = all_docs(&root.join("cache"), "files");
    assert_eq!(files, vec![[bytes_of("first file\nsecond line\n"), vec![EOS]].concat()]);
    let paras = all_docs(&root.join("cache"), "paras");
    let texts: Vec<String> = paras.iter().map(|d| t.decode(&d[..d.len() - 1]).unwrap()).collect();
    assert_eq!(texts, vec!["para one\nline two", "para two", "last"]);
    let r = ShardReader::open(&root.join("cache/paras")).unwrap();
    assert_eq!(r.lang_name(r.doc(0).lang), Some("en"));
    assert_eq!(all_docs(&root.join("cache"), "md").len(), 1);

    // Parquet as HF datasets ship it, with a topic column.
    let pq = root.join("data/train-00000-of-00001.parquet");
    std::fs::create_dir_all(pq.parent().unwrap()).unwrap();
    write_parquet(&pq, &[("parquet one", Some("math")), ("parquet two", None), ("  ", Some("x"))]);
    let cfg = single(root, &format!("{{name: pq, paths: '{}/data/*.parquet'}}", p(root)), "");
    let report = prepare(&cfg, &t, &opts(&root.join("cache"))).unwrap();
    let docs = all_docs(&root.join("cache"), "pq");
    assert_eq!(docs, vec![[bytes_of("parquet one"), vec![EOS]].concat(), [bytes_of("parquet two"), vec![EOS]].concat()]);
    let r = ShardReader::open(&root.join("cache/pq")).unwrap();
    assert_eq!(r.topic_name(r.doc(0).topic), Some("math"));
    assert_eq!(r.topic_name(r.doc(1).topic), None);
    let s = &report.sources[0].summary;
    assert_eq!(s.skipped.get("empty text"), Some(&1));
    assert!(s.examples[0].contains("train-00000-of-00001.parquet:row 3"), "{:?}", s.examples);
}

#[test]
fn metadata_fields_bos_eos_and_token_width() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let f = root.join("m.jsonl");
    std::fs::write(
        &f,
        "{\"body\": \"alpha\", \"lang\": \"zh\", \"topic\": \"law\", \"score\": 3.5, \"id\": 17}\n{\"body\": \"beta\", \"topic\": \"math\"}\n",
    )
    .unwrap();
    let tok = byte_tokenizer(&root.join("tok"), 0);
    let cfg = single(root, &format!("{{name: m, paths: {}, text_field: body}}", p(&f)), "add_bos: true\n");
    prepare(&cfg, &load_tokenizer(&tok), &opts(&root.join("c1"))).unwrap();
    let r = ShardReader::open(&root.join("c1/m")).unwrap();
    assert_eq!(r.meta().width, TokenWidth::U16);
    assert_eq!(r.doc_tokens(0), [vec![BOS], bytes_of("alpha"), vec![EOS]].concat());
    let d0 = r.doc(0);
    assert_eq!((r.lang_name(d0.lang), r.topic_name(d0.topic), d0.score), (Some("zh"), Some("law"), 3.5));
    let d1 = r.doc(1);
    assert_eq!((r.lang_name(d1.lang), r.topic_name(d1.topic)), (None, Some("math")));
    assert!(d1.score.is_nan());
    assert_eq!(r.meta().scored_docs, 1);
    assert_eq!(r.doc_ids().unwrap(), vec![Some("17".to_string()), None]);
    std::fs::remove_dir_all(root.join("c1")).unwrap(); // keep the temp dir small

    // A vocabulary beyond u16 gets u32 shards.
    let big = byte_tokenizer(&root.join("bigtok"), 70_000);
    let cfg = single(root, &format!("{{name: m, paths: {}, text_field: body}}", p(&f)), "add_eos: false\n");
    prepare(&cfg, &load_tokenizer(&big), &opts(&root.join("c2"))).unwrap();
    let r = ShardReader::open(&root.join("c2/m")).unwrap();
    assert_eq!(r.meta().width, TokenWidth::U32);
    assert_eq!(std::fs::metadata(root.join("c2/m/tokens.bin")).unwrap().len(), 4 * 9);
    assert_eq!(r.doc_tokens(1), bytes_of("beta"));

    // A tokenizer without EOS cannot separate documents.
    let bare = root.join("bare");
    byte_tokenizer(&bare, 0);
    std::fs::remove_file(bare.join("tokenizer_config.json")).unwrap();
    let cfg = single(root, &format!("{{name: m, paths: {}, text_field: body}}", p(&f)), "");
    let err = prepare(&cfg, &load_tokenizer(&bare), &opts(&root.join("c3"))).unwrap_err();
    assert!(err.to_string().contains("data.add_eos"), "{err}");
    // ... unless the config names it; config.json ids work as well.
    std::fs::write(bare.join("config.json"), r#"{"bos_token_id": 256, "eos_token_id": [257]}"#).unwrap();
    assert_eq!(load_tokenizer(&bare).eos_id(), Some(EOS));
}

#[test]
fn malformed_records_are_counted_with_locations_or_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let f = root.join("bad.jsonl");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"{\"text\": \"good one\"}\n");
    bytes.extend_from_slice(b"{\"text\": \"broken\"\n"); // line 2: bad JSON
    bytes.extend_from_slice(b"{\"other\": \"no text\"}\n"); // line 3: missing field
    bytes.extend_from_slice(b"{\"text\": \"bad \xff byte\"}\n"); // line 4: invalid UTF-8
    bytes.extend_from_slice(b"\n"); // blank lines are not records
    bytes.extend_from_slice(b"{\"text\": \"   \"}\n"); // line 6: empty text
    bytes.extend_from_slice(b"{\"text\": \"x\", \"score\": \"high\"}\n"); // line 7: wrong type
    bytes.extend_from_slice(b"[1, 2]\n"); // line 8: not an object
    bytes.extend_from_slice(b"{\"text\": \"good two\"}\n");
    std::fs::write(&f, &bytes).unwrap();
    let tok = load_tokenizer(&byte_tokenizer(&root.join("tok"), 0));
    let cfg = single(root, &format!("{{name: bad, paths: {}}}", p(&f)), "");
    let report = prepare(&cfg, &tok, &opts(&root.join("cache"))).unwrap();
    let s = &report.sources[0].summary;
    assert_eq!(s.documents, 2);
    let skipped: Vec<(&str, u64)> = s.skipped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        skipped,
        vec![("bad JSON", 2), ("empty text", 1), ("field of the wrong type", 1), ("invalid UTF-8", 1), ("missing text field", 1)]
    );
    assert_eq!(s.examples.len(), 5);
    assert!(s.examples[0].contains("bad.jsonl:2: bad JSON"), "{:?}", s.examples);
    assert!(s.examples[2].contains("bad.jsonl:4: invalid UTF-8"), "{:?}", s.examples);
    let text = cpt::data::prepare::format_report(&report);
    assert!(text.contains("skipped 2: bad JSON") && text.contains("e.g. ") && text.contains("bad.jsonl:3"), "{text}");

    // Plain text: a file of invalid UTF-8 and a blank-line block with a bad line.
    std::fs::write(root.join("bad.txt"), b"caf\xe9 latin-1").unwrap();
    std::fs::write(root.join("blocks.txt"), b"fine block\n\nline one\nbad \xff line\n\nlast block\n").unwrap();
    let cfg = parse_config(&format!(
        "sources:\n  - {{name: t, paths: {}}}\n  - {{name: b, paths: {}, text_mode: blank_line}}\n",
        p(&root.join("bad.txt")),
        p(&root.join("blocks.txt"))
    ));
    let report = prepare(&cfg, &tok, &opts(&root.join("cache"))).unwrap();
    assert_eq!(report.sources[0].summary.documents, 0);
    assert!(report.sources[0].summary.examples[0].contains("bad.txt:1: invalid UTF-8"), "{:?}", report.sources[0].summary.examples);
    assert!(cpt::data::prepare::format_report(&report).contains("warning: no usable documents"));
    assert_eq!(report.sources[1].summary.documents, 2);
    assert!(report.sources[1].summary.examples[0].contains("blocks.txt:3: invalid UTF-8 (line 4"), "{:?}", report.sources[1].summary.examples);

    let strict = single(root, &format!("{{name: bad, paths: {}}}", p(&f)), "on_malformed: fail\n");
    let err = format!("{:#}", prepare(&strict, &tok, &opts(&root.join("strict"))).unwrap_err());
    assert!(err.contains("bad.jsonl:2") && err.contains("bad JSON") && err.contains("data.sources[0]"), "{err}");
    assert!(!root.join("strict/bad").exists(), "no partial shards after a failure");
}

#[test]
fn exact_duplicates_are_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let f = root.join("d.jsonl");
    std::fs::write(&f, "{\"text\": \"same\"}\n{\"text\": \"other\"}\n{\"text\": \"same\"}\n{\"text\": \"same \"}\n").unwrap();
    let tok = load_tokenizer(&byte_tokenizer(&root.join("tok"), 0));
    let cfg = single(root, &format!("{{name: d, paths: {}}}", p(&f)), "");
    let report = prepare(&cfg, &tok, &opts(&root.join("c1"))).unwrap();
    assert_eq!((report.sources[0].summary.documents, report.sources[0].summary.duplicates), (3, 1));
    let cfg = single(root, &format!("{{name: d, paths: {}}}", p(&f)), "dedup: false\n");
    let report = prepare(&cfg, &tok, &opts(&root.join("c2"))).unwrap();
    assert_eq!((report.sources[0].summary.documents, report.sources[0].summary.duplicates), (4, 0));
}

#[test]
fn manifest_reuses_rebuilds_and_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let f = root.join("m.jsonl");
    write_jsonl(&f, &docs("m", 20, 100));
    let tok_a = load_tokenizer(&byte_tokenizer(&root.join("tok_a"), 0));
    let tok_b = load_tokenizer(&byte_tokenizer(&root.join("tok_b"), 10));
    assert_ne!(tok_a.content_hash(), tok_b.content_hash());
    let cache = root.join("cache");
    let cfg = single(root, &format!("{{name: m, paths: {}}}", p(&f)), "");
    assert_eq!(prepare(&cfg, &tok_a, &opts(&cache)).unwrap().sources[0].decision, Decision::Build);
    let again = prepare(&cfg, &tok_a, &opts(&cache)).unwrap();
    assert_eq!(again.sources[0].decision, Decision::Reuse);
    assert_eq!(again.sources[0].summary.documents, 20, "a reused source reports its summary");
    // Changed input file.
    write_jsonl(&f, &docs("m", 21, 100));
    match &prepare(&cfg, &tok_a, &opts(&cache)).unwrap().sources[0].decision {
        Decision::Rebuild(why) => assert!(why.contains("m.jsonl changed"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Changed token settings.
    let cfg_bos = single(root, &format!("{{name: m, paths: {}}}", p(&f)), "add_bos: true\n");
    assert!(matches!(prepare(&cfg_bos, &tok_a, &opts(&cache)).unwrap().sources[0].decision, Decision::Rebuild(_)));
    prepare(&cfg, &tok_a, &opts(&cache)).unwrap();
    // Another tokenizer: training refuses the stale shards; prepare rebuilds or refuses.
    let err = PreparedData::open(&cache, &cfg, Some(&tok_b)).err().unwrap().to_string();
    assert!(err.contains("made with tokenizer") && err.contains("cpt prepare"), "{err}");
    let refuse = single(root, &format!("{{name: m, paths: {}}}", p(&f)), "on_tokenizer_change: refuse\n");
    let err = format!("{:#}", prepare(&refuse, &tok_b, &opts(&cache)).unwrap_err());
    assert!(err.contains("another tokenizer") && err.contains("on_tokenizer_change"), "{err}");
    match &prepare(&cfg, &tok_b, &opts(&cache)).unwrap().sources[0].decision {
        Decision::Rebuild(why) => assert!(why.contains("tokenizer"), "{why}"),
        other => panic!("{other:?}"),
    }
    PreparedData::open(&cache, &cfg, Some(&tok_b)).unwrap();
    // --force rebuilds regardless.
    let forced = PrepareOptions { force: true, ..opts(&cache) };
    assert!(matches!(prepare(&cfg, &tok_b, &forced).unwrap().sources[0].decision, Decision::Rebuild(_)));
}

#[test]
fn bad_inputs_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tok = load_tokenizer(&byte_tokenizer(&root.join("tok"), 0));
    let cache = root.join("cache");
    let err_of = |yaml: String| format!("{:#}", prepare(&parse_config(&yaml), &tok, &opts(&cache)).unwrap_err());

    let err = err_of(format!("sources:\n  - {{name: a, paths: [{}]}}\n", p(&root.join("missing.jsonl"))));
    assert!(err.contains("data.sources[0].paths[0]") && err.contains("does not exist"), "{err}");
    let err = err_of(format!("sources:\n  - {{name: a, paths: '{}/*.jsonl'}}\n", p(root)));
    assert!(err.contains("matches no corpus files"), "{err}");
    std::fs::write(root.join("data.csv"), "x").unwrap();
    let err = err_of(format!("sources:\n  - {{name: a, paths: {}}}\n", p(&root.join("data.csv"))));
    assert!(err.contains("data.csv") && err.contains("set `format`"), "{err}");
    std::fs::write(root.join("broken.jsonl.gz"), b"this is not gzip").unwrap();
    let err = err_of(format!("sources:\n  - {{name: a, paths: {}}}\n", p(&root.join("broken.jsonl.gz"))));
    assert!(err.contains("broken.jsonl.gz"), "{err}");
    std::fs::write(root.join("bad.parquet"), b"PAR1 nonsense").unwrap();
    let err = err_of(format!("sources:\n  - {{name: a, paths: {}}}\n", p(&root.join("bad.parquet"))));
    assert!(err.contains("bad.parquet") && err.contains("Parquet"), "{err}");
    write_parquet(&root.join("ok.parquet"), &[("x", None)]);
    let err = err_of(format!("sources:\n  - {{name: a, paths: {}, text_field: content}}\n", p(&root.join("ok.parquet"))));
    assert!(err.contains("no column `content`") && err.contains("columns: text, topic, extra"), "{err}");
    let err = format!("{:#}", cpt::tokenizer::Tokenizer::load(&root.join("nowhere"), &Default::default()).err().unwrap());
    assert!(err.contains("nowhere") && err.contains("tokenizer.json"), "{err}");
    std::fs::write(root.join("garbage.json"), "{").unwrap();
    let err = format!("{:#}", cpt::tokenizer::Tokenizer::load(&root.join("garbage.json"), &Default::default()).err().unwrap());
    assert!(err.contains("garbage.json"), "{err}");

    // Damaged shards are refused when opened, naming the file.
    let f = root.join("fine.jsonl");
    write_jsonl(&f, &docs("f", 5, 50));
    let cfg = parse_config(&format!("sources:\n  - {{name: f, paths: {}}}\n", p(&f)));
    prepare(&cfg, &tok, &opts(&cache)).unwrap();
    let tokens = cache.join("f/tokens.bin");
    let len = std::fs::metadata(&tokens).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&tokens).unwrap().set_len(len - 2).unwrap();
    let err = format!("{:#}", PreparedData::open(&cache, &cfg, None).err().unwrap());
    assert!(err.contains("tokens.bin") && err.contains("cpt prepare"), "{err}");
    // ... and prepare notices and rebuilds them.
    match &prepare(&cfg, &tok, &opts(&cache)).unwrap().sources[0].decision {
        Decision::Rebuild(why) => assert!(why.contains("unreadable"), "{why}"),
        other => panic!("{other:?}"),
    }
    PreparedData::open(&cache, &cfg, None).unwrap();
}

#[test]
fn old_manifests_and_other_special_tokens_rebuild_and_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let f = root.join("s.jsonl");
    write_jsonl(&f, &docs("s", 5, 60));
    let tok = load_tokenizer(&byte_tokenizer(&root.join("tok"), 0));
    let cache = root.join("cache");
    let cfg = single(root, &format!("{{name: s, paths: {}}}", p(&f)), "");
    prepare(&cfg, &tok, &opts(&cache)).unwrap();

    // A manifest as cpt wrote it before special tokens had their own record (format 1):
    // the BOS/EOS ids sat in `settings`, chosen by the old rule.
    let path = cache.join("s/manifest.json");
    let mut old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    old["version"] = 1.into();
    old.as_object_mut().unwrap().remove("special_tokens");
    old["settings"]["bos_id"] = serde_json::Value::Null;
    old["settings"]["eos_id"] = EOS.into();
    std::fs::write(&path, serde_json::to_string_pretty(&old).unwrap()).unwrap();
    let err = format!("{:#}", PreparedData::open(&cache, &cfg, Some(&tok)).err().unwrap());
    assert!(err.contains("manifest version 1") && err.contains("cpt prepare"), "{err}");
    let report = prepare(&cfg, &tok, &opts(&cache)).unwrap();
    match &report.sources[0].decision {
        Decision::Rebuild(why) => {
            assert!(why.contains("older cpt") && why.contains("manifest version 1"), "{why}");
            assert!(why.contains("EOS 257") && why.contains("rule 2"), "{why}");
        }
        other => panic!("an old-format manifest must be rebuilt, got {other:?}"),
    }
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!((written["version"].as_u64(), written["special_tokens"]["rule"].as_u64()), (Some(2), Some(2)));
    assert_eq!(written["special_tokens"]["eos"]["id"].as_u64(), Some(EOS as u64));
    assert_eq!(prepare(&cfg, &tok, &opts(&cache)).unwrap().sources[0].decision, Decision::Reuse);

    // The same tokenizer file with another EOS: rebuilt (or refused), never reused.
    let other_eos = single(root, &format!("{{name: s, paths: {}}}", p(&f)), "eos_token: \"<s>\"\n");
    let tok_other = other_eos.open_tokenizer(&root.join("tok")).unwrap();
    assert_eq!(tok_other.eos_id(), Some(BOS));
    let err = format!("{:#}", PreparedData::open(&cache, &other_eos, Some(&tok_other)).err().unwrap());
    assert!(err.contains("other special tokens") && err.contains("EOS 257"), "{err}");
    let refuse = single(root, &format!("{{name: s, paths: {}}}", p(&f)), "eos_token: \"<s>\"\non_tokenizer_change: refuse\n");
    let err = format!("{:#}", prepare(&refuse, &tok_other, &opts(&cache)).unwrap_err());
    assert!(err.contains("other special tokens") && err.contains("on_tokenizer_change"), "{err}");
    match &prepare(&other_eos, &tok_other, &opts(&cache)).unwrap().sources[0].decision {
        Decision::Rebuild(why) => {
            assert!(why.contains("special tokens changed") && why.contains("EOS 257 `</s>`") && why.contains("256 `<s>` (from data.eos_token)"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(all_docs(&cache, "s")[0].last().copied(), Some(BOS));
}
