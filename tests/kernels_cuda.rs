//! The fused ops' CUDA kernels against their CPU versions (themselves checked against
//! PyTorch and the composed ops in kernels_cpu.rs), values and gradients, f32 and bf16, on
//! shapes that exercise every tiling edge. Built only with `--features cuda`; needs a GPU:
//!
//!     cargo test --release --features cuda --test kernels_cuda
#![cfg(feature = "cuda")]

mod kernels_common;

use candle_core::{DType, Device, Tensor, Var};
use cpt::kernels::adamw::{adamw_step, AdamWSlot, AdamWStep};
use cpt::kernels::attention::flash_attention;
use cpt::kernels::cross_entropy::chunked_cross_entropy;
use cpt::kernels::recompute::{recompute, GradSink};
use cpt::kernels::rms_norm::rms_norm;
use cpt::kernels::rope::{rope, RopeTable};
use cpt::kernels::swiglu::swiglu;
use kernels_common::{assert_close, fixture, get, randn, value_and_grads};

fn gpu() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

/// Runs `f` on CPU and GPU copies of `inputs`; compares outputs and gradients.
fn cpu_vs_gpu(
    what: &str,
    inputs: &[&Tensor],
    g: &Tensor,
    tol: f32,
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) {
    let dev = gpu();
    let (yc, gc) = value_and_grads(inputs, g, &f);
    let on_gpu: Vec<Tensor> = inputs.iter().map(|t| t.to_device(&dev).unwrap()).collect();
    let refs: Vec<&Tensor> = on_gpu.iter().collect();
    let (yg, gg) = value_and_grads(&refs, &g.to_device(&dev).unwrap(), &f);
    assert!(yg.device().is_cuda());
    assert_close(&yg.to_device(&Device::Cpu).unwrap(), &yc, tol, &format!("{what}: output"));
    for (i, (a, b)) in gg.iter().zip(&gc).enumerate() {
        assert_close(&a.to_device(&Device::Cpu).unwrap(), b, tol, &format!("{what}: gradient {i}"));
    }
}

fn segments(b: usize, t: usize, docs: &[&[usize]]) -> Tensor {
    let mut seg = vec![0u32; b * t];
    for (row, starts) in docs.iter().enumerate() {
        for &s in starts.iter() {
            seg[row * t + s..(row + 1) * t].iter_mut().for_each(|x| *x += 1);
        }
    }
    Tensor::from_vec(seg, (b, t), &Device::Cpu).unwrap()
}

#[test]
fn attention_cuda_matches_cpu() {
    // T not a multiple of any tile; GQA 4:1 and 1:1; D 64 and 128; packed documents.
    for &(b, hq, hkv, t, d) in &[(2usize, 8usize, 2usize, 301usize, 64usize), (1, 4, 4, 77, 128), (2, 2, 1, 33, 32)] {
        let seg = segments(b, t, &[&[40, 41, 200], &[]]);
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 2e-2)] {
            let q = randn(&[b, hq, t, d], 1, dtype);
            let k = randn(&[b, hkv, t, d], 2, dtype);
            let v = randn(&[b, hkv, t, d], 3, dtype);
            let g = randn(&[b, hq, t, d], 4, DType::F32);
            let scale = 1.0 / (d as f32).sqrt();
            let seg = seg.clone();
            cpu_vs_gpu(&format!("attention {dtype:?} {b}x{hq}/{hkv}x{t}x{d}"), &[&q, &k, &v], &g, tol, move |x| {
                let s = seg.to_device(x[0].device())?;
                flash_attention(&x[0], &x[1], &x[2], Some(&s), scale)
            });
        }
    }
}

#[test]
fn blocked_attention_cuda_matches_cpu() {
    use cpt::kernels::attention_blocked::blocked_attention;
    for &(b, hq, hkv, t, d, q_block) in &[(2usize, 8usize, 2usize, 301usize, 64usize, 128usize), (1, 4, 4, 77, 128, 32)] {
        let seg = segments(b, t, &[&[40, 41, 200], &[]]);
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 3e-2)] {
            let q = randn(&[b, hq, t, d], 1, dtype);
            let k = randn(&[b, hkv, t, d], 2, dtype);
            let v = randn(&[b, hkv, t, d], 3, dtype);
            let g = randn(&[b, hq, t, d], 4, DType::F32);
            let scale = 1.0 / (d as f32).sqrt();
            let seg = seg.clone();
            cpu_vs_gpu(&format!("blocked attention {dtype:?} {b}x{hq}/{hkv}x{t}x{d}"), &[&q, &k, &v], &g, tol, move |x| {
                let s = seg.to_device(x[0].device())?;
                blocked_attention(&x[0], &x[1], &x[2], Some(&s), scale, q_block)
            });
        }
    }
}

#[test]
fn attention_cuda_matches_torch() {
    let f = fixture();
    let dev = gpu();
    let on = |n: &str| get(&f, n).to_device(&dev).unwrap();
    let seg = on("attn.segments").to_dtype(DType::U32).unwrap();
    let scale = 1.0 / 4.0; // D = 16 is below the CUDA kernel's minimum: pad to 32 with zeros
    let pad = |t: Tensor| Tensor::cat(&[&t, &t.zeros_like().unwrap()], 3).unwrap();
    let (q, k, v) = (pad(on("attn.q")), pad(on("attn.k")), pad(on("attn.v")));
    let o = flash_attention(&q, &k, &v, Some(&seg), scale).unwrap();
    let o = o.narrow(3, 0, 16).unwrap().to_device(&Device::Cpu).unwrap();
    assert_close(&o, &get(&f, "attn.out"), 1e-5, "attention output vs torch");
}

#[test]
fn rms_norm_cuda_matches_cpu() {
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
        let x = (randn(&[3, 100, 2048], 5, DType::F32) * 2.0).unwrap().to_dtype(dtype).unwrap();
        let w = randn(&[2048], 6, DType::F32).affine(0.1, 1.0).unwrap().to_dtype(dtype).unwrap();
        let g = randn(&[3, 100, 2048], 7, DType::F32);
        cpu_vs_gpu(&format!("rms_norm {dtype:?}"), &[&x, &w], &g, tol, |t| rms_norm(&t[0], &t[1], 1e-5));
    }
}

#[test]
fn rope_cuda_matches_cpu() {
    let inv: Vec<f32> = (0..64).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / 128.0)).collect();
    let table = RopeTable::new(&inv, 512, 1.0, &Device::Cpu).unwrap();
    let pos: Vec<u32> = (0..2 * 300).map(|i| (i % 300) as u32 % 170).collect();
    let (cos, sin) = table.gather(&Tensor::from_vec(pos, (2, 300), &Device::Cpu).unwrap()).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::BF16, 1e-2)] {
        let x = randn(&[2, 8, 300, 128], 8, dtype);
        let g = randn(&[2, 8, 300, 128], 9, DType::F32);
        let (c, s) = (cos.clone(), sin.clone());
        cpu_vs_gpu(&format!("rope {dtype:?}"), &[&x], &g, tol, move |t| {
            rope(&t[0], &c.to_device(t[0].device())?, &s.to_device(t[0].device())?)
        });
    }
}

#[test]
fn swiglu_cuda_matches_cpu() {
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::BF16, 1e-2)] {
        let a = (randn(&[4, 333, 512], 10, DType::F32) * 3.0).unwrap().to_dtype(dtype).unwrap();
        let b = randn(&[4, 333, 512], 11, dtype);
        let g = randn(&[4, 333, 512], 12, DType::F32);
        cpu_vs_gpu(&format!("swiglu {dtype:?}"), &[&a, &b], &g, tol, |t| swiglu(&t[0], &t[1]));
    }
}

#[test]
fn cross_entropy_cuda_matches_cpu() {
    let (n, h, vocab) = (300, 256, 5003);
    let tg: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % vocab as u32).collect();
    let tg = Tensor::new(tg.as_slice(), &Device::Cpu).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 2e-2)] {
        let hs = randn(&[n, h], 13, dtype);
        let w = (randn(&[vocab, h], 14, DType::F32) * 0.1).unwrap().to_dtype(dtype).unwrap();
        let g = randn(&[n], 15, DType::F32).abs().unwrap();
        let tg = tg.clone();
        cpu_vs_gpu(&format!("cross-entropy {dtype:?}"), &[&hs, &w], &g, tol, move |t| {
            chunked_cross_entropy(&t[0], &t[1], &tg.to_device(t[0].device())?, 1024)
        });
    }
}

#[test]
fn adamw_cuda_matches_cpu_and_torch() {
    // one launch over tensors of several sizes, one larger than a 65536-element chunk
    let dev = gpu();
    let sizes = [70_001usize, 5, 65_536, 1];
    let hp = AdamWStep { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8 };
    let make = |d: &Device| -> Vec<(Var, Tensor, Tensor)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let p = Var::from_tensor(&randn(&[n], 40 + i as u64, DType::F32).to_device(d).unwrap()).unwrap();
                let z = Tensor::zeros(n, DType::F32, d).unwrap();
                (p, z.clone(), z.copy().unwrap())
            })
            .collect()
    };
    let (cpu, gpu_state) = (make(&Device::Cpu), make(&dev));
    for step in 1..=3u64 {
        for (state, d) in [(&cpu, &Device::Cpu), (&gpu_state, &dev)] {
            let grads: Vec<Tensor> =
                sizes.iter().enumerate().map(|(i, &n)| randn(&[n], 100 * step + i as u64, DType::F32).to_device(d).unwrap()).collect();
            let slots: Vec<AdamWSlot> = state
                .iter()
                .zip(&grads)
                .enumerate()
                .map(|(i, ((p, m, v), g))| AdamWSlot {
                    param: p,
                    grad: g,
                    exp_avg: m,
                    exp_avg_sq: v,
                    weight_decay: if i % 2 == 0 { 0.1 } else { 0.0 },
                    // per-parameter step counts: the last tensor joined one step late
                    step: if i == 3 { step.max(2) - 1 } else { step },
                })
                .collect();
            adamw_step(&slots, &hp).unwrap();
        }
    }
    for ((pc, mc, vc), (pg, mg, vg)) in cpu.iter().zip(&gpu_state) {
        assert_close(&pg.to_device(&Device::Cpu).unwrap(), pc, 1e-6, "adamw param");
        assert_close(&mg.to_device(&Device::Cpu).unwrap(), mc, 1e-6, "adamw exp_avg");
        assert_close(&vg.to_device(&Device::Cpu).unwrap(), vc, 1e-6, "adamw exp_avg_sq");
    }
    // and the torch fixture, on the GPU
    let f = fixture();
    let p0 = Var::from_tensor(&get(&f, "adamw.p0.init").to_device(&dev).unwrap()).unwrap();
    let (m0, v0) = (p0.zeros_like().unwrap(), p0.zeros_like().unwrap());
    for step in 1..=3u64 {
        let g0 = get(&f, &format!("adamw.p0.grad{step}")).to_device(&dev).unwrap();
        let slot = AdamWSlot { param: &p0, grad: &g0, exp_avg: &m0, exp_avg_sq: &v0, weight_decay: 0.1, step };
        adamw_step(&[slot], &AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8 }).unwrap();
    }
    assert_close(&p0.to_device(&Device::Cpu).unwrap(), &get(&f, "adamw.p0.step3"), 1e-6, "adamw vs torch on GPU");
}

#[test]
fn recompute_on_cuda_gives_the_same_gradients() {
    let dev = gpu();
    let w = Var::from_tensor(&(randn(&[64, 64], 50, DType::F32) * 0.1).unwrap().to_device(&dev).unwrap()).unwrap();
    let x = Var::from_tensor(&randn(&[4, 64], 51, DType::F32).to_device(&dev).unwrap()).unwrap();
    let wc = w.clone();
    let f = move |x: &Tensor| x.matmul(&wc.as_tensor().t()?)?.tanh();
    let plain = f(&x).unwrap().sum_all().unwrap().backward().unwrap();
    let sink = GradSink::new();
    let y = recompute(&x, &[w.clone()], &sink, f).unwrap();
    let mut grads = y.sum_all().unwrap().backward().unwrap();
    sink.merge_into(&mut grads).unwrap();
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();
    assert_close(&cpu(grads.get(&w).unwrap()), &cpu(plain.get(&w).unwrap()), 1e-5, "recompute weight grad");
    assert_close(&cpu(grads.get(&x).unwrap()), &cpu(plain.get(&x).unwrap()), 1e-5, "recompute input grad");
}

#[test]
fn device_is_described() {
    let line = cpt::kernels::device_info::describe(&gpu()).unwrap();
    println!("{line}");
    assert!(line.starts_with("cuda:0 ") && line.contains("GiB total"), "{line}");
    assert!(cpt::kernels::device_info::memory_used_bytes(&gpu()).unwrap().unwrap() > 0);
}

/// The whole dispatch layer (every fused op together) on the GPU against the composed ops
/// on the CPU.
#[test]
fn fused_layer_on_cuda_matches_composed_on_cpu() {
    use cpt::kernels::dispatch::FusedAttention;
    use cpt::kernels::KernelMode;
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 4e-2)] {
        let (lc, gc) = kernels_common::TinyLayer::new(dtype, &Device::Cpu).loss_and_grads(KernelMode::Composed, FusedAttention::Flash);
        let on_gpu = kernels_common::TinyLayer::new(dtype, &gpu());
        for kernel in [FusedAttention::Flash, FusedAttention::Blocked { q_block: 8 }] {
            let (lf, gf) = on_gpu.loss_and_grads(KernelMode::Fused, kernel);
            let cpu = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();
            assert_close(&cpu(&lf), &lc, tol, &format!("{dtype:?} {kernel:?} layer loss"));
            for (i, (a, c)) in gf.iter().zip(&gc).enumerate() {
                assert_close(&cpu(a), c, tol, &format!("{dtype:?} {kernel:?} gradient {i}"));
            }
        }
    }
}

/// Recomputing a stack of layers keeps only layer inputs alive: the peak must drop.
#[test]
fn recompute_lowers_peak_memory() {
    use cpt::kernels::device_info::{peak_memory_bytes, reset_peak_memory};
    let dev = gpu();
    let (n, d, layers) = (8192, 1024, 6);
    let w = Var::from_tensor(&(randn(&[4 * d, d], 60, DType::F32) * 0.02).unwrap().to_device(&dev).unwrap()).unwrap();
    let x0 = Var::from_tensor(&randn(&[n, d], 61, DType::F32).to_device(&dev).unwrap()).unwrap();
    let block = {
        let w = w.clone();
        move |x: &Tensor| -> candle_core::Result<Tensor> {
            let h = x.matmul(&w.as_tensor().t()?)?.gelu()?; // [n, 4d] intermediates
            x + h.matmul(w.as_tensor())?
        }
    };
    let peak = |use_recompute: bool| -> u64 {
        dev.synchronize().unwrap();
        reset_peak_memory(&dev).unwrap();
        let sink = GradSink::new();
        let mut x = x0.as_tensor().clone();
        for _ in 0..layers {
            x = if use_recompute { recompute(&x, &[w.clone()], &sink, block.clone()).unwrap() } else { block(&x).unwrap() };
        }
        let mut grads = x.sum_all().unwrap().backward().unwrap();
        sink.merge_into(&mut grads).unwrap();
        assert!(grads.get(&w).is_some());
        dev.synchronize().unwrap();
        peak_memory_bytes(&dev).unwrap().unwrap()
    };
    let (plain, recomputed) = (peak(false), peak(true));
    println!("peak memory: plain {plain} bytes, recomputed {recomputed} bytes");
    assert!(recomputed < plain, "recompute {recomputed} >= plain {plain}");
}

/// A whole `CausalLm` forward and backward on the GPU (fused kernels, recomputation, f32 and
/// bf16 compute) against the composed model on the CPU: the loss and every parameter gradient.
#[test]
fn whole_model_on_cuda_matches_composed_on_cpu() {
    use cpt::kernels::dispatch::FusedAttention;
    use cpt::kernels::{KernelMode, KernelSettings};
    use cpt::model::{CausalLm, ModelConfig, Packing};
    use cpt::train::optim::Grads;
    // Head dim 64 (the flash kernel needs a multiple of 32), GQA 4:2, Qwen2 biases.
    let config = ModelConfig::from_json_str(
        r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":256,"intermediate_size":512,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":1000,
        "rms_norm_eps":1e-6,"rope_theta":10000.0,"max_position_embeddings":256,"tie_word_embeddings":false}"#,
    )
    .unwrap();
    let (b, t) = (2, 77);
    let loss_and_grads = |device: &Device, dtype: DType, kernels: KernelSettings| {
        let mut model = CausalLm::new_random(config.clone(), 11, device, dtype).unwrap();
        model.set_kernels(kernels).unwrap();
        let ids: Vec<u32> = (0..b * (t + 1)).map(|i| (i as u32 * 7919 + 13) % 1000).collect();
        let all = Tensor::from_vec(ids, (b, t + 1), device).unwrap();
        let (inputs, targets) = (all.narrow(1, 0, t).unwrap(), all.narrow(1, 1, t).unwrap());
        let packing = Packing::from_doc_starts(&[vec![0, 30], vec![0]], t, device).unwrap();
        let sink = GradSink::new();
        let loss = model.token_nll(&inputs, &targets, Some(&packing), Some(&sink)).unwrap().mean_all().unwrap();
        let mut store = loss.backward().unwrap();
        sink.merge_into(&mut store).unwrap();
        let grads = Grads::from_store(model.named_parameters(), &store, 1.0).unwrap();
        let cpu = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
        let grads: Vec<Tensor> = grads.entries().iter().map(|(_, g)| cpu(g.as_ref().unwrap())).collect();
        (cpu(&loss), grads)
    };
    // References: the composed model on the CPU in the same compute dtype (bf16 itself is
    // 6e-2 away from f32 on the bias gradients, for the composed ops too).
    let reference = |dtype| loss_and_grads(&Device::Cpu, dtype, KernelSettings::default());
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 5e-2)] {
        let (loss_ref, grads_ref) = reference(dtype);
        for attention in [FusedAttention::Flash, FusedAttention::Blocked { q_block: 32 }] {
            let kernels = KernelSettings { mode: KernelMode::Fused, attention, recompute: true, ce_chunk: 300 };
            let what = format!("{} {dtype:?}", kernels.describe());
            let (loss, grads) = loss_and_grads(&gpu(), dtype, kernels);
            assert_close(&loss, &loss_ref, tol, &format!("{what}: loss"));
            for (i, (g, r)) in grads.iter().zip(&grads_ref).enumerate() {
                assert_close(g, r, tol, &format!("{what}: gradient {i}"));
            }
        }
    }
}

/// The trainer's optimiser with the multi-tensor AdamW on the GPU against its per-parameter
/// update on the CPU, same gradients, three steps (moments created, then updated in place).
#[test]
fn multi_tensor_optimizer_on_cuda_matches_cpu() {
    use cpt::train::optim::{Algorithm, Grads, Optimizer, OptimizerSettings};
    let settings = OptimizerSettings {
        algorithm: Algorithm::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
        weight_decay: 0.1,
        decay_embeddings: false,
    };
    let shapes: [(&str, &[usize]); 3] =
        [("model.embed_tokens.weight", &[300, 64]), ("model.layers.0.mlp.up_proj.weight", &[96, 64]), ("model.norm.weight", &[64])];
    let params = |device: &Device| -> Vec<(String, Var)> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, (n, s))| (n.to_string(), Var::from_tensor(&randn(s, 70 + i as u64, DType::F32).to_device(device).unwrap()).unwrap()))
            .collect()
    };
    let (cpu_params, gpu_params) = (params(&Device::Cpu), params(&gpu()));
    let mut cpu_opt = Optimizer::new(&cpu_params, settings).unwrap();
    let mut gpu_opt = Optimizer::new(&gpu_params, settings).unwrap();
    gpu_opt.set_multi_tensor(true);
    for step in 0..3u64 {
        let grads = |device: &Device| {
            Grads::from_tensors(
                shapes
                    .iter()
                    .enumerate()
                    .map(|(i, (n, s))| (n.to_string(), Some(randn(s, 100 * step + i as u64, DType::F32).to_device(device).unwrap())))
                    .collect(),
            )
        };
        cpu_opt.step(&grads(&Device::Cpu), 1e-2).unwrap();
        gpu_opt.step(&grads(&gpu()), 1e-2).unwrap();
    }
    for ((name, c), (_, g)) in cpu_params.iter().zip(&gpu_params) {
        assert_close(&g.as_tensor().to_device(&Device::Cpu).unwrap(), c.as_tensor(), 1e-6, name);
    }
    let cpu_state = cpu_opt.state_tensors();
    for ((name, g), (_, c)) in gpu_opt.state_tensors().iter().zip(&cpu_state) {
        assert_close(&g.to_device(&Device::Cpu).unwrap(), c, 1e-6, name);
    }
}

/// The CUDA RMSNorm weight gradient is bit-identical run to run (no atomics), as exact
/// resume needs.
#[test]
fn rms_norm_weight_gradient_is_deterministic_on_cuda() {
    let dev = gpu();
    let x = randn(&[4099, 2048], 90, DType::F32).to_dtype(DType::BF16).unwrap().to_device(&dev).unwrap();
    let w = randn(&[2048], 91, DType::F32).to_dtype(DType::BF16).unwrap().to_device(&dev).unwrap();
    let g = randn(&[4099, 2048], 92, DType::F32).to_device(&dev).unwrap();
    let dw = || {
        let grad = value_and_grads(&[&x, &w], &g, |p| rms_norm(&p[0], &p[1], 1e-5)).1[1].clone();
        grad.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap()
    };
    let first: Vec<u32> = dw().iter().map(|v| v.to_bits()).collect();
    for _ in 0..10 {
        let again: Vec<u32> = dw().iter().map(|v| v.to_bits()).collect();
        assert!(again == first, "the RMSNorm weight gradient changed between identical runs");
    }
}
