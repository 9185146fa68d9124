//! LoRA on the model: the `lora:` config section and its errors, PEFT initialisation, what
//! trains, seeded dropout under recomputation, PEFT adapters cpt refuses, `cpt lora merge`,
//! and adapters written by cpt loaded by PEFT itself (when python3 has peft).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use cpt::config::parse_config;
use cpt::kernels::recompute::GradSink;
use cpt::kernels::KernelSettings;
use cpt::model::lora::{peft, LoraConfig, LoraSettings, LoraSetup, TargetModules};
use cpt::model::kv_cache::step_inputs;
use cpt::model::{CausalLm, KvCache, ModelConfig};
use cpt::train::optim::{Algorithm, Grads, Optimizer, OptimizerSettings};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn base_dir(name: &str) -> PathBuf {
    fixtures().join("model").join(name)
}

fn base_config(name: &str) -> ModelConfig {
    ModelConfig::from_file(&base_dir(name).join("config.json")).unwrap()
}

fn window(name: &str) -> (Tensor, Tensor) {
    let r = candle_core::safetensors::load(base_dir(name).join("reference.safetensors"), &Device::Cpu).unwrap();
    (r["input_ids"].to_dtype(DType::U32).unwrap(), r["targets"].to_dtype(DType::U32).unwrap())
}

fn fresh(name: &str, settings: LoraSettings, seed: u64) -> CausalLm {
    let setup = LoraSetup { settings, adapter: None, seed };
    CausalLm::from_pretrained_lora(&base_dir(name), &Device::Cpu, DType::F32, &setup).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

const BASE_YAML: &str = "
model: {path: models/tiny}
data: {}
train: {max_steps: 10}
";

fn config_err(extra: &str) -> String {
    let text = format!("{BASE_YAML}{extra}");
    format!("{:#}", parse_config(&text, "run.yaml", &[]).expect_err("config should be rejected"))
}

#[test]
fn lora_section_parses_with_peft_defaults_and_round_trips() {
    let text = format!("{BASE_YAML}lora: {{rank: 16, alpha: 32, dropout: 0.05, target_modules: all-linear, rslora: true, modules_to_save: [embed_tokens, lm_head]}}\n");
    let c = parse_config(&text, "run.yaml", &[]).unwrap();
    let lora = c.lora.clone().unwrap();
    assert_eq!(lora.target_modules, Some(TargetModules::AllLinear));
    let back = parse_config(&c.to_yaml().unwrap(), "back.yaml", &[]).unwrap();
    assert_eq!(back.lora, c.lora);
    let s = lora.resolve(None, &base_config("llama_gqa_tied")).unwrap();
    assert_eq!(s.scaling(), 32.0 / 4.0, "rsLoRA scales by alpha / sqrt(r)");

    // Unset fields are PEFT's defaults: r 8, alpha 8, dropout 0, q_proj and v_proj.
    let c = parse_config(BASE_YAML, "run.yaml", &["lora.dropout=0.1".to_string()]).unwrap();
    let s = c.lora.unwrap().resolve(None, &base_config("llama_gqa_tied")).unwrap();
    assert_eq!((s.rank, s.alpha, s.dropout, s.scaling()), (8, 8.0, 0.1, 1.0));
    assert_eq!(s.targets, TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]));
}

#[test]
fn lora_typos_and_impossible_choices_are_named() {
    let e = config_err("lora: {rnak: 8}\n");
    assert!(e.contains("lora.rnak") && e.contains("did you mean `rank`"), "{e}");
    let e = config_err("lora: {rank: 0}\n");
    assert!(e.contains("lora.rank: must be >= 1"), "{e}");
    let e = config_err("lora: {dropout: 1.0, alpha: -1}\n");
    assert!(e.contains("lora.dropout: must be in [0, 1)") && e.contains("lora.alpha: must be > 0"), "{e}");
    let e = config_err("lora: {target_modules: [q_proj, qproj]}\n");
    assert!(e.contains("lora.target_modules[1]") && e.contains("did you mean `q_proj`"), "{e}");
    let e = config_err("lora: {target_modules: [lm_head]}\n");
    assert!(e.contains("lora.modules_to_save"), "{e}");
    let e = config_err("lora: {target_modules: everything}\n");
    assert!(e.contains("lora.target_modules") && e.contains("all-linear"), "{e}");
    let e = config_err("lora: {modules_to_save: [embed_token]}\n");
    assert!(e.contains("lora.modules_to_save") && e.contains("did you mean `embed_tokens`"), "{e}");
    let e = config_err("lora: {rank: 4}\nfreeze: {train_only: embeddings, steps: 5}\n");
    assert!(e.contains("freeze.train_only") && e.contains("new_vocab_rows"), "{e}");
    let e = config_err("lora: {rank: 4}\nfreeze: {train_only: new_vocab_rows, steps: 5}\n");
    assert!(e.contains("lora.modules_to_save"), "{e}");

    // A name that matches no layer of the actual model (it has 2 layers).
    let cfg = LoraConfig { target_modules: Some(TargetModules::Names(vec!["model.layers.5.self_attn.q_proj".into()])), ..Default::default() };
    let e = format!("{:#}", cfg.resolve(None, &base_config("llama_gqa_tied")).unwrap_err());
    assert!(e.contains("lora.target_modules") && e.contains("matches no linear layer"), "{e}");
}

#[test]
fn fresh_adapters_follow_peft_init_and_leave_the_model_unchanged() {
    let settings = LoraSettings { rank: 4, alpha: 8.0, targets: TargetModules::AllLinear, ..Default::default() };
    let model = fresh("llama_gqa_tied", settings, 3);
    let plain = CausalLm::from_pretrained(&base_dir("llama_gqa_tied"), &Device::Cpu, DType::F32).unwrap();
    let (ids, _) = window("llama_gqa_tied");
    assert_eq!(max_abs_diff(&model.forward(&ids, None).unwrap(), &plain.forward(&ids, None).unwrap()), 0.0);

    let c = model.config().clone();
    // Only the adapters train: 2 layers x 7 projections x (A, B).
    assert_eq!(model.named_parameters().len(), 2 * 7 * 2);
    let per_layer: usize = cpt::model::lora::LinearKind::ALL.iter().map(|k| { let (o, i) = k.shape(&c); 4 * (o + i) }).sum();
    assert_eq!(model.num_trainable(), 2 * per_layer);
    assert_eq!(model.num_parameters(), plain.num_parameters());
    for (name, var) in model.named_parameters() {
        let values = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        if name.ends_with("lora_B.weight") {
            assert!(values.iter().all(|v| *v == 0.0), "{name}: B starts at zero");
        } else {
            // Kaiming-uniform with a = sqrt(5): uniform in +-1/sqrt(in_features).
            let bound = 1.0 / (var.dims()[1] as f32).sqrt();
            let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max <= bound && max > 0.8 * bound, "{name}: |A| up to {max}, bound {bound}");
        }
    }
    // Seeded: the same seed gives the same A, another seed another.
    let again = fresh("llama_gqa_tied", LoraSettings { rank: 4, targets: TargetModules::AllLinear, ..Default::default() }, 3);
    let other = fresh("llama_gqa_tied", LoraSettings { rank: 4, targets: TargetModules::AllLinear, ..Default::default() }, 4);
    let a = |m: &CausalLm| m.named_parameters()[0].1.as_tensor().clone();
    assert_eq!(max_abs_diff(&a(&model), &a(&again)), 0.0);
    assert!(max_abs_diff(&a(&model), &a(&other)) > 0.0);
}

#[test]
fn frozen_base_is_kept_in_the_compute_dtype_and_gets_no_gradient() {
    let settings = LoraSettings { rank: 2, modules_to_save: vec![cpt::model::lora::SavedModule::LmHead], ..Default::default() };
    let setup = LoraSetup { settings, adapter: None, seed: 0 };
    let model = CausalLm::from_pretrained_lora(&base_dir("qwen2_bias"), &Device::Cpu, DType::BF16, &setup).unwrap();
    let names: Vec<&str> = model.named_parameters().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 2 * 2 + 1, "{names:?}");
    assert!(names.iter().all(|n| n.contains("lora_") || *n == "lm_head.weight"), "{names:?}");
    assert!(model.named_parameters().iter().all(|(_, v)| v.dtype() == DType::F32), "trainable tensors are f32 masters");
    let (ids, targets) = window("qwen2_bias");
    let loss = model.token_nll(&ids, &targets, None, None).unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let with_grad = Grads::from_store(model.named_parameters(), &grads, 1.0).unwrap();
    assert!(with_grad.entries().iter().all(|(_, g)| g.is_some()));
    // The merged weights come back in the frozen base's dtype (bf16), trained head in f32.
    let (weights, _) = model.merged_weights().unwrap();
    for (name, t) in weights {
        let want = if name == "lm_head.weight" { DType::F32 } else { DType::BF16 };
        assert_eq!(t.dtype(), want, "{name}");
    }
}

/// Gradients of the trainable tensors after one training forward + backward.
fn grads_of(model: &CausalLm, ids: &Tensor, targets: &Tensor) -> Vec<Tensor> {
    let sink = GradSink::new();
    let loss = model.token_nll(ids, targets, None, Some(&sink)).unwrap().mean_all().unwrap();
    let mut store = loss.backward().unwrap();
    sink.merge_into(&mut store).unwrap();
    Grads::from_store(model.named_parameters(), &store, 1.0).unwrap().entries().iter().map(|(_, g)| g.clone().unwrap()).collect()
}

#[test]
fn dropout_is_seeded_repeatable_and_identical_under_recomputation() {
    let settings = LoraSettings { rank: 4, dropout: 0.5, targets: TargetModules::AllLinear, ..Default::default() };
    let adapter = peft::read(&fixtures().join("lora/llama_tied_all_linear/adapter")).unwrap();
    let setup = LoraSetup { settings: LoraSettings { dropout: 0.5, ..adapter.settings.clone() }, adapter: Some(adapter), seed: 9 };
    let mut model = CausalLm::from_pretrained_lora(&base_dir("llama_gqa_tied"), &Device::Cpu, DType::F32, &setup).unwrap();
    let (ids, targets) = window("llama_gqa_tied");

    let eval_a = model.forward_no_grad(&ids, None).unwrap();
    let first = model.forward(&ids, None).unwrap();
    let second = model.forward(&ids, None).unwrap();
    assert_eq!(model.lora_dropout_draws(), 2, "evaluation draws no masks");
    assert!(max_abs_diff(&first, &second) > 1e-3, "each training forward draws new masks");
    assert!(max_abs_diff(&first, &eval_a) > 1e-3, "training forwards apply dropout");
    assert_eq!(max_abs_diff(&model.forward_no_grad(&ids, None).unwrap(), &eval_a), 0.0, "evaluation applies none");
    model.set_lora_dropout_draws(0);
    assert_eq!(max_abs_diff(&model.forward(&ids, None).unwrap(), &first), 0.0, "the draw counter restores the masks");

    model.set_lora_dropout_draws(5);
    let plain = grads_of(&model, &ids, &targets);
    model.set_kernels(KernelSettings { recompute: true, ..Default::default() }).unwrap();
    model.set_lora_dropout_draws(5);
    let recomputed = grads_of(&model, &ids, &targets);
    for (a, b) in plain.iter().zip(&recomputed) {
        assert_eq!(max_abs_diff(a, b), 0.0, "recomputed layers draw the masks of their first forward");
    }
    let _ = settings;
}

fn write_adapter_with(config_edit: impl FnOnce(&mut serde_json::Value), extra_tensor: Option<&str>) -> String {
    let src = fixtures().join("lora/qwen2_bias_rslora/adapter");
    let dir = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join(peft::ADAPTER_CONFIG)).unwrap()).unwrap();
    config_edit(&mut config);
    std::fs::write(dir.path().join(peft::ADAPTER_CONFIG), config.to_string()).unwrap();
    let mut tensors = candle_core::safetensors::load(src.join(peft::ADAPTER_WEIGHTS), &Device::Cpu).unwrap();
    if let Some(name) = extra_tensor {
        tensors.insert(name.to_string(), Tensor::zeros((4, 32), DType::F32, &Device::Cpu).unwrap());
    }
    candle_core::safetensors::save(&tensors, dir.path().join(peft::ADAPTER_WEIGHTS)).unwrap();
    match CausalLm::from_pretrained_with_adapter(&base_dir("qwen2_bias"), Some(dir.path()), &Device::Cpu, DType::F32) {
        Ok(_) => "loaded".into(),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn peft_adapters_cpt_cannot_reproduce_are_refused_by_name() {
    assert_eq!(write_adapter_with(|_| {}, None), "loaded");
    let e = write_adapter_with(|c| c["use_dora"] = true.into(), None);
    assert!(e.contains("adapter_config.json") && e.contains("use_dora"), "{e}");
    let e = write_adapter_with(|c| c["rank_pattern"] = serde_json::json!({"q_proj": 8}), None);
    assert!(e.contains("rank_pattern"), "{e}");
    let e = write_adapter_with(|c| c["r"] = 8.into(), None);
    assert!(e.contains("lora_A.weight") && e.contains("rank r = 8"), "{e}");
    let e = write_adapter_with(|_| {}, Some("base_model.model.model.embed_tokens.lora_embedding_A"));
    assert!(e.contains("lora_embedding_A"), "{e}");
    let e = write_adapter_with(|_| {}, Some("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"));
    assert!(e.contains("model.layers.3.self_attn.q_proj"), "{e}");
    let e = CausalLm::from_pretrained_with_adapter(&base_dir("qwen2_bias"), Some(&fixtures().join("lora/llama_tied_all_linear/adapter")), &Device::Cpu, DType::F32)
        .map(|_| ()).unwrap_err();
    assert!(format!("{e:#}").contains("matches no linear layer"), "{e:#}");
}

#[test]
fn cpt_lora_merge_writes_a_model_with_the_adapters_logits() {
    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    let adapter = fixtures().join("lora/qwen2_bias_rslora/adapter");
    let status = Command::new(env!("CARGO_BIN_EXE_cpt"))
        .args(["lora", "merge", "--base"])
        .arg(base_dir("qwen2_bias"))
        .arg("--adapter")
        .arg(&adapter)
        .arg("--out")
        .arg(&merged)
        .args(["--dtype", "f32"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(String::from_utf8_lossy(&status.stdout).contains("merged 4 adapted layers"));
    let m = CausalLm::from_pretrained(&merged, &Device::Cpu, DType::F32).unwrap();
    let unmerged = CausalLm::from_pretrained_with_adapter(&base_dir("qwen2_bias"), Some(&adapter), &Device::Cpu, DType::F32).unwrap();
    let (ids, _) = window("qwen2_bias");
    let diff = max_abs_diff(&m.forward_no_grad(&ids, None).unwrap(), &unmerged.forward_no_grad(&ids, None).unwrap());
    assert!(diff < 1e-5, "merged logits differ by {diff}");
    // The default dtype is the base's (bf16 here), and a bad adapter path is named.
    let bf16 = out.path().join("merged-bf16");
    let ok = Command::new(env!("CARGO_BIN_EXE_cpt")).args(["lora", "merge", "--base"]).arg(base_dir("qwen2_bias")).arg("--adapter").arg(&adapter).arg("--out").arg(&bf16).output().unwrap();
    assert!(ok.status.success());
    let stored = cpt::model::io::load_safetensors_dir(&bf16).unwrap();
    assert!(stored.values().all(|t| t.dtype() == DType::BF16));
    let bad = Command::new(env!("CARGO_BIN_EXE_cpt")).args(["lora", "merge", "--base"]).arg(base_dir("qwen2_bias")).args(["--adapter", "no/such/adapter", "--out"]).arg(out.path().join("x")).output().unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && stderr.contains("no/such/adapter"), "{stderr}");
    assert!(!out.path().join("x").exists(), "nothing is written on failure");
}

/// Generation (the key/value-cached forward) runs the adapters as the full forward does,
/// whose logits are checked against PEFT's.
#[test]
fn cached_generation_steps_apply_the_adapter() {
    for (case, base) in [("llama_tied_all_linear", "llama_gqa_tied"), ("qwen2_bias_rslora", "qwen2_bias"), ("mistral_tied_ensure", "mistral_tied")] {
        let adapter = fixtures().join("lora").join(case).join("adapter");
        let model = CausalLm::from_pretrained_with_adapter(&base_dir(base), Some(&adapter), &Device::Cpu, DType::F32).unwrap();
        let plain = CausalLm::from_pretrained(&base_dir(base), &Device::Cpu, DType::F32).unwrap();
        let (ids, _) = window(base);
        let tokens = ids.get(0).unwrap().narrow(0, 0, 8).unwrap().unsqueeze(0).unwrap();
        let full = model.forward_no_grad(&tokens, None).unwrap();
        let mut cache = KvCache::new(model.config().num_hidden_layers, 8);
        let mut start = 0;
        for len in [4, 1, 1, 1, 1] {
            let (pos, mask) = step_inputs(&[0], start, len, &Device::Cpu).unwrap();
            let logits = model.forward_cached(&tokens.narrow(1, start, len).unwrap(), &pos, &mask, &mut cache).unwrap();
            let want = full.get(0).unwrap().get(start + len - 1).unwrap().unsqueeze(0).unwrap();
            let diff = max_abs_diff(&logits, &want);
            assert!(diff < 1e-5, "{case}: after {} tokens, cached logits differ by {diff}", start + len);
            start += len;
        }
        let moved = max_abs_diff(&full, &plain.forward_no_grad(&tokens, None).unwrap());
        assert!(moved > 1e-1, "{case}: the adapter moves the logits by {moved} only");
    }
}

fn peft_available() -> bool {
    Command::new("python3")
        .args(["-c", "import peft, transformers, torch, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Adapters cpt trained and saved load in `PeftModel.from_pretrained(base, dir)` with the same
/// logits; the merged model loads in transformers with the same logits too.
#[test]
fn peft_loads_adapters_written_by_cpt() {
    if !peft_available() {
        eprintln!("SKIP peft_loads_adapters_written_by_cpt: python3 with peft/transformers/torch/safetensors not available");
        return;
    }
    let cases = [
        ("llama_gqa_tied", LoraSettings { rank: 4, alpha: 16.0, targets: TargetModules::AllLinear, modules_to_save: vec![cpt::model::lora::SavedModule::EmbedTokens, cpt::model::lora::SavedModule::LmHead], ..Default::default() }),
        ("qwen2_bias", LoraSettings { rank: 2, alpha: 4.0, rslora: true, targets: TargetModules::Names(vec!["k_proj".into(), "mlp.down_proj".into()]), modules_to_save: vec![cpt::model::lora::SavedModule::LmHead], ..Default::default() }),
        ("mistral_tied", LoraSettings { rank: 2, alpha: 2.0, modules_to_save: vec![cpt::model::lora::SavedModule::EmbedTokens], ensure_weight_tying: true, ..Default::default() }),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut peft_args = vec![fixtures().join("../../scripts/check_peft_roundtrip.py").display().to_string()];
    let mut hf_args = vec![fixtures().join("../../scripts/check_hf_roundtrip.py").display().to_string(), "--tol".into(), "1e-5".into()];
    for (base, settings) in cases {
        let model = fresh(base, settings, 1);
        // Two AdamW steps so that B, and the saved modules, are no longer their initial values.
        let mut opt = Optimizer::new(model.named_parameters(), OptimizerSettings {
            algorithm: Algorithm::AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8 },
            weight_decay: 0.0,
            decay_embeddings: false,
        }).unwrap();
        let (ids, targets) = window(base);
        for _ in 0..2 {
            let loss = model.token_nll(&ids, &targets, None, None).unwrap().mean_all().unwrap();
            let grads = Grads::from_store(model.named_parameters(), &loss.backward().unwrap(), 1.0).unwrap();
            opt.step(&grads, 0.05).unwrap();
        }
        let adapter = tmp.path().join(format!("{base}-adapter"));
        model.save_adapter(&adapter, DType::F32, Some(&base_dir(base)), None).unwrap();
        let merged = tmp.path().join(format!("{base}-merged"));
        model.save_pretrained(&merged, &Default::default()).unwrap();
        let expected = tmp.path().join(format!("{base}.safetensors"));
        let data = HashMap::from([("input_ids", ids.to_dtype(DType::I64).unwrap()), ("logits", model.forward_no_grad(&ids, None).unwrap())]);
        candle_core::safetensors::save(&data, &expected).unwrap();
        peft_args.extend([base_dir(base).display().to_string(), adapter.display().to_string(), expected.display().to_string()]);
        hf_args.extend([merged.display().to_string(), expected.display().to_string()]);
    }
    for (what, args) in [("PEFT", peft_args), ("transformers (merged)", hf_args)] {
        let out = Command::new("python3").args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{what} check failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{stdout}");
        assert_eq!(stdout.lines().filter(|l| l.contains("max |logit diff|")).count(), 3, "{stdout}");
    }
}
