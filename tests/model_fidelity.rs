//! Logits, loss and the gradient of every parameter against transformers (f32, CPU).
//! Fixtures: scripts/make_model_fixtures.py -> tests/fixtures/model/<case>/.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use cpt::model::{token_nll, CausalLm, Packing};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model")
        .join(case)
}

fn load_reference(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).expect("reference fixture loads")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn norm(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Runs forward + backward on a fixture and checks everything against the reference.
fn check_case(case: &str, reference_file: &str) {
    let dir = fixture(case);
    let model =
        CausalLm::from_pretrained(&dir, &Device::Cpu, DType::F32).expect("fixture model loads");
    let reference = load_reference(&dir.join(reference_file));
    let ids = reference["input_ids"].to_dtype(DType::U32).unwrap();
    let targets = reference["targets"].to_dtype(DType::U32).unwrap();

    let packing = if reference_file.contains("packed") {
        let text = std::fs::read_to_string(dir.join("doc_starts.json")).unwrap();
        let starts: Vec<Vec<u32>> = serde_json::from_str(&text).unwrap();
        Some(Packing::from_doc_starts(&starts, ids.dim(1).unwrap(), &Device::Cpu).unwrap())
    } else {
        None
    };

    let logits = model.forward(&ids, packing.as_ref()).unwrap();
    assert_eq!(logits.dtype(), DType::F32);
    let logit_err = max_abs_diff(&logits, &reference["logits"]);
    assert!(
        logit_err < 1e-4,
        "{case}/{reference_file}: logits differ by {logit_err}"
    );

    let loss = token_nll(&logits, &targets).unwrap().mean_all().unwrap();
    let loss_val = loss.to_scalar::<f32>().unwrap();
    let ref_loss = reference["loss"].to_vec1::<f32>().unwrap()[0];
    assert!(
        (loss_val - ref_loss).abs() < 1e-4,
        "{case}: loss {loss_val} vs transformers {ref_loss}"
    );

    let grads = loss.backward().unwrap();
    let mut worst_grad = 0f32;
    let ref_grad_count = reference.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        ref_grad_count,
        model.named_parameters().len(),
        "{case}: parameter count differs from transformers"
    );
    for (name, var) in model.named_parameters() {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("{case}: no gradient reached `{name}`"));
        assert_eq!(g.dtype(), DType::F32, "{name}: gradient must land in f32");
        let g_norm = norm(g);
        assert!(
            g_norm.is_finite() && g_norm > 0.0,
            "{case}: gradient of `{name}` is {g_norm}"
        );
        let want = reference
            .get(&format!("grad.{name}"))
            .unwrap_or_else(|| panic!("no reference gradient for {name}"));
        let rel = norm(&(g - want).unwrap()) / norm(want);
        assert!(
            rel < 1e-4,
            "{case}: gradient of `{name}` differs by {rel} relative to its norm"
        );
        worst_grad = worst_grad.max(rel);
    }
    eprintln!(
        "{case}/{reference_file}: max |logit diff| {logit_err:.2e}, |loss diff| {:.2e}, worst relative grad diff {worst_grad:.2e}",
        (loss_val - ref_loss).abs()
    );
}

#[test]
fn llama_gqa_tied_matches_transformers() {
    check_case("llama_gqa_tied", "reference.safetensors");
}

#[test]
fn packed_documents_match_separate_documents() {
    check_case("llama_gqa_tied", "reference_packed.safetensors");
}

#[test]
fn qwen2_with_bias_bf16_stored_matches_transformers() {
    check_case("qwen2_bias", "reference.safetensors");
}

#[test]
fn llama3_rope_scaled_f16_stored_matches_transformers() {
    check_case("llama3_rope_scaled", "reference.safetensors");
}

#[test]
fn mistral_tied_matches_transformers() {
    check_case("mistral_tied", "reference.safetensors");
}

/// The bf16 compute path runs end to end and stays close to f32 (gradients still f32).
#[test]
fn bf16_compute_is_close_to_f32() {
    let dir = fixture("llama_gqa_tied");
    let reference = load_reference(&dir.join("reference.safetensors"));
    let ids = reference["input_ids"].to_dtype(DType::U32).unwrap();
    let targets = reference["targets"].to_dtype(DType::U32).unwrap();
    let model = CausalLm::from_pretrained(&dir, &Device::Cpu, DType::BF16).unwrap();
    let logits = model.forward(&ids, None).unwrap();
    assert_eq!(logits.dtype(), DType::F32);
    let loss = token_nll(&logits, &targets).unwrap().mean_all().unwrap();
    let ref_loss = reference["loss"].to_vec1::<f32>().unwrap()[0];
    let loss_val = loss.to_scalar::<f32>().unwrap();
    assert!(
        (loss_val - ref_loss).abs() < 0.1,
        "bf16 loss {loss_val} vs f32 {ref_loss}"
    );
    let grads = loss.backward().unwrap();
    for (name, var) in model.named_parameters() {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("no bf16 gradient for {name}"));
        assert_eq!(g.dtype(), DType::F32);
        let want = &reference[&format!("grad.{name}")];
        let rel = norm(&(g - want).unwrap()) / norm(want);
        assert!(rel < 0.1, "bf16 gradient of `{name}` differs by {rel}");
    }
}

#[test]
fn packing_positions_restart_per_document() {
    let p =
        Packing::from_doc_starts(&[vec![0, 3], vec![0, 5, 6], vec![]], 8, &Device::Cpu).unwrap();
    let pos = p.positions.to_vec2::<u32>().unwrap();
    let seg = p.segments.to_vec2::<u32>().unwrap();
    assert_eq!(pos[0], [0, 1, 2, 0, 1, 2, 3, 4]);
    assert_eq!(seg[0], [0, 0, 0, 1, 1, 1, 1, 1]);
    assert_eq!(pos[1], [0, 1, 2, 3, 4, 0, 0, 1]);
    assert_eq!(seg[1], [0, 0, 0, 0, 0, 1, 2, 2]);
    assert_eq!(pos[2], [0, 1, 2, 3, 4, 5, 6, 7]);
    for bad in [vec![0, 8], vec![0, 4, 4], vec![5, 2]] {
        let e = Packing::from_doc_starts(std::slice::from_ref(&bad), 8, &Device::Cpu).unwrap_err();
        assert!(format!("{e:#}").contains("row 0"), "{bad:?}: {e:#}");
    }
}

#[test]
fn token_nll_rejects_bad_shapes_and_ids() {
    let logits = Tensor::zeros((1, 2, 4), DType::F32, &Device::Cpu).unwrap();
    let out_of_vocab = Tensor::new(&[[1u32, 4]], &Device::Cpu).unwrap();
    assert!(
        format!("{:#}", token_nll(&logits, &out_of_vocab).unwrap_err()).contains("target id 4")
    );
    let wrong_shape = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
    assert!(token_nll(&logits, &wrong_shape).is_err());
    // Uniform logits: NLL = ln 4 everywhere.
    let ok = Tensor::new(&[[1u32, 3]], &Device::Cpu).unwrap();
    let nll = token_nll(&logits, &ok).unwrap().to_vec2::<f32>().unwrap();
    assert!(
        nll[0].iter().all(|x| (x - 4f32.ln()).abs() < 1e-6),
        "{nll:?}"
    );
}
