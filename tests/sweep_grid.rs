//! Grid files: expansion into runs (zipped and crossed axes, fixed keys, labels, stable
//! ids) and clear errors for malformed grids naming the file and key.

use cpt::sweep::grid::Grid;
use cpt::sweep::plan::load_base;
use cpt::sweep::yaml_path;
use serde_yaml::Value;

const BASE: &str = "run: {out_dir: out, seed: 1}
data:
  groups:
    - {name: zh, weight: 0.5}
    - {name: en, weight: 0.5}
optim: {lr: 0.001, betas: [0.9, 0.95]}
train: {max_tokens: 1000}
";

fn base() -> Value {
    serde_yaml::from_str(BASE).unwrap()
}

#[test]
fn expands_zipped_and_crossed_axes_with_stable_ids() {
    let grid = Grid::from_yaml_str(
        "axes:
  zh_ratio:
    data.groups[name=zh].weight: [0.2, 0.5, 0.8]
    data.groups[name=en].weight: [0.8, 0.5, 0.2]
  lr:
    optim.lr: [1.0e-4, 3.0e-4]
fixed:
  train.max_tokens: 5000
",
    )
    .unwrap();
    assert_eq!(grid.size(), 6);
    let runs = grid.expand(&base()).unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "zh_ratio-0.2__lr-0.0001",
            "zh_ratio-0.2__lr-0.0003",
            "zh_ratio-0.5__lr-0.0001",
            "zh_ratio-0.5__lr-0.0003",
            "zh_ratio-0.8__lr-0.0001",
            "zh_ratio-0.8__lr-0.0003"
        ]
    );
    let r = &runs[5];
    let get = |p: &str| yaml_path::get(&r.config, p).unwrap().as_f64().unwrap();
    assert_eq!(get("data.groups[name=zh].weight"), 0.8);
    assert_eq!(get("data.groups[1].weight"), 0.2);
    assert_eq!(get("optim.lr"), 3e-4);
    assert_eq!(get("train.max_tokens"), 5000.0);
    assert_eq!(get("optim.betas[1]"), 0.95, "untouched keys stay");
    assert_eq!(r.axis_values[0].0, "zh_ratio");
    assert_eq!(r.axis_values[0].2.as_f64(), Some(0.8));
    assert_eq!(r.overrides.len(), 4);
    // Adding a value keeps the ids of the existing points.
    let bigger = Grid::from_yaml_str("axes:\n  zh_ratio:\n    data.groups[name=zh].weight: [0.2, 0.35, 0.5, 0.8]\n    data.groups[name=en].weight: [0.8, 0.65, 0.5, 0.2]\n  lr:\n    optim.lr: [1.0e-4, 3.0e-4]\n").unwrap();
    let bigger_ids: Vec<String> = bigger.expand(&base()).unwrap().into_iter().map(|r| r.id).collect();
    assert!(ids.iter().all(|id| bigger_ids.iter().any(|b| b == id)));
}

#[test]
fn labels_name_non_scalar_values() {
    let grid = Grid::from_yaml_str("axes:\n  model:\n    run.seed: [{a: 1}, {a: 2}]\nlabels:\n  model: [tiny, small]\n").unwrap();
    let runs = grid.expand(&base()).unwrap();
    assert_eq!(runs[0].id, "model-tiny");
    assert_eq!(runs[1].id, "model-small");
}

fn err(grid: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.yaml");
    std::fs::write(&path, grid).unwrap();
    match Grid::from_file(&path).and_then(|g| g.expand(&base()).map(|_| ())) {
        Ok(()) => panic!("grid accepted: {grid}"),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains("grid.yaml"), "the error must name the file: {msg}");
            msg
        }
    }
}

#[test]
fn malformed_grids_name_the_file_and_key() {
    let m = err("axes:\n  lr:\n    optim.lr: 0.1\n");
    assert!(m.contains("axes.lr.optim.lr") && m.contains("list"), "{m}");
    let m = err("axes:\n  zh:\n    data.groups[0].weight: [0.1, 0.2]\n    data.groups[1].weight: [0.9]\n");
    assert!(m.contains("axes.zh.data.groups[1].weight") && m.contains("zipped"), "{m}");
    let m = err("axes:\n  lr:\n    optim.lrr: [0.1]\n");
    assert!(m.contains("axes.lr.optim.lrr") && m.contains("did you mean `lr`"), "{m}");
    let m = err("axes:\n  zh:\n    data.groups[name=fr].weight: [0.1]\n");
    assert!(m.contains("name = fr") && m.contains("zh, en"), "{m}");
    let m = err("axes:\n  lr:\n    optim.lr: [0.1]\nfixd:\n  train.max_tokens: 1\n");
    assert!(m.contains("fixd"), "{m}");
    let m = err("axes: {}\n");
    assert!(m.contains("no axes"), "{m}");
    let m = err("axes:\n  lr:\n    optim.lr: []\n");
    assert!(m.contains("empty"), "{m}");
    let m = err("axes:\n  lr:\n    optim.lr: [0.1, 0.2]\nlabels:\n  lr: [a]\n");
    assert!(m.contains("labels.lr"), "{m}");
    let m = err("axes:\n  lr:\n    optim.lr: [0.1, 0.2]\nfixed:\n  train.max_tokenz: 3\n");
    assert!(m.contains("fixed.train.max_tokenz") && m.contains("did you mean `max_tokens`"), "{m}");
    let m = err("axes:\n  lr:\n    optim[.lr: [0.1]\n");
    assert!(m.contains("axes.lr"), "{m}");
}

#[test]
fn set_overrides_apply_to_the_base_and_reject_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.yaml");
    std::fs::write(&path, BASE).unwrap();
    let v = load_base(&path, &["optim.lr=3e-4".into(), "data.groups[name=en].weight=0.7".into()]).unwrap();
    assert_eq!(yaml_path::get(&v, "optim.lr").unwrap().as_f64(), Some(3e-4));
    assert_eq!(yaml_path::get(&v, "data.groups[1].weight").unwrap().as_f64(), Some(0.7));
    let e = format!("{:#}", load_base(&path, &["optim.l=1".into()]).unwrap_err());
    assert!(e.contains("base.yaml") && e.contains("optim.l"), "{e}");
}
