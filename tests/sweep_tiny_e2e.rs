//! A 2x2 sweep (Chinese share x learning rate) of real `cpt train` runs on the tiny model
//! and the bundled corpus, end to end: runs, results from real metrics, charts, a rerun that
//! trains nothing, and a recommendation. Sized for CI (a few seconds a run on 2 cores).

use std::path::Path;
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn base_config(root: &Path, work: &Path) -> String {
    let corpus = root.join("corpus/sample");
    format!(
        "run: {{out_dir: {work}/unused, seed: 3, device: cpu, dtype: f32}}
model:
  path: {work}/tiny-base
  init: {{preset: tiny, arch: llama, tokenizer_corpus: {corpus}, vocab_size: 512}}
data:
  cache_dir: {work}/cache
  sources:
    - {{name: zh, paths: ['{corpus}/zh/*.jsonl'], weight: 0.5}}
    - {{name: en, paths: ['{corpus}/en/*.jsonl'], weight: 0.5}}
  sampler: {{max_repeats: 64}}
  validation: {{fraction: 0.1, max_docs: 8}}
optim: {{kind: adamw, lr: 1.0e-3, grad_clip: 1.0}}
schedule: {{kind: constant, unit: steps, warmup: 2}}
batch: {{micro_batch: 4, seq_len: 64}}
train: {{max_steps: 12}}
checkpoint: {{keep_last: 1}}
logging: {{every_steps: 2, tensorboard: false, progress_bar: false}}
validation: {{every_steps: 6, max_windows: 4, at_start: true}}
",
        work = work.display(),
        corpus = corpus.display()
    )
}

const GRID: &str = "axes:
  zh_ratio:
    data.sources[name=zh].weight: [0.2, 0.8]
    data.sources[name=en].weight: [0.8, 0.2]
  lr:
    optim.lr: [1.0e-3, 4.0e-3]
";

#[test]
fn a_two_by_two_sweep_of_the_tiny_model_runs_end_to_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join("corpus/sample/zh").is_dir() {
        println!("skipped: the bundled corpus is not in this checkout");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("base.yaml"), base_config(root, w)).unwrap();
    std::fs::write(w.join("grid.yaml"), GRID).unwrap();
    let sweep = w.join("sweep");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_cpt"))
            .current_dir(w)
            .args(["sweep", "--config", "base.yaml", "--grid", "grid.yaml", "--out", "sweep", "--chart-format", "png"])
            .env_remove("CPT_SWEEP_TRAINER")
            .output()
            .unwrap()
    };
    let out = run();
    let logs: String = std::fs::read_dir(sweep.join("runs"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| std::fs::read_to_string(e.path().join("train.log")).unwrap_or_default()).collect())
        .unwrap_or_default();
    assert!(out.status.success(), "{}\n{logs}", text(&out));

    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sweep.join("results.json")).unwrap()).unwrap();
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        assert_eq!(r["status"], "finished", "{r}");
        let v = &r["values"];
        for col in ["val.zh.initial", "val.zh.final", "val.zh.best", "val.en.final", "train.loss", "flops", "tokens", "wall_s"] {
            let x = v[col].as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite() && x > 0.0, "{col} missing in {}: {v}", r["id"]);
        }
        assert_eq!(v["tokens"].as_f64(), Some(12.0 * 4.0 * 64.0), "{v}");
        // Every run starts from the same model, so the step-0 losses agree across runs.
        assert!((v["val.zh.initial"].as_f64().unwrap() - runs[0]["values"]["val.zh.initial"].as_f64().unwrap()).abs() < 1e-4);
        // Training on the sample corpus lowers the Chinese validation loss.
        assert!(v["val.zh.best"].as_f64().unwrap() < v["val.zh.initial"].as_f64().unwrap(), "{v}");
    }
    // More Chinese data gives lower Chinese loss at the same LR.
    let zh = |ratio: &str, lr: &str| runs.iter().find(|r| r["id"] == format!("zh_ratio-{ratio}__lr-{lr}")).unwrap()["values"]["val.zh.final"].as_f64().unwrap();
    assert!(zh("0.8", "0.001") < zh("0.2", "0.001"), "zh loss: 0.8 -> {}, 0.2 -> {}", zh("0.8", "0.001"), zh("0.2", "0.001"));
    for chart in ["heatmap_val_zh_final.png", "heatmap_val_en_final.png", "curves_val_zh.png"] {
        assert!(std::fs::metadata(sweep.join("charts").join(chart)).map(|m| m.len()).unwrap_or(0) > 3000, "{chart}");
    }

    // A second invocation trains nothing.
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4 already finished"), "{}", text(&out));

    // Two ratios cannot carry a mixing law: the recommendation falls back to the best run.
    let out = Command::new(env!("CARGO_BIN_EXE_cpt"))
        .current_dir(w)
        .args(["fit", "recommend", "--sweep", "sweep", "--ratio-axis", "zh_ratio", "--lr-axis", "lr", "--minimise", "zh", "--set", "train.max_steps=1000", "--out", "rec"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = std::fs::read_to_string(w.join("rec/recommendation.md")).unwrap();
    assert!(report.contains("best observed run"), "{report}");
    let cfg: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(w.join("rec/recommended.yaml")).unwrap()).unwrap();
    assert_eq!(cfg["train"]["max_steps"].as_i64(), Some(1000));
    assert_eq!(cfg["data"]["sources"][0]["weight"].as_f64(), Some(0.8));
}
