//! `cpt fit` end to end on synthetic result sets generated from known laws, plus clear
//! errors for malformed result sets.

use cpt::sweep::results::{ResultSet, RunResult};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn cpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpt")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

// zh loss falls with the Chinese ratio r, en loss rises; the best LR drifts with r.
fn zh_loss(r: f64) -> f64 {
    2.0 + 1.5 * (-2.0 * r).exp()
}
fn en_loss(r: f64) -> f64 {
    2.2 + 0.05 * (3.0 * r).exp()
}
const U: f64 = -8.111728083308073; // ln 3e-4
const V: f64 = -0.7;
fn lr_penalty(r: f64, lr: f64) -> f64 {
    let d = lr.ln() - U - V * r;
    0.04 * d * d
}

fn run(id: String, axes: Vec<(String, String)>, values: &[(&str, f64)]) -> RunResult {
    RunResult { id, status: "finished".into(), axes, values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(), flops_source: None }
}

/// A ratio x LR sweep: 5 ratios x 4 LRs.
fn sweep_results() -> ResultSet {
    let mut runs = Vec::new();
    for r in [0.1, 0.3, 0.5, 0.7, 0.9] {
        for lr in [1e-4, 2e-4, 4e-4, 8e-4] {
            let p = lr_penalty(r, lr);
            runs.push(run(
                format!("zh_ratio-{r}__lr-{lr}"),
                vec![("zh_ratio".into(), r.to_string()), ("lr".into(), lr.to_string())],
                &[("zh_ratio", r), ("lr", lr), ("val.zh.final", zh_loss(r) + p), ("val.en.final", en_loss(r) + p), ("val.zh.initial", 3.5), ("val.en.initial", 2.25)],
            ));
        }
    }
    ResultSet { axes: vec!["zh_ratio".into(), "lr".into()], runs }
}

fn write(set: &ResultSet, dir: &Path) -> String {
    set.write(dir).unwrap();
    dir.join("results.json").to_string_lossy().into_owned()
}

#[test]
fn mixing_finds_the_constrained_optimum_and_replay_share() {
    // Only the best-LR rows, so the losses follow the mixing law exactly.
    let dir = tempfile::tempdir().unwrap();
    let mut set = sweep_results();
    set.runs.retain(|r| (r.values["lr"].ln() - U - V * r.values["zh_ratio"]).abs() < 0.36);
    assert!(set.runs.len() >= 4, "{}", set.runs.len());
    for r in &mut set.runs {
        let x = r.values["zh_ratio"];
        r.values.insert("val.zh.final".into(), zh_loss(x));
        r.values.insert("val.en.final".into(), en_loss(x));
    }
    let results = write(&set, dir.path());
    let json = dir.path().join("mix.json");
    let out = cpt(&["fit", "mixing", "--results", &results, "--share", "zh=zh_ratio", "--rest", "en", "--minimise", "zh", "--constraint", "en<=base+0.4", "--replay", "en", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // base en = 2.25 (step-0 records); en loss = 2.65 at r* = ln(0.45/0.05)/3.
    let r_star = (0.45f64 / 0.05).ln() / 3.0;
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let got = report["optimum"]["shares"][0].as_f64().unwrap();
    assert!((got - r_star).abs() < 0.01, "r* {got} vs {r_star}\n{}", text(&out));
    let replay = report["replay"][1]["shares"][1].as_f64().unwrap();
    assert!((replay - (1.0 - r_star)).abs() < 0.01, "replay {replay}");
    let t = text(&out);
    assert!(t.contains("R² =") && t.contains("residuals") && t.contains("critical replay share of `en`"), "{t}");
}

#[test]
fn lr_fit_reports_the_best_lr_and_flags_extrapolation() {
    let dir = tempfile::tempdir().unwrap();
    let results = write(&sweep_results(), dir.path());
    let out = cpt(&["fit", "lr", "--results", &results, "--ratio", "zh_ratio", "--lr", "lr", "--loss", "val.zh.final", "--at", "0.4,1.5"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    let line = t.lines().find(|l| l.contains("ratio 0.4000: best LR")).unwrap();
    let lr: f64 = line.split("best LR ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let want = (U + V * 0.4).exp();
    assert!((lr / want - 1.0).abs() < 0.02, "{lr} vs {want}\n{t}");
    assert!(t.contains("EXTRAPOLATION: ratio 1.5000 lies outside the swept ratios"), "{t}");
}

#[test]
fn compute_fit_predicts_a_target_size_and_says_it_extrapolates() {
    let dir = tempfile::tempdir().unwrap();
    let runs = (0..6)
        .map(|i| {
            let c = 1e14 * 4f64.powi(i);
            run(format!("size-{i}"), vec![("size".into(), i.to_string())], &[("flops", c), ("val.zh.final", 1.9 + 900.0 * c.powf(-0.2))])
        })
        .collect();
    let results = write(&ResultSet { axes: vec!["size".into()], runs }, dir.path());
    let out = cpt(&["fit", "compute", "--results", &results, "--loss", "val.zh.final", "--target-params", "1e9", "--target-tokens", "2e10"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    let c: f64 = 6.0 * 1e9 * 2e10;
    let line = t.lines().find(|l| l.contains("predicted loss at")).unwrap();
    let got: f64 = line.split(": ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!((got - (1.9 + 900.0 * c.powf(-0.2))).abs() < 1e-3, "{got}\n{t}");
    assert!(t.contains("EXTRAPOLATION") && t.contains("C = 6ND"), "{t}");
}

#[test]
fn malformed_result_sets_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    std::fs::write(&csv, "id,status,zh_ratio,val.zh.final\na,finished,0.1,3.0\nb,finished,0.5,three\n").unwrap();
    let out = cpt(&["fit", "lr", "--results", csv.to_str().unwrap(), "--ratio", "zh_ratio", "--lr", "lr", "--loss", "val.zh.final"]);
    let t = text(&out);
    assert!(!out.status.success() && t.contains("r.csv") && t.contains("line 3") && t.contains("val.zh.final") && t.contains("three"), "{t}");
    std::fs::write(&csv, "zh_ratio,val.zh.final\n0.1,3.0\n").unwrap();
    let t = text(&cpt(&["fit", "lr", "--results", csv.to_str().unwrap(), "--ratio", "zh_ratio", "--lr", "lr", "--loss", "val.zh.final"]));
    assert!(t.contains("no `id` column"), "{t}");
    let json = dir.path().join("results.json");
    std::fs::write(&json, r#"{"axes":["lr"],"runs":[{"id":"a","status":"finished","axes":[],"values":{"lr":"fast"}}]}"#).unwrap();
    let t = text(&cpt(&["fit", "lr", "--results", json.to_str().unwrap(), "--ratio", "zh_ratio", "--lr", "lr", "--loss", "val.zh.final"]));
    assert!(t.contains("results.json") && t.contains("runs[0].values.lr"), "{t}");
    let results = write(&sweep_results(), dir.path());
    let t = text(&cpt(&["fit", "lr", "--results", &results, "--ratio", "zh_ratio", "--lr", "lr", "--loss", "val.zh.finale"]));
    assert!(t.contains("no column `val.zh.finale`") && t.contains("did you mean `val.zh.final`"), "{t}");
    let t = text(&cpt(&["fit", "mixing", "--results", &results, "--share", "zh=zh_ratio", "--minimise", "zh", "--constraint", "en<<2"]));
    assert!(t.contains("constraint `en<<2`"), "{t}");
}

#[test]
fn recommend_writes_a_ready_config_with_its_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep");
    std::fs::create_dir_all(&sweep).unwrap();
    write(&sweep_results(), &sweep);
    std::fs::write(sweep.join("base.yaml"), "run: {out_dir: x}\nmodel: {path: tiny}\ndata:\n  groups:\n    - {name: zh, weight: 0.5}\n    - {name: en, weight: 0.5}\noptim: {lr: 0.001}\n").unwrap();
    std::fs::write(
        sweep.join("grid.yaml"),
        "axes:\n  zh_ratio:\n    data.groups[name=zh].weight: [0.1, 0.3, 0.5, 0.7, 0.9]\n    data.groups[name=en].weight: [0.9, 0.7, 0.5, 0.3, 0.1]\n  lr:\n    optim.lr: [1.0e-4, 2.0e-4, 4.0e-4, 8.0e-4]\n",
    )
    .unwrap();
    let out_dir = dir.path().join("rec");
    let out = cpt(&[
        "fit", "recommend", "--sweep", sweep.to_str().unwrap(), "--ratio-axis", "zh_ratio", "--lr-axis", "lr", "--minimise", "zh", "--constraint", "en<=base+0.4",
        "--set", "model.path=full-8b", "--set", "run.out_dir=runs/full", "--out", out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let cfg: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(out_dir.join("recommended.yaml")).unwrap()).unwrap();
    let zh = cfg["data"]["groups"][0]["weight"].as_f64().unwrap();
    let en = cfg["data"]["groups"][1]["weight"].as_f64().unwrap();
    let r_star = (0.45f64 / 0.05).ln() / 3.0;
    // The per-ratio best-LR runs carry a small LR penalty, so allow some slack.
    assert!((zh - r_star).abs() < 0.05, "zh {zh} vs {r_star}\n{}", text(&out));
    assert!((zh + en - 1.0).abs() < 1e-9);
    let lr = cfg["optim"]["lr"].as_f64().unwrap();
    let want = (U + V * zh).exp();
    assert!((lr / want - 1.0).abs() < 0.05, "lr {lr} vs {want}");
    assert_eq!(cfg["model"]["path"].as_str(), Some("full-8b"));
    assert_eq!(cfg["run"]["out_dir"].as_str(), Some("runs/full"));
    let report = std::fs::read_to_string(out_dir.join("recommendation.md")).unwrap();
    assert!(report.contains("data mixing law") && report.contains("ALMR relation") && report.contains("## Evidence") && report.contains("R² ="), "{report}");
}
