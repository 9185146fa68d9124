//! Samples during training (`eval.generate`): records in the metrics JSONL and text events
//! in TensorBoard, every `every_steps` steps and at the end; the config section is checked
//! like the others.
mod train_common;

use cpt::config::parse_config;
use cpt::train::tensorboard::read_events;
use train_common::{make_model, records, train, write_config};

#[test]
fn samples_are_logged_to_metrics_and_tensorboard() {
    let dir = tempfile::tempdir().unwrap();
    let model = make_model(dir.path());
    let extra = "logging: {every_steps: 1, progress_bar: false, tensorboard: true}\n\
                 eval:\n  generate: {prompts: [\"The cat\", \"问题：\"], every_steps: 2, max_new_tokens: 5}\n";
    let config = write_config(dir.path(), &model, "run", 3, extra);
    let out = train(&config, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = dir.path().join("run");
    let samples: Vec<serde_json::Value> = records(&run).into_iter().filter(|r| r["kind"] == "sample").collect();
    let at: Vec<(u64, String)> = samples.iter().map(|r| (r["step"].as_u64().unwrap(), r["prompt"].as_str().unwrap().to_string())).collect();
    assert_eq!(at, vec![(2, "The cat".into()), (2, "问题：".into()), (3, "The cat".into()), (3, "问题：".into())]);
    assert!(samples.iter().all(|r| r["output"].is_string() && r["tokens"].as_u64().unwrap() > 0));

    let tb_dir = run.join("tb");
    let file = std::fs::read_dir(&tb_dir).unwrap().next().unwrap().unwrap().path();
    let texts: Vec<(i64, String, String)> = read_events(&file)
        .unwrap()
        .into_iter()
        .flat_map(|e| e.texts.into_iter().map(move |(tag, text)| (e.step, tag, text)))
        .collect();
    assert_eq!(texts.len(), 4);
    assert_eq!((texts[1].0, texts[1].1.as_str()), (2, "samples/1"));
    let first_output = samples[1]["output"].as_str().unwrap();
    assert_eq!(texts[1].2, format!("问题：{first_output}"));
}

#[test]
fn the_generate_section_is_validated() {
    let base = "model: {path: m}\ndata: {}\ntrain: {max_steps: 10}\n";
    let parse_config = |yaml: &str, origin: &str, sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        parse_config(yaml, origin, &sets)
    };
    let typo = parse_config(&format!("{base}eval: {{generate: {{prompts: [a], every_steps: 2, max_new_token: 3}}}}\n"), "run.yaml", &[]);
    let e = format!("{:#}", typo.unwrap_err());
    assert!(e.contains("eval.generate") && e.contains("max_new_token") && e.contains("max_new_tokens"), "{e}");
    let empty = parse_config(&format!("{base}eval: {{generate: {{prompts: [], every_steps: 2}}}}\n"), "run.yaml", &[]);
    let e = format!("{:#}", empty.and_then(|c| c.validate().map(|_| c)).unwrap_err());
    assert!(e.contains("eval.generate.prompts"), "{e}");
    let set = parse_config(&format!("{base}eval: {{generate: {{prompts: [a], every_steps: 2}}}}\n"), "run.yaml", &["eval.generate.max_new_tokens=9"]).unwrap();
    assert_eq!(set.eval.generate.unwrap().max_new_tokens, 9);
}
