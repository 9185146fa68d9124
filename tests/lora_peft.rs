//! LoRA against PEFT (f32, CPU): logits with an adapter, five AdamW steps, merged weights.
//! Fixtures: scripts/make_lora_fixtures.py -> tests/fixtures/lora/<case>/ (base models from
//! tests/fixtures/model/).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use cpt::kernels::recompute::GradSink;
use cpt::kernels::{KernelMode, KernelSettings};
use cpt::model::lora::{peft, LoraSetup};
use cpt::model::CausalLm;
use cpt::train::optim::{Algorithm, Grads, Optimizer, OptimizerSettings};

const CASES: [(&str, &str); 3] = [
    ("llama_tied_all_linear", "llama_gqa_tied"),
    ("qwen2_bias_rslora", "qwen2_bias"),
    ("mistral_tied_ensure", "mistral_tied"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(case: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(root().join("lora").join(case).join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn with_adapter(case: &str, base: &str) -> CausalLm {
    let adapter = root().join("lora").join(case).join("adapter");
    CausalLm::from_pretrained_with_adapter(&root().join("model").join(base), Some(&adapter), &Device::Cpu, DType::F32).unwrap()
}

#[test]
fn logits_with_adapter_match_peft() {
    for (case, base) in CASES {
        let model = with_adapter(case, base);
        let r = reference(case);
        let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
        let logits = model.forward_no_grad(&ids, None).unwrap();
        let plain = CausalLm::from_pretrained(&root().join("model").join(base), &Device::Cpu, DType::F32).unwrap();
        let moved = max_abs_diff(&plain.forward_no_grad(&ids, None).unwrap(), &logits);
        assert!(moved > 0.5, "{case}: the adapter should change the logits (moved {moved})");
        let diff = max_abs_diff(&logits, &r["logits"]);
        println!("{case}: max |logit - PEFT| = {diff:.2e} (the adapter moves them by up to {moved:.2})");
        assert!(diff < 1e-5, "{case}: logits differ from PEFT's by {diff}");
        // The differentiable forward (training) gives the same logits (dropout 0).
        let diff = max_abs_diff(&model.forward(&ids, None).unwrap(), &r["logits"]);
        assert!(diff < 1e-5, "{case}: training forward differs by {diff}");
    }
}

/// Five AdamW steps on one window, as scripts/make_lora_fixtures.py does with
/// torch.optim.AdamW; the adapters and saved modules end within 1e-4 of PEFT's.
fn five_steps(case: &str, base: &str, kernels: KernelSettings) {
    let adapter = peft::read(&root().join("lora").join(case).join("adapter")).unwrap();
    let setup = LoraSetup { settings: adapter.settings.clone(), adapter: Some(adapter), seed: 0 };
    let mut model = CausalLm::from_pretrained_lora(&root().join("model").join(base), &Device::Cpu, DType::F32, &setup).unwrap();
    model.set_kernels(kernels).unwrap();
    let r = reference(case);
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let targets = r["targets"].to_dtype(DType::U32).unwrap();
    let settings = OptimizerSettings {
        algorithm: Algorithm::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
        weight_decay: 0.1,
        decay_embeddings: false,
    };
    let mut opt = Optimizer::new(model.named_parameters(), settings).unwrap();
    let want_losses = r["losses"].to_vec1::<f32>().unwrap();
    for (step, want) in want_losses.iter().enumerate() {
        let sink = GradSink::new();
        let loss = model.token_nll(&ids, &targets, None, Some(&sink)).unwrap().mean_all().unwrap();
        let got = loss.to_scalar::<f32>().unwrap();
        assert!((got - want).abs() < 1e-4, "{case} ({}): loss before step {step}: {got} vs PEFT {want}", kernels.describe());
        let mut store = loss.backward().unwrap();
        sink.merge_into(&mut store).unwrap();
        opt.step(&Grads::from_store(model.named_parameters(), &store, 1.0).unwrap(), 1e-2).unwrap();
    }
    let trained: HashMap<&str, &Tensor> = model.named_parameters().iter().map(|(n, v)| (n.as_str(), v.as_tensor())).collect();
    let mut worst = 0f32;
    for (key, want) in r.iter().filter(|(k, _)| k.starts_with("trained.")) {
        let name = key.trim_start_matches("trained.base_model.model.");
        // A tied copy (ensure_weight_tying) is one variable saved under both names.
        let got = trained.get(name).or_else(|| (name == "lm_head.weight").then(|| trained.get("model.embed_tokens.weight")).flatten());
        let got = got.unwrap_or_else(|| panic!("{case}: no trainable tensor for {key}"));
        worst = worst.max(max_abs_diff(got, want));
    }
    println!("{case} ({}): after 5 AdamW steps, max |param - PEFT| = {worst:.2e}", kernels.describe());
    assert!(worst < 1e-4, "{case}: parameters differ from PEFT + torch AdamW by {worst}");
    assert_eq!(r.keys().filter(|k| k.starts_with("trained.")).count(), model.named_parameters().len() + usize::from(case.contains("ensure")));
}

#[test]
fn five_adamw_steps_match_peft_and_torch() {
    for (case, base) in CASES {
        five_steps(case, base, KernelSettings::default());
    }
}

#[test]
fn five_adamw_steps_match_with_recompute_and_fused_kernels() {
    let recompute = KernelSettings { recompute: true, ..Default::default() };
    let fused = KernelSettings { mode: KernelMode::Fused, recompute: true, ..Default::default() };
    for (case, base) in CASES {
        five_steps(case, base, recompute);
        five_steps(case, base, fused);
    }
}

#[test]
fn merged_model_matches_unmerged() {
    for (case, base) in CASES {
        let model = with_adapter(case, base);
        let out = tempfile::tempdir().unwrap();
        model.save_pretrained(out.path(), &Default::default()).unwrap();
        let merged = CausalLm::from_pretrained(out.path(), &Device::Cpu, DType::F32).unwrap();
        let ids = reference(case)["input_ids"].to_dtype(DType::U32).unwrap();
        let diff = max_abs_diff(&merged.forward_no_grad(&ids, None).unwrap(), &model.forward_no_grad(&ids, None).unwrap());
        println!("{case}: max |merged - unmerged logit| = {diff:.2e}");
        assert!(diff < 1e-5, "{case}: merged logits differ by {diff}");
        // Separate trained copies of a tied matrix make an untied model; one tied copy stays tied.
        let tied = merged.config().tie_word_embeddings;
        assert_eq!(tied, case == "mistral_tied_ensure", "{case}: tie_word_embeddings {tied}");
    }
}
