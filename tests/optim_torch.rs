//! AdamW and SGD against PyTorch trajectories (fixtures from scripts/make_optim_fixtures.py),
//! plus exact state save/restore, update masks and gradient accumulation.
use candle_core::{Device, Tensor, Var};
use cpt::config::FreezeTarget;
use cpt::train::optim::{decays, Algorithm, GradAccumulator, Grads, Optimizer, OptimizerSettings, UpdateMask};
use std::collections::HashMap;
use std::path::PathBuf;

struct Fixture {
    meta: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn fixture(case: &str) -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap()).unwrap();
    let tensors = candle_core::safetensors::load(dir.join(format!("{case}.safetensors")), &Device::Cpu).unwrap();
    Fixture { meta, tensors }
}

impl Fixture {
    fn names(&self) -> Vec<String> {
        self.meta["params"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }
    fn settings(&self) -> OptimizerSettings {
        let m = &self.meta;
        let algorithm = match m["algorithm"].as_str().unwrap() {
            "adamw" => Algorithm::AdamW {
                beta1: m["betas"][0].as_f64().unwrap(),
                beta2: m["betas"][1].as_f64().unwrap(),
                eps: m["eps"].as_f64().unwrap(),
            },
            _ => Algorithm::Sgd { momentum: m["momentum"].as_f64().unwrap(), nesterov: m["nesterov"].as_bool().unwrap() },
        };
        OptimizerSettings {
            algorithm,
            weight_decay: m["weight_decay"].as_f64().unwrap(),
            decay_embeddings: m["decay_embeddings"].as_bool().unwrap(),
        }
    }
    fn params(&self) -> Vec<(String, Var)> {
        self.names()
            .into_iter()
            .map(|n| {
                let t = &self.tensors[&format!("init.{n}")];
                (n, Var::from_tensor(t).unwrap())
            })
            .collect()
    }
    fn grads(&self, step: usize) -> Grads {
        Grads::from_tensors(
            self.names().into_iter().map(|n| { let g = self.tensors[&format!("grad.{step}.{n}")].clone(); (n, Some(g)) }).collect(),
        )
    }
    fn lrs(&self) -> Vec<f64> {
        self.meta["lrs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    }
}

/// max |a - b| / max |b| over the tensor.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs() as f64)).max(1e-12);
    a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs())) / scale
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
}

fn check_case(case: &str) {
    check_case_with(case, false);
}

/// `multi_tensor`: the one-call AdamW of `kernels::adamw` (fused kernels) instead of one
/// update per parameter.
fn check_case_with(case: &str, multi_tensor: bool) {
    let fx = fixture(case);
    let params = fx.params();
    let mut opt = Optimizer::new(&params, fx.settings()).unwrap();
    opt.set_multi_tensor(multi_tensor);
    let clip = fx.meta["clip"].as_f64();
    let mut worst = 0f64;
    for (step, lr) in fx.lrs().into_iter().enumerate() {
        let mut grads = fx.grads(step);
        let norm = match clip {
            Some(c) => grads.clip_global_norm(c).unwrap(),
            None => grads.global_norm().unwrap(),
        };
        let want_norm = fx.meta["norms"][step].as_f64().unwrap();
        assert!((norm - want_norm).abs() <= 1e-6 * want_norm, "{case} step {step}: norm {norm} vs torch {want_norm}");
        opt.step(&grads, lr).unwrap();
        for (name, var) in &params {
            let want = &fx.tensors[&format!("param.{step}.{name}")];
            let err = rel_err(var.as_tensor(), want);
            worst = worst.max(err);
            assert!(err <= 1e-6, "{case} step {step} {name}: relative error {err:e}");
        }
    }
    // The moments match torch's state too.
    let state: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
    let mut compared = 0;
    for (key, want) in fx.tensors.iter().filter(|(k, _)| k.starts_with("state.")) {
        let got = state.get(&key["state.".len()..]).unwrap_or_else(|| panic!("{case}: no {key}"));
        let err = rel_err(got, want);
        assert!(err <= 1e-6, "{case} {key}: relative error {err:e}");
        compared += 1;
    }
    assert_eq!(compared, state.len(), "{case}: state tensors differ in number from torch's");
    eprintln!("{case}: worst parameter relative error vs torch {worst:.2e}");
}

#[test]
fn adamw_with_groups_and_clipping_matches_torch() {
    check_case("adamw_groups_clip");
}

#[test]
fn adamw_decaying_embeddings_matches_torch() {
    check_case("adamw_decay_embeddings");
}

#[test]
fn multi_tensor_adamw_matches_torch() {
    check_case_with("adamw_groups_clip", true);
    check_case_with("adamw_decay_embeddings", true);
}

#[test]
fn sgd_with_momentum_and_clipping_matches_torch() {
    check_case("sgd_momentum_clip");
}

#[test]
fn sgd_nesterov_matches_torch() {
    check_case("sgd_nesterov");
}

#[test]
fn sgd_without_momentum_matches_torch() {
    check_case("sgd_plain");
}

#[test]
fn weight_decay_groups() {
    assert!(!decays("model.norm.weight", 1, true));
    assert!(!decays("model.layers.0.self_attn.q_proj.bias", 1, true));
    assert!(decays("model.layers.0.mlp.up_proj.weight", 2, false));
    assert!(!decays("model.embed_tokens.weight", 2, false));
    assert!(decays("model.embed_tokens.weight", 2, true));
    assert!(decays("lm_head.weight", 2, false));
}

fn run_steps(opt: &mut Optimizer, fx: &Fixture, steps: std::ops::Range<usize>) {
    let lrs = fx.lrs();
    for step in steps {
        let mut grads = fx.grads(step);
        grads.clip_global_norm(1.0).unwrap();
        opt.step(&grads, lrs[step]).unwrap();
    }
}

#[test]
fn saved_state_resumes_bit_for_bit() {
    for (case, multi_tensor) in [("adamw_groups_clip", false), ("adamw_groups_clip", true), ("sgd_momentum_clip", false)] {
        let fx = fixture(case);
        let straight = fx.params();
        let mut opt = Optimizer::new(&straight, fx.settings()).unwrap();
        opt.set_multi_tensor(multi_tensor);
        run_steps(&mut opt, &fx, 0..5);

        let first = fx.params();
        let mut opt_a = Optimizer::new(&first, fx.settings()).unwrap();
        opt_a.set_multi_tensor(multi_tensor);
        run_steps(&mut opt_a, &fx, 0..2);
        let dir = tempfile::tempdir().unwrap();
        opt_a.save(dir.path()).unwrap();
        // A fresh process: parameters as saved, optimiser rebuilt and loaded.
        let resumed: Vec<(String, Var)> =
            first.iter().map(|(n, v)| (n.clone(), Var::from_tensor(&v.as_detached_tensor().copy().unwrap()).unwrap())).collect();
        let mut opt_b = Optimizer::new(&resumed, fx.settings()).unwrap();
        opt_b.set_multi_tensor(multi_tensor);
        opt_b.load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(opt_b.meta(), opt_a.meta());
        run_steps(&mut opt_b, &fx, 2..5);
        for ((name, a), (_, b)) in straight.iter().zip(&resumed) {
            assert_eq!(bits(a.as_tensor()), bits(b.as_tensor()), "{case} (multi-tensor {multi_tensor}): {name} differs after resume");
        }
    }
}

#[test]
fn loading_state_of_another_model_fails_clearly() {
    let fx = fixture("adamw_groups_clip");
    let params = fx.params();
    let mut opt = Optimizer::new(&params, fx.settings()).unwrap();
    run_steps(&mut opt, &fx, 0..1);
    let dir = tempfile::tempdir().unwrap();
    opt.save(dir.path()).unwrap();
    let other = vec![("model.other.weight".to_string(), Var::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap())];
    let mut opt2 = Optimizer::new(&other, fx.settings()).unwrap();
    let err = format!("{:#}", opt2.load(dir.path(), &Device::Cpu).unwrap_err());
    assert!(err.contains("parameters"), "{err}");
}

#[test]
fn row_mask_updates_only_selected_rows_and_frozen_params_stay() {
    row_mask_case(false);
    // The multi-tensor update leaves masked parameters to the per-parameter path.
    row_mask_case(true);
}

fn row_mask_case(multi_tensor: bool) {
    let fx = fixture("adamw_decay_embeddings");
    let free = fx.params();
    let mut opt_free = Optimizer::new(&free, fx.settings()).unwrap();
    opt_free.set_multi_tensor(multi_tensor);
    let masked = fx.params();
    let mut opt_masked = Optimizer::new(&masked, fx.settings()).unwrap();
    opt_masked.set_multi_tensor(multi_tensor);
    let emb = "model.embed_tokens.weight";
    let frozen = "model.layers.0.mlp.up_proj.weight";
    opt_masked.set_mask(emb, UpdateMask::Rows(vec![4, 5])).unwrap();
    opt_masked.set_mask(frozen, UpdateMask::Frozen).unwrap();
    let lrs = fx.lrs();
    for (step, lr) in lrs.iter().enumerate() {
        let grads = fx.grads(step);
        opt_free.step(&grads, *lr).unwrap();
        let mut grads = fx.grads(step);
        opt_masked.apply_masks(&mut grads).unwrap();
        assert!(grads.get(frozen).is_none());
        opt_masked.step(&grads, *lr).unwrap();
    }
    let get = |p: &[(String, Var)], n: &str| p.iter().find(|(k, _)| k == n).unwrap().1.as_detached_tensor();
    let init = &fx.tensors[&format!("init.{emb}")];
    let m = get(&masked, emb);
    let f = get(&free, emb);
    // Old rows: untouched bit for bit. New rows: exactly as unmasked training (AdamW is elementwise).
    assert_eq!(bits(&m.narrow(0, 0, 4).unwrap()), bits(&init.narrow(0, 0, 4).unwrap()));
    assert_eq!(bits(&m.narrow(0, 4, 2).unwrap()), bits(&f.narrow(0, 4, 2).unwrap()));
    assert_ne!(bits(&m.narrow(0, 4, 2).unwrap()), bits(&init.narrow(0, 4, 2).unwrap()));
    assert_eq!(bits(&get(&masked, frozen)), bits(&fx.tensors[&format!("init.{frozen}")]));
    let steps: HashMap<String, u64> = opt_masked.meta().steps.into_iter().collect();
    assert_eq!(steps[frozen], 0);
    assert!(opt_masked.set_mask(emb, UpdateMask::Rows(vec![6])).is_err());
}

#[test]
fn accumulated_gradients_equal_the_mean_loss_gradient() {
    let dev = Device::Cpu;
    let w = Var::from_vec(vec![0.5f32, -1.0, 2.0, 0.25], (2, 2), &dev).unwrap();
    let params = vec![("w".to_string(), w.clone())];
    let xs = [Tensor::new(&[[1f32, 2.0], [3.0, -1.0]], &dev).unwrap(), Tensor::new(&[[0.5f32, 0.0], [-2.0, 1.0]], &dev).unwrap()];
    let mut acc = GradAccumulator::new();
    for x in &xs {
        let loss = x.matmul(w.as_tensor()).unwrap().sqr().unwrap().mean_all().unwrap();
        acc.add(&params, &loss.backward().unwrap(), 0.5).unwrap();
    }
    assert_eq!(acc.micro_batches(), 2);
    let summed = acc.finish().unwrap();
    let both = Tensor::cat(&xs, 0).unwrap();
    let loss = both.matmul(w.as_tensor()).unwrap().sqr().unwrap().mean_all().unwrap();
    let store = loss.backward().unwrap();
    let want = store.get(w.as_tensor()).unwrap();
    assert!(rel_err(summed.get("w").unwrap(), want) < 1e-6);
    assert!(acc.finish().is_err());
}

#[test]
fn non_finite_gradient_gives_non_finite_norm() {
    let dev = Device::Cpu;
    let g = Tensor::new(&[1f32, f32::NAN], &dev).unwrap();
    let mut grads = Grads::from_tensors(vec![("a".into(), Some(g))]);
    assert!(!grads.clip_global_norm(1.0).unwrap().is_finite());
}

#[test]
fn freeze_phase_trains_only_vocabulary_tensors() {
    let fx = fixture("adamw_groups_clip");
    let params = fx.params();
    let mut opt = Optimizer::new(&params, fx.settings()).unwrap();
    opt.freeze_for(FreezeTarget::NewVocabRows, &[5]).unwrap();
    let mut grads = fx.grads(0);
    opt.apply_masks(&mut grads).unwrap();
    opt.step(&grads, 1e-2).unwrap();
    let emb = "model.embed_tokens.weight";
    for (name, var) in &params {
        let init = &fx.tensors[&format!("init.{name}")];
        if name == emb {
            assert_eq!(bits(&var.as_tensor().narrow(0, 0, 5).unwrap()), bits(&init.narrow(0, 0, 5).unwrap()));
            assert_ne!(bits(&var.as_tensor().narrow(0, 5, 1).unwrap()), bits(&init.narrow(0, 5, 1).unwrap()));
        } else {
            assert_eq!(bits(var.as_tensor()), bits(init), "{name} must stay frozen");
        }
    }
    opt.clear_masks();
    opt.step(&fx.grads(1), 1e-2).unwrap();
    let norm = "model.norm.weight";
    let after = &params.iter().find(|(n, _)| n == norm).unwrap().1;
    assert_ne!(bits(after.as_tensor()), bits(&fx.tensors[&format!("init.{norm}")]));
    let only_norm = vec![(norm.to_string(), Var::from_tensor(&fx.tensors[&format!("init.{norm}")]).unwrap())];
    let mut o = Optimizer::new(&only_norm, fx.settings()).unwrap();
    assert!(o.freeze_for(FreezeTarget::Embeddings, &[]).is_err());
}
