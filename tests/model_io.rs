//! Checkpoints in and out: errors that name the tensor, stored dtypes, sharding, and a
//! save -> transformers load -> same logits round trip.
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use cpt::model::init::{build_config, preset, SizeOverrides};
use cpt::model::io::{load_safetensors_dir, save_safetensors_dir};
use cpt::model::{Architecture, CausalLm, ModelConfig, SaveOptions};

fn tiny_config(arch: Architecture, tied: bool) -> ModelConfig {
    let o = SizeOverrides {
        tie_word_embeddings: Some(tied),
        ..Default::default()
    };
    build_config(arch, &preset("tiny").unwrap(), &o, 50, Some(0), Some(1)).unwrap()
}

fn saved_model(arch: Architecture, tied: bool, dir: &Path) -> CausalLm {
    let model = CausalLm::new_random(tiny_config(arch, tied), 7, &Device::Cpu, DType::F32).unwrap();
    model.save_pretrained(dir, &SaveOptions::default()).unwrap();
    model
}

/// Rewrites a saved checkpoint's tensors through `edit`, then returns the load error.
fn load_error_after(edit: impl FnOnce(&mut HashMap<String, Tensor>), tied: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    saved_model(Architecture::Llama, tied, dir.path());
    let mut tensors = load_safetensors_dir(dir.path()).unwrap();
    edit(&mut tensors);
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    save_safetensors_dir(dir.path(), &list, DType::F32, 0).unwrap();
    match CausalLm::from_pretrained(dir.path(), &Device::Cpu, DType::F32) {
        Ok(_) => "loaded".to_string(),
        Err(e) => format!("{e:#}"),
    }
}

fn sample_ids() -> Tensor {
    Tensor::new(
        &[[0u32, 5, 17, 3, 49, 8, 8, 2], [1, 2, 3, 4, 5, 6, 7, 9]],
        &Device::Cpu,
    )
    .unwrap()
}

fn assert_same_params(a: &CausalLm, b: &CausalLm, round_to: DType) {
    assert_eq!(a.named_parameters().len(), b.named_parameters().len());
    for ((na, va), (nb, vb)) in a.named_parameters().iter().zip(b.named_parameters()) {
        assert_eq!(na, nb);
        let want = va
            .as_tensor()
            .to_dtype(round_to)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let diff = (want - vb.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{na} changed in the round trip");
    }
}

#[test]
fn missing_tensor_is_named() {
    let e = load_error_after(
        |t| drop(t.remove("model.layers.1.mlp.up_proj.weight")),
        true,
    );
    assert!(
        e.contains("missing tensor `model.layers.1.mlp.up_proj.weight`"),
        "{e}"
    );
}

#[test]
fn missing_untied_head_is_named() {
    let e = load_error_after(|t| drop(t.remove("lm_head.weight")), false);
    assert!(e.contains("missing tensor `lm_head.weight`"), "{e}");
}

#[test]
fn unexpected_tensor_is_named_but_rotary_buffers_are_ignored() {
    let extra = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let e = load_error_after(
        |t| {
            drop(t.insert(
                "model.layers.0.self_attn.extra.weight".into(),
                extra.clone(),
            ))
        },
        true,
    );
    assert!(
        e.contains("unexpected tensor `model.layers.0.self_attn.extra.weight`"),
        "{e}"
    );
    let e = load_error_after(
        |t| drop(t.insert("model.layers.0.self_attn.rotary_emb.inv_freq".into(), extra)),
        true,
    );
    assert_eq!(e, "loaded");
}

#[test]
fn misshaped_tensor_is_named() {
    let wrong = Tensor::zeros((64, 2), DType::F32, &Device::Cpu).unwrap();
    let e = load_error_after(
        |t| drop(t.insert("model.layers.0.self_attn.k_proj.weight".into(), wrong)),
        true,
    );
    assert!(
        e.contains("`model.layers.0.self_attn.k_proj.weight` has shape [64, 2], expected [32, 64]"),
        "{e}"
    );
}

#[test]
fn integer_tensor_is_named() {
    let ints = Tensor::zeros(64, DType::U32, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&HashMap::from([("model.norm.weight", ints)]), &path).unwrap();
    let e = format!("{:#}", load_safetensors_dir(dir.path()).unwrap_err());
    assert!(
        e.contains("model.norm.weight") && e.contains("dtype"),
        "{e}"
    );
}

#[test]
fn broken_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        CausalLm::from_pretrained(dir.path(), &Device::Cpu, DType::F32).unwrap_err()
    );
    assert!(e.contains("config.json"), "{e}");

    saved_model(Architecture::Llama, true, dir.path());
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let e = format!(
        "{:#}",
        CausalLm::from_pretrained(dir.path(), &Device::Cpu, DType::F32).unwrap_err()
    );
    assert!(e.contains("model.safetensors"), "{e}");

    let index = r#"{"metadata": {}, "weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let e = format!(
        "{:#}",
        CausalLm::from_pretrained(dir.path(), &Device::Cpu, DType::F32).unwrap_err()
    );
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}

#[test]
fn sharded_round_trip_and_stale_files_removed() {
    let dir = tempfile::tempdir().unwrap();
    let model = CausalLm::new_random(
        tiny_config(Architecture::Qwen2, false),
        3,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let opts = SaveOptions {
        max_shard_bytes: 40_000,
        ..Default::default()
    };
    model.save_pretrained(dir.path(), &opts).unwrap();
    let shards: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("model-") && n.ends_with(".safetensors"))
        .collect();
    assert!(shards.len() > 1, "expected several shards, got {shards:?}");
    assert!(dir.path().join("model.safetensors.index.json").exists());
    assert!(!dir.path().join("model.safetensors").exists());

    let back = CausalLm::from_pretrained(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert_same_params(&model, &back, DType::F32);
    let ids = sample_ids();
    let diff = (model.forward(&ids, None).unwrap() - back.forward(&ids, None).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);

    // Saving again unsharded leaves exactly one weights file.
    back.save_pretrained(dir.path(), &SaveOptions::default())
        .unwrap();
    assert!(dir.path().join("model.safetensors").exists());
    assert!(!dir.path().join("model.safetensors.index.json").exists());
    assert!(!dir.path().join(&shards[0]).exists());
}

#[test]
fn bf16_and_f16_saves_load_back() {
    for (dtype, name) in [(DType::BF16, "bfloat16"), (DType::F16, "float16")] {
        let dir = tempfile::tempdir().unwrap();
        let model = CausalLm::new_random(
            tiny_config(Architecture::Llama, true),
            11,
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        model
            .save_pretrained(
                dir.path(),
                &SaveOptions {
                    dtype,
                    ..Default::default()
                },
            )
            .unwrap();
        let stored = load_safetensors_dir(dir.path()).unwrap();
        assert!(stored.values().all(|t| t.dtype() == dtype));
        assert!(
            !stored.contains_key("lm_head.weight"),
            "tied models store no lm_head"
        );
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["torch_dtype"], name);
        let back = CausalLm::from_pretrained(dir.path(), &Device::Cpu, DType::F32).unwrap();
        assert_same_params(&model, &back, dtype);
    }
}

#[test]
fn tokenizer_and_generation_files_are_copied() {
    let src = tempfile::tempdir().unwrap();
    let model = saved_model(Architecture::Llama, true, src.path());
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::write(src.path().join(f), format!("{{\"file\": \"{f}\"}}")).unwrap();
    }
    let loaded = CausalLm::from_pretrained(src.path(), &Device::Cpu, DType::F32).unwrap();
    let out = tempfile::tempdir().unwrap();
    loaded
        .save_pretrained(out.path(), &SaveOptions::default())
        .unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.path().join(f).exists(), "{f} not copied");
    }
    assert!(!out.path().join("special_tokens_map.json").exists());
    // Explicit source for a model that was not loaded from disk.
    let out2 = tempfile::tempdir().unwrap();
    let opts = SaveOptions {
        assets_from: Some(src.path().to_path_buf()),
        ..Default::default()
    };
    model.save_pretrained(out2.path(), &opts).unwrap();
    assert!(out2.path().join("tokenizer.json").exists());
}

fn transformers_available() -> bool {
    Command::new("python3")
        .args(["-c", "import transformers, torch, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// cpt saves -> transformers loads with no missing/unexpected weights -> same logits.
#[test]
fn transformers_loads_saved_models_with_same_logits() {
    if !transformers_available() {
        eprintln!("SKIP transformers_loads_saved_models_with_same_logits: python3 with transformers/torch/safetensors not available");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_hf_roundtrip.py");
    let cases = [
        (Architecture::Llama, true, DType::F32, 0u64),
        (Architecture::Qwen2, false, DType::BF16, 30_000),
        (Architecture::Mistral, false, DType::F16, 0),
    ];
    let dirs: Vec<_> = cases.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let mut args = vec![script.display().to_string()];
    for ((arch, tied, dtype, shard), dir) in cases.into_iter().zip(&dirs) {
        let mut config = tiny_config(arch, tied);
        config.initializer_range = 0.3; // large weights: logits far from uniform
        let model = CausalLm::new_random(config, 5, &Device::Cpu, DType::F32).unwrap();
        model
            .save_pretrained(
                dir.path(),
                &SaveOptions {
                    dtype,
                    max_shard_bytes: shard,
                    ..Default::default()
                },
            )
            .unwrap();
        // Compare what was stored (rounded to `dtype`), as transformers sees it.
        let stored = CausalLm::from_pretrained(dir.path(), &Device::Cpu, DType::F32).unwrap();
        let ids = sample_ids();
        let logits = stored.forward(&ids, None).unwrap();
        let expected = dir.path().join("expected.safetensors");
        let data = HashMap::from([
            ("input_ids", ids.to_dtype(DType::I64).unwrap()),
            ("logits", logits),
        ]);
        candle_core::safetensors::save(&data, &expected).unwrap();
        args.push(dir.path().display().to_string());
        args.push(expected.display().to_string());
    }
    let out = Command::new("python3").args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "transformers check failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("max |logit diff|"))
            .count(),
        3
    );
}
