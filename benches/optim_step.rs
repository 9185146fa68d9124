//! One optimiser step (global-norm clipping + AdamW) on CPU over parameters shaped like a
//! small Llama, next to PyTorch's AdamW on the same shapes in the same run
//! (scripts/bench_optim_torch.py): cpt's per-parameter AdamW (kernels.mode: composed) and its
//! multi-tensor AdamW (kernels.mode: fused). Run: cargo bench --bench optim_step
//! Sizes: CPT_BENCH_OPTIM="layers hidden intermediate vocab steps" (default "8 512 1408 16000 5").
use candle_core::{Device, Tensor, Var};
use cpt::train::optim::{Algorithm, Grads, Optimizer, OptimizerSettings};
use std::process::Command;
use std::time::Instant;

fn shapes(layers: usize, hidden: usize, inter: usize, vocab: usize) -> Vec<(String, Vec<usize>)> {
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![vocab, hidden])];
    for i in 0..layers {
        let p = format!("model.layers.{i}.");
        for n in ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight"] {
            out.push((format!("{p}{n}"), vec![hidden, hidden]));
        }
        out.push((format!("{p}mlp.gate_proj.weight"), vec![inter, hidden]));
        out.push((format!("{p}mlp.up_proj.weight"), vec![inter, hidden]));
        out.push((format!("{p}mlp.down_proj.weight"), vec![hidden, inter]));
        out.push((format!("{p}input_layernorm.weight"), vec![hidden]));
        out.push((format!("{p}post_attention_layernorm.weight"), vec![hidden]));
    }
    out.push(("model.norm.weight".to_string(), vec![hidden]));
    out.push(("lm_head.weight".to_string(), vec![vocab, hidden]));
    out
}

fn main() -> anyhow::Result<()> {
    let spec = std::env::var("CPT_BENCH_OPTIM").unwrap_or_else(|_| "8 512 1408 16000 5".into());
    let nums: Vec<usize> = spec.split_whitespace().map(|s| s.parse()).collect::<Result<_, _>>()?;
    anyhow::ensure!(nums.len() == 5, "CPT_BENCH_OPTIM needs 5 numbers: layers hidden intermediate vocab steps");
    let (layers, hidden, inter, vocab, steps) = (nums[0], nums[1], nums[2], nums[3], nums[4]);
    let dev = Device::Cpu;
    let mut params = Vec::new();
    let mut grads = Vec::new();
    for (name, shape) in shapes(layers, hidden, inter, vocab) {
        params.push((name.clone(), Var::from_tensor(&(Tensor::randn(0f32, 1f32, shape.clone(), &dev)? * 0.02)?)?));
        grads.push((name, Some((Tensor::randn(0f32, 1f32, shape, &dev)? * 1e-3)?)));
    }
    let count: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    let settings = OptimizerSettings {
        algorithm: Algorithm::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
        weight_decay: 0.1,
        decay_embeddings: false,
    };
    println!("params {count} ({layers} layers, hidden {hidden}, intermediate {inter}, vocab {vocab}), {steps} timed steps");
    // The per-parameter update (kernels.mode: composed) and the multi-tensor one (fused),
    // each on its own copy of the parameters; the torch ratios are against the first.
    let mut cpt_ms = f64::NAN;
    for (variant, multi_tensor) in [("cpt", false), ("cpt multi-tensor", true)] {
        let params: Vec<(String, Var)> =
            params.iter().map(|(n, v)| Ok((n.clone(), Var::from_tensor(&v.as_detached_tensor().copy()?)?))).collect::<anyhow::Result<_>>()?;
        let mut opt = Optimizer::new(&params, settings)?;
        opt.set_multi_tensor(multi_tensor);
        let step = |opt: &mut Optimizer| -> anyhow::Result<()> {
            let mut g = Grads::from_tensors(grads.clone());
            g.clip_global_norm(1.0)?;
            opt.step(&g, 3e-4)
        };
        step(&mut opt)?; // first step allocates the moments
        let t0 = Instant::now();
        for _ in 0..steps {
            step(&mut opt)?;
        }
        let ms = t0.elapsed().as_secs_f64() / steps as f64 * 1e3;
        if !multi_tensor {
            cpt_ms = ms;
        }
        println!("{:<22} {:>10.1} ms/step", variant, ms);
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_optim_torch.py");
    let out = Command::new("python3").arg(script).args(nums.iter().map(|n| n.to_string())).output();
    match out {
        Ok(o) if o.status.success() => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let v: serde_json::Value = serde_json::from_str(line)?;
                let ms = v["ms_per_step"].as_f64().unwrap_or(f64::NAN);
                println!("{:<22} {:>10.1} ms/step   cpt/torch time ratio {:.2}", v["variant"].as_str().unwrap_or("?"), ms, cpt_ms / ms);
            }
        }
        Ok(o) => println!("PyTorch side failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("PyTorch side not run (python3: {e})"),
    }
    Ok(())
}
