//! `cpt topics train | label | eval` as a user runs them, on synthetic labelled data made
//! here: training learns the topics and is deterministic on one thread; labels land in JSONL
//! (gz/zst kept) and in prepared shards, where the sampler's topic mixing reads them; bad
//! input is an error naming the file and line, and leaves nothing half-written.
mod data_common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use cpt::data::prepare::PreparedData;
use cpt::data::shards::ShardReader;
use cpt::data::Sampler;
use data_common::*;

fn cpt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpt")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const TOPICS: [&str; 3] = ["cooking", "science", "sport"];

/// Documents of three topics: English words from a topic pool (plus shared filler) or a
/// run of Chinese characters without spaces from a topic pool, so character n-grams matter.
fn labelled(n: usize, seed: u64) -> Vec<serde_json::Value> {
    let pools: [(&[&str], &str); 3] = [
        (&["flour", "oven", "butter", "recipe", "simmer", "garlic", "bake", "sauce"], "炒煮蒸烤饭菜汤面肉锅"),
        (&["atom", "photon", "energy", "quantum", "cell", "gene", "orbit", "molecule"], "原子能量物理化学细胞基因"),
        (&["match", "goal", "team", "league", "runner", "score", "coach", "race"], "球队比赛冠军教练跑步进球"),
    ];
    let filler = ["the", "a", "of", "and", "today", "we", "about", "very"];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = |k: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % k
    };
    (0..n)
        .map(|i| {
            let t = i % 3;
            let (words, chars) = pools[t];
            let text = if i % 4 == 3 {
                let chars: Vec<char> = chars.chars().collect();
                (0..12 + next(10)).map(|_| chars[next(chars.len())]).collect::<String>()
            } else {
                let len = 8 + next(8);
                (0..len).map(|_| if next(10) < 6 { words[next(words.len())] } else { filler[next(filler.len())] }).collect::<Vec<_>>().join(" ")
            };
            serde_json::json!({"id": format!("d{i}"), "text": text, "topic": TOPICS[t]})
        })
        .collect()
}

const SMALL: [&str; 8] = ["--dim", "16", "--bucket", "20000", "--epoch", "15", "--quiet", "--json"];

fn train(root: &Path, data: &Path, out: &str, threads: &str) -> serde_json::Value {
    let out_dir = root.join(out);
    let mut args = vec!["topics", "train", "--data", data.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--threads", threads];
    args.extend(SMALL);
    let (ok, stdout, err) = cpt(&args);
    assert!(ok, "{err}");
    serde_json::from_str(&stdout).unwrap()
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    let mut text = String::new();
    let file = std::fs::File::open(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::MultiGzDecoder::new(file).read_to_string(&mut text).unwrap();
    } else if path.extension().is_some_and(|e| e == "zst") {
        zstd::stream::read::Decoder::new(file).unwrap().read_to_string(&mut text).unwrap();
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text).unwrap();
    }
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn trains_evaluates_and_is_deterministic_on_one_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("labelled.jsonl");
    write_jsonl(&data, &labelled(600, 1));
    let report = train(root, &data, "clf", "1");
    let e = &report["evaluation"];
    assert_eq!(report["training"]["held_out"], 60, "10% of each topic");
    assert!(e["accuracy"].as_f64().unwrap() > 0.9, "{e}");
    assert!(e["macro_f1"].as_f64().unwrap() > 0.9, "{e}");
    assert_eq!(e["per_label"].as_array().unwrap().len(), 3);
    let confusion: Vec<u64> = e["confusion"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|c| c.as_u64().unwrap())).collect();
    assert_eq!(confusion.iter().sum::<u64>(), 60);
    assert_eq!(files_in(&root.join("clf")), ["classifier.json", "evaluation.json", "model.safetensors"]);
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("clf/classifier.json")).unwrap()).unwrap();
    assert_eq!(info["labels"], serde_json::json!(TOPICS));
    assert_eq!(info["settings"]["dim"], 16);
    assert_eq!(info["training"]["sgd"]["threads"], 1);

    // One thread: the same bytes again. Two threads (Hogwild): as accurate.
    train(root, &data, "clf-again", "1");
    let (a, _) = cpt::topics::io::load(&root.join("clf")).unwrap();
    let (b, _) = cpt::topics::io::load(&root.join("clf-again")).unwrap();
    assert!(a.input == b.input && a.output == b.output, "one thread: the same weights bit for bit");
    assert_eq!(a.featurizer.vocabulary().words(), b.featurizer.vocabulary().words());
    let two = train(root, &data, "clf-2", "2");
    assert!(two["evaluation"]["accuracy"].as_f64().unwrap() > 0.9);

    // A separate held-out file, scored again by `eval`.
    let held = root.join("held.jsonl");
    write_jsonl(&held, &labelled(90, 2));
    let (ok, out, err) = cpt(&["topics", "eval", "--model", root.join("clf").to_str().unwrap(), "--data", held.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("held-out examples 90") && out.contains("confusion matrix"), "{out}");
}

#[test]
fn labels_jsonl_keeping_fields_and_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("labelled.jsonl");
    write_jsonl(&data, &labelled(600, 3));
    train(root, &data, "clf", "1");
    // Unlabelled inputs: the same kind of text with other fields and no topic, gz and zst.
    let records: Vec<serde_json::Value> = labelled(60, 4)
        .into_iter()
        .map(|mut r| {
            let truth = r["topic"].take();
            serde_json::json!({"id": r["id"], "text": r["text"], "source": "crawl", "truth": truth})
        })
        .collect();
    let mut text = String::new();
    for r in &records {
        text.push_str(&serde_json::to_string(r).unwrap());
        text.push('\n');
    }
    let gz = root.join("in/crawl.jsonl.gz");
    std::fs::create_dir_all(gz.parent().unwrap()).unwrap();
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    let zst = root.join("in/more.jsonl.zst");
    std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();

    let clf = root.join("clf");
    let out = root.join("out");
    let (ok, stdout, err) = cpt(&["topics", "label", "--model", clf.to_str().unwrap(), "--input", gz.to_str().unwrap(), zst.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("60 documents") && stdout.contains("docs/s"), "{stdout}");
    for name in ["crawl.jsonl.gz", "more.jsonl.zst"] {
        let lines = read_lines(&out.join(name));
        assert_eq!(lines.len(), 60);
        let mut right = 0;
        for (got, orig) in lines.iter().zip(&records) {
            assert_eq!(got["id"], orig["id"]);
            assert_eq!(got["source"], "crawl");
            assert_eq!(got["text"], orig["text"]);
            let p = got["topic_prob"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p));
            right += usize::from(got["topic"] == orig["truth"]);
        }
        assert!(right >= 54, "{right}/60 labelled with their true topic");
    }
    assert_eq!(files_in(&out), ["crawl.jsonl.gz", "more.jsonl.zst"], "no temporary files left");

    // --min-prob 1.0: nothing is that sure; every topic is null, its probability kept.
    let (ok, stdout, err) = cpt(&["topics", "label", "--model", clf.to_str().unwrap(), "--input", zst.to_str().unwrap(), "--out", root.join("sure").to_str().unwrap(), "--min-prob", "1.0", "--quiet"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("0 labelled, 60 below --min-prob 1"), "{stdout}");
    let lines = read_lines(&root.join("sure/more.jsonl.zst"));
    assert!(lines.iter().all(|l| l["topic"].is_null() && l["topic_prob"].as_f64().unwrap() > 0.0));
}

#[test]
fn labels_prepared_shards_for_topic_mixing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("labelled.jsonl");
    write_jsonl(&data, &labelled(600, 5));
    train(root, &data, "clf", "1");
    // A raw crawl without topics, prepared into shards.
    let crawl: Vec<serde_json::Value> = labelled(90, 6).into_iter().map(|r| serde_json::json!({"id": r["id"], "text": r["text"]})).collect();
    write_jsonl(&root.join("crawl.jsonl"), &crawl);
    let tok = byte_tokenizer(&root.join("tok"), 0);
    let cfg = parse_config(&format!(
        "validation: {{fraction: 0.1}}\nsampler: {{max_repeats: null}}\nmixing: {{rule: syne, alpha: 0.5}}\nsources:\n  - {{name: web, paths: {}}}\n",
        p(&root.join("crawl.jsonl"))
    ));
    let cache = root.join("cache");
    drop(prepare_and_open(&cfg, &tok, &cache));
    let shard = cache.join("web");
    let tokens_before = std::fs::read(shard.join("tokens.bin")).unwrap();
    assert!(ShardReader::open(&shard).unwrap().meta().topics.is_empty());

    let (ok, stdout, err) = cpt(&["topics", "label", "--model", root.join("clf").to_str().unwrap(), "--shards", shard.to_str().unwrap(), "--quiet"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("90 documents"), "{stdout}");
    // The same topics as labelling the JSONL file itself.
    let (ok, _, err) = cpt(&["topics", "label", "--model", root.join("clf").to_str().unwrap(), "--input", root.join("crawl.jsonl").to_str().unwrap(), "--out", root.join("labelled-crawl").to_str().unwrap(), "--quiet"]);
    assert!(ok, "{err}");
    let by_id: BTreeMap<String, String> = read_lines(&root.join("labelled-crawl/crawl.jsonl"))
        .into_iter()
        .map(|l| (l["id"].as_str().unwrap().to_string(), l["topic"].as_str().unwrap().to_string()))
        .collect();
    let reader = ShardReader::open(&shard).unwrap();
    let ids = reader.doc_ids().unwrap();
    for i in 0..reader.num_docs() {
        let topic = reader.topic_name(reader.doc(i).topic).unwrap();
        assert_eq!(topic, by_id[ids[i].as_ref().unwrap()], "document {i}");
    }
    drop(reader);
    assert!(std::fs::read(shard.join("tokens.bin")).unwrap() == tokens_before, "tokens untouched");
    assert_eq!(files_in(&cache), ["web"], "no staging directory left");

    // The sampler reads the topics without preparing again and re-weights them.
    let prepared = PreparedData::open(&cache, &cfg, Some(&load_tokenizer(&tok))).unwrap();
    let mut sampler = Sampler::new(&cfg, prepared, 64, 1).unwrap();
    assert_eq!(sampler.topic_names(), TOPICS);
    assert_eq!(sampler.topic_weights(0).len(), 3, "one stream per topic");
    let window = sampler.next_window().unwrap();
    assert!(window.topics.iter().all(|t| t.is_some()));
    let losses = |v: [f64; 3]| TOPICS.iter().map(|t| t.to_string()).zip(v).collect::<BTreeMap<String, f64>>();
    assert!(sampler.update_topic_mixing(10, &losses([3.0, 3.0, 3.0])).unwrap().is_none(), "SynE's first round is the baseline");
    let update = sampler.update_topic_mixing(20, &losses([2.0, 2.9, 2.5])).unwrap().unwrap();
    let w = &update.weights["web"];
    assert!(w["science"][1] > w["science"][0], "the topic whose loss fell least gains: {w:?}");
}

#[test]
fn bad_training_data_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = root.join("clf");
    let cases: [(&str, &str, &str); 4] = [
        ("no_text.jsonl", r#"{"topic": "a", "body": "x"}"#, "no_text.jsonl:2: missing text field"),
        ("empty.jsonl", r#"{"topic": "a", "text": "   "}"#, "empty.jsonl:2: empty text"),
        ("no_label.jsonl", r#"{"text": "some words"}"#, "no_label.jsonl:2: no label field `topic`"),
        ("bad.jsonl", r#"{"text": "cut off"#, "bad.jsonl:2: bad JSON"),
    ];
    for (name, line, want) in cases {
        let path = root.join(name);
        std::fs::write(&path, format!("{}\n{line}\n", r#"{"text": "fine words", "topic": "b"}"#)).unwrap();
        let (ok, _, err) = cpt(&["topics", "train", "--data", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
        assert!(!ok && err.contains(want), "{name}: {err}");
        assert!(!out.exists(), "{name}: nothing written");
    }
    let one = root.join("one.jsonl");
    write_jsonl(&one, &[serde_json::json!({"text": "a b", "topic": "x"}), serde_json::json!({"text": "c d", "topic": "x"})]);
    let (ok, _, err) = cpt(&["topics", "train", "--data", one.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("at least two"), "{err}");
    assert_eq!(files_in(root).iter().filter(|n| n.contains(".tmp-")).count(), 0);
    // An existing folder that is not a classifier is never replaced.
    std::fs::create_dir_all(root.join("keep")).unwrap();
    std::fs::write(root.join("keep/notes.txt"), "mine").unwrap();
    write_jsonl(&one, &[serde_json::json!({"text": "a b", "topic": "x"}), serde_json::json!({"text": "c d", "topic": "y"})]);
    let (ok, _, err) = cpt(&["topics", "train", "--data", one.to_str().unwrap(), "--out", root.join("keep").to_str().unwrap(), "--quiet"]);
    assert!(!ok && err.contains("is not a `cpt topics` classifier"), "{err}");
    assert!(root.join("keep/notes.txt").is_file());
}

/// A trained classifier in `root/clf`, and its files.
fn trained(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = root.join("labelled.jsonl");
    write_jsonl(&data, &labelled(300, 7));
    train(root, &data, "clf", "1");
    let clf = root.join("clf");
    (clf.clone(), clf.join("model.safetensors"), clf.join("classifier.json"))
}

#[test]
fn damaged_or_mismatched_models_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let input = root.join("crawl.jsonl");
    write_jsonl(&input, &[serde_json::json!({"text": "oven flour"})]);
    let label = |clf: &Path| cpt(&["topics", "label", "--model", clf.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", root.join("out").to_str().unwrap()]);

    let (clf, model, info) = trained(root);
    let original_model = std::fs::read(&model).unwrap();
    let original_info = std::fs::read_to_string(&info).unwrap();
    // Truncated weights.
    std::fs::write(&model, &original_model[..original_model.len() - 100]).unwrap();
    let (ok, _, err) = label(&clf);
    assert!(!ok && err.contains("model.safetensors") && err.contains("truncated"), "{err}");
    std::fs::write(&model, &original_model[..20]).unwrap();
    let (ok, _, err) = label(&clf);
    assert!(!ok && err.contains("truncated"), "{err}");
    std::fs::write(&model, &original_model).unwrap();
    // Another format version.
    std::fs::write(&info, original_info.replace("\"format_version\": 1", "\"format_version\": 7")).unwrap();
    let (ok, _, err) = label(&clf);
    assert!(!ok && err.contains("classifier.json: classifier format 7, but this cpt reads format 1"), "{err}");
    // A label set that is not the one the weights were trained on (renamed or reordered).
    std::fs::write(&info, original_info.replacen("\"cooking\"", "\"food\"", 1)).unwrap();
    let (ok, _, err) = label(&clf);
    assert!(!ok && err.contains("\"food\"") && err.contains("different trainings"), "{err}");
    std::fs::write(&info, &original_info).unwrap();
    // Not a classifier at all.
    let (ok, _, err) = label(&root.join("nothing"));
    assert!(!ok && err.contains("classifier.json"), "{err}");
    let (ok, _, err) = label(&clf);
    assert!(ok, "restored: {err}");
    assert!(!root.join("out").join("crawl.jsonl.tmp").exists());
}

#[test]
fn bad_label_inputs_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (clf, _, _) = trained(root);
    let input = root.join("crawl.jsonl");
    std::fs::write(&input, "{\"text\": \"oven flour\"}\n\n{\"id\": 3}\n{\"text\": \"goal team\"}\n").unwrap();
    let out = root.join("out");
    let (ok, _, err) = cpt(&["topics", "label", "--model", clf.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("crawl.jsonl:3: missing text (no `text` field)"), "{err}");
    assert!(files_in(&out).is_empty(), "no output, no temporary file: {:?}", files_in(&out));
    // Skipping copies the record through unlabelled, blank lines kept.
    let (ok, stdout, err) = cpt(&["topics", "label", "--model", clf.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--on-malformed", "skip"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("1 malformed copied through") && stdout.contains("crawl.jsonl:3"), "{stdout}");
    let text = std::fs::read_to_string(out.join("crawl.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!((lines[1], lines[2]), ("", "{\"id\": 3}"));
    // Evaluation data with a topic the classifier does not know.
    let eval = root.join("eval.jsonl");
    std::fs::write(&eval, "{\"text\": \"oven\", \"topic\": \"cooking\"}\n{\"text\": \"vote\", \"topic\": \"politics\"}\n").unwrap();
    let (ok, _, err) = cpt(&["topics", "eval", "--model", clf.to_str().unwrap(), "--data", eval.to_str().unwrap()]);
    assert!(!ok && err.contains("eval.jsonl:2: topic `politics` is not one the classifier was trained on"), "{err}");
    // Shards whose inputs changed since `cpt prepare` are left as they were.
    let crawl = root.join("web.jsonl");
    write_jsonl(&crawl, &docs("web", 20, 100));
    let tok = byte_tokenizer(&root.join("tok"), 0);
    let cfg = parse_config(&format!("sources:\n  - {{name: web, paths: {}}}\n", p(&crawl)));
    drop(prepare_and_open(&cfg, &tok, &root.join("cache")));
    let shard = root.join("cache/web");
    let before = std::fs::read(shard.join("docs.bin")).unwrap();
    std::fs::OpenOptions::new().append(true).open(&crawl).unwrap().write_all(b"{\"text\": \"new\"}\n").unwrap();
    let (ok, _, err) = cpt(&["topics", "label", "--model", clf.to_str().unwrap(), "--shards", shard.to_str().unwrap()]);
    assert!(!ok && err.contains("changed since `cpt prepare`"), "{err}");
    assert!(std::fs::read(shard.join("docs.bin")).unwrap() == before, "the index is untouched");
}
