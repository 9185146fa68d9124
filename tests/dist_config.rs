//! The `parallel:` section and `cpt plan`: validated like the other sections, left out of
//! saved configs at its defaults, and the planner's report.
use std::process::Command;

use cpt::config::parse_config;
use cpt::dist::ZeroStage;

const MINIMAL: &str = "
model:
  path: models/tiny
data: {}
train:
  max_steps: 100
";

fn err(yaml: &str, sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    format!("{:#}", parse_config(yaml, "run.yaml", &sets).expect_err("config should be rejected"))
}

#[test]
fn the_parallel_section_is_validated_by_field_path() {
    let yaml = format!("{MINIMAL}parallel: {{zero: 1, bucket_mb: 8, timeout_s: 30}}\n");
    let c = parse_config(&yaml, "run.yaml", &[]).unwrap();
    assert_eq!(c.parallel.zero, ZeroStage::Zero1);
    assert_eq!(c.parallel.bucket_elems(), 8 << 18);

    let e = err(MINIMAL, &["parallel.zero=2"]);
    assert!(e.contains("parallel.zero") && e.contains("zero stage 2 is not supported (use 0, 1 or 3)") && e.contains("--set parallel.zero=2"), "{e}");
    let e = err(&format!("{MINIMAL}parallel: {{zeros: 1}}\n"), &[]);
    assert!(e.contains("parallel.zeros: unknown field `zeros`") && e.contains("did you mean `zero`"), "{e}");
    let e = err(MINIMAL, &["parallel.zero=3"]);
    assert!(e.contains("parallel.zero: 3 gathers each layer's weights") && e.contains("kernels.recompute: true"), "{e}");
    let e = err(MINIMAL, &["parallel.timeout_s=0", "parallel.bucket_mb=-1"]);
    assert!(e.contains("parallel.timeout_s: must be >= 1") && e.contains("parallel.bucket_mb: must be > 0"), "{e}");
    let e = err(MINIMAL, &["parallel.nccl_bootstrap=file"]);
    assert!(e.contains("parallel.nccl_id_file: needed with nccl_bootstrap: file"), "{e}");
    assert!(parse_config(MINIMAL, "run.yaml", &["parallel.zero=3".into(), "kernels.recompute=true".into()]).is_ok());
    // ZeRO-3 shards trainable decoder weights, which a LoRA run does not have.
    let e = err(MINIMAL, &["parallel.zero=3", "kernels.recompute=true", "lora.rank=8"]);
    assert!(e.contains("parallel.zero: 3 shards trainable decoder weights; a LoRA run"), "{e}");
    assert!(parse_config(MINIMAL, "run.yaml", &["parallel.zero=1".into(), "lora.rank=8".into()]).is_ok());
}

#[test]
fn a_default_parallel_section_is_not_written_back() {
    let c = parse_config(MINIMAL, "run.yaml", &[]).unwrap();
    assert!(!c.to_yaml().unwrap().contains("parallel"), "one-process configs are saved as before");
    let c = parse_config(MINIMAL, "run.yaml", &["parallel.zero=1".into()]).unwrap();
    let yaml = c.to_yaml().unwrap();
    assert!(yaml.contains("parallel") && yaml.contains("zero: 1"), "{yaml}");
    let back = parse_config(&yaml, "saved.yaml", &[]).unwrap();
    assert_eq!(back.parallel, c.parallel);
}

#[test]
fn cpt_plan_reports_every_stage_with_its_formula() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("run.yaml");
    // A model that does not exist yet: the planner reads what model.init would create.
    std::fs::write(
        &cfg,
        "model: {path: no-such-model, init: {preset: small-10m, vocab_size: 8192}}\ndata: {}\ntrain: {max_steps: 10}\nbatch: {micro_batch: 4, seq_len: 256, grad_accum: 2}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args(["plan", "--devices", "2", "--device-memory", "2GiB", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for stage in ["ZeRO-0 without recomputation", "ZeRO-1 with recomputation", "ZeRO-3 with recomputation"] {
        assert!(text.contains(stage), "{text}");
    }
    assert!(text.contains("optimiser moments") && text.contains("2 x 4 B x") && text.contains("largest micro-batch that fits"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args(["plan", "--devices", "8", "--device-memory", "2GiB", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let totals: Vec<f64> = plans.as_array().unwrap().iter().map(|p| p["total"].as_f64().unwrap()).collect();
    assert_eq!(totals.len(), 5);
    // Sharding the optimiser state saves memory at eight ranks (at two, the master and
    // gradient shards cost what the halved moments save: cpt keeps full f32 weights and
    // gradients).
    assert!(totals[2] < totals[0] && totals[3] < totals[1], "{totals:?}");
}
