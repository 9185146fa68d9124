//! Every example in `configs/` is a valid training config: it deserialises with unknown keys
//! rejected, passes the training and data validation, and its eval tasks (if any) type-check.
//! The recipe numbers the examples promise in their comments are checked against the
//! resolved config, so an edit that breaks a recipe fails here.
use std::path::{Path, PathBuf};

use cpt::config::{load_config, parse_config, ScheduleKind, TrainConfig};
use cpt::data::config::DataConfig;
use cpt::eval::training::parse_tasks;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs_dir())
        .expect("configs/ is readable")
        .map(|e| e.expect("configs/ entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

fn load(name: &str) -> TrainConfig {
    let path = configs_dir().join(name);
    load_config(&path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

/// Share of each named source in stage `stage`.
fn share(cfg: &TrainConfig, stage: usize, source: &str) -> f64 {
    let weights = cfg.data.stage_weights_by_name(stage, None).expect("stage weights");
    weights[cfg.data.source_index(source).unwrap_or_else(|| panic!("no source {source}"))]
}

fn group_share(cfg: &TrainConfig, stage: usize, group: &str) -> f64 {
    let weights = cfg.data.stage_weights_by_name(stage, None).expect("stage weights");
    cfg.data
        .sources
        .iter()
        .zip(&weights)
        .filter(|(s, _)| s.group.as_deref() == Some(group))
        .map(|(_, w)| w)
        .sum()
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-9 * want.abs().max(1e-12), "{what}: got {got}, want {want}");
}

#[test]
fn every_example_parses_and_validates() {
    let files = example_files();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["synE.yaml", "tiny.yaml", "tinyllama_replay.yaml", "smollm_replay.yaml"] {
        assert!(names.iter().any(|n| n == expected), "configs/{expected} is missing (found {names:?})");
    }
    for path in &files {
        let cfg = load_config(path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        cfg.data.validate().unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        parse_tasks(&cfg.eval.tasks).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        // What `cpt prepare` and `cpt data inspect` read from the same file.
        let data = DataConfig::load(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        assert_eq!(data.data, cfg.data, "{}: the data view differs from the training view", path.display());
        // The resolved config (written into each run directory) reads back the same.
        let yaml = cfg.to_yaml().expect("to_yaml");
        let again = parse_config(&yaml, "resolved", &[]).unwrap_or_else(|e| panic!("{}: resolved: {e:#}", path.display()));
        assert_eq!(again.to_yaml().expect("to_yaml"), yaml, "{}: resolved config is not stable", path.display());
    }
}

/// The check above would miss nothing a typo can break: a misspelled key in any example is
/// rejected, naming the key.
#[test]
fn a_typo_in_any_example_is_rejected() {
    for path in example_files() {
        let text = std::fs::read_to_string(&path).expect("read example");
        for (key, typo) in [("seq_len:", "seq_lne:"), ("grad_clip:", "grad_clp:"), ("  sources:", "  source:")] {
            if !text.contains(key) {
                continue;
            }
            let broken = text.replacen(key, typo, 1);
            let err = parse_config(&broken, &path.display().to_string(), &[])
                .err()
                .unwrap_or_else(|| panic!("{}: `{typo}` was accepted", path.display()));
            let bad = typo.trim().trim_end_matches(':');
            assert!(format!("{err:#}").contains(bad), "{}: error does not name `{bad}`: {err:#}", path.display());
        }
    }
}

#[test]
fn syne_is_the_papers_two_stage_recipe() {
    let cfg = load("synE.yaml");
    let stages = &cfg.data.stages;
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].tokens, Some(92_500_000_000));
    assert_eq!(stages[1].tokens, Some(7_500_000_000));
    assert_eq!(cfg.train.max_tokens.map(|c| c.0), Some(100_000_000_000));

    // Stage I: CN:EN = 2:8 with SynE's within-language shares.
    assert_close("stage I zh", group_share(&cfg, 0, "zh"), 0.2);
    assert_close("stage I en", group_share(&cfg, 0, "en"), 0.8);
    assert_close("stage I synthetic", group_share(&cfg, 0, "synthetic"), 0.0);
    for (source, within) in [
        ("zh_web", 0.70), ("zh_encyclopedia", 0.05), ("zh_books", 0.20), ("zh_qa_forums", 0.05),
    ] {
        assert_close(source, share(&cfg, 0, source), 0.2 * within);
        assert_close(source, share(&cfg, 1, source), 0.1 * within);
    }
    for (source, within) in [
        ("en_web", 0.40), ("en_encyclopedia", 0.05), ("en_books", 0.15), ("en_qa_forums", 0.05),
        ("en_papers", 0.10), ("en_math", 0.10), ("en_code", 0.15),
    ] {
        assert_close(source, share(&cfg, 0, source), 0.8 * within);
        assert_close(source, share(&cfg, 1, source), 0.7 * within);
    }
    // Stage II: CN:EN:synthetic = 1:7:2.
    assert_close("stage II zh", group_share(&cfg, 1, "zh"), 0.1);
    assert_close("stage II en", group_share(&cfg, 1, "en"), 0.7);
    assert_close("stage II synthetic", group_share(&cfg, 1, "synthetic"), 0.2);

    // AdamW (0.9, 0.95), clip 1.0, bf16 on cuda, seq 8192.
    assert_eq!(cfg.optim.betas, [0.9, 0.95]);
    assert_eq!(cfg.optim.grad_clip, Some(1.0));
    assert_eq!(cfg.run.dtype, cpt::config::DTypeName::Bf16);
    assert_eq!(cfg.run.device, cpt::config::DeviceKind::Cuda);
    assert_eq!(cfg.batch.seq_len, 8192);

    // Warmup over 10B tokens from 1e-7 to 1e-5, then constant.
    let schedule = cfg.schedule().expect("schedule");
    assert_close("lr at 0", schedule.lr_at(0.0), 1e-7);
    assert_close("lr at 5B", schedule.lr_at(5e9), 1e-7 + (1e-5 - 1e-7) * 0.5);
    assert_close("lr at 10B", schedule.lr_at(1e10), 1e-5);
    assert_close("lr at 99B", schedule.lr_at(9.9e10), 1e-5);

    // Perplexity curriculum, SynE topic mixing driven by validation, checkpoints by tokens.
    let curriculum = cfg.data.curriculum.as_ref().expect("curriculum");
    assert_eq!(curriculum.order, cpt::data::config::CurriculumOrder::EasyToHard);
    assert_eq!(cfg.data.mixing.as_ref().map(|m| m.rule), Some(cpt::data::config::MixingRule::Syne));
    assert!(cfg.validation.every_steps.is_some(), "topic mixing needs validation rounds");
    assert!(cfg.checkpoint.every_tokens.is_some());
}

#[test]
fn replay_examples_rewarm_and_replay() {
    for (file, replay_share, start_lr, peak) in
        [("tinyllama_replay.yaml", 0.25, 4e-5, 4e-4), ("smollm_replay.yaml", 0.05, 0.0, 5e-4)]
    {
        let cfg = load(file);
        assert_eq!(cfg.schedule.kind, ScheduleKind::Rewarm, "{file}");
        for stage in 0..cfg.data.stages.len() {
            assert_close(&format!("{file} replay share"), group_share(&cfg, stage, "replay"), replay_share);
        }
        let schedule = cfg.schedule().expect("schedule");
        let total = cfg.train.max_tokens.expect("max_tokens").0 as f64;
        assert_close(&format!("{file} start"), schedule.lr_at(0.0), start_lr);
        assert_close(&format!("{file} peak"), schedule.lr_at(schedule.warmup), peak);
        assert!((schedule.warmup / total - 0.01).abs() < 1e-3, "{file}: warmup over ~1% of the run");
        // Re-decays to a floor of 0.1 x peak (the end of the run lands on it to within a step).
        let end = schedule.lr_at(schedule.decay_end);
        assert_close(&format!("{file} floor"), end, 0.1 * peak);
        assert!(schedule.lr_at(0.5 * total) < peak && schedule.lr_at(0.5 * total) > 0.1 * peak, "{file}: mid-run decay");
    }
}
