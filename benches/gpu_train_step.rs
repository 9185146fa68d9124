//! cpt's side of the training benchmark (scripts/bench_gpu.sh runs it beside
//! scripts/bench_torch_train.py on the same GPU, same shapes): one full training step
//! (forward, per-token loss, backward, AdamW on f32 master weights) on random tokens,
//! reported as one JSON line with tokens/s, MFU and peak memory.
//!
//! `--mode composed` runs the model's composed ops, `--mode fused` the fused kernels, both
//! through `cpt::kernels::dispatch` over the parameters of a `CausalLm` (the same layer
//! code as `CausalLm::forward`; `--check` verifies that the composed path's loss equals
//! `CausalLm::forward`'s). `--recompute` recomputes each layer in the backward.
//!
//!     cargo bench --bench gpu_train_step -- --shape tiny --device cpu --check
//!     (GPU) gpu_train_step --shape 1b --seq-len 2048 --batch 8 --mode fused --recompute

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use clap::Parser;
use cpt::kernels::adamw::{adamw_step, AdamWSlot, AdamWStep};
use cpt::kernels::device_info;
use cpt::kernels::dispatch::{self, AttentionMask, FusedAttention, Rope};
use cpt::kernels::recompute::{recompute, GradSink};
use cpt::kernels::KernelMode;
use cpt::model::causal_lm::CausalLm;
use cpt::model::config::ModelConfig;
use cpt::model::ops;

#[derive(Parser, Debug)]
struct Args {
    /// tiny | 100m | 1b (same shapes as scripts/bench_torch_train.py)
    #[arg(long, default_value = "tiny")]
    shape: String,
    #[arg(long)]
    seq_len: Option<usize>,
    #[arg(long, default_value_t = 2)]
    batch: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// composed | fused
    #[arg(long, default_value = "fused")]
    mode: String,
    #[arg(long)]
    recompute: bool,
    /// fused attention kernel: flash | blocked:<query rows>
    #[arg(long, default_value = "flash")]
    attention: String,
    /// cpu | cuda
    #[arg(long, default_value = "cuda")]
    device: String,
    /// vocabulary chunk of the fused cross-entropy
    #[arg(long, default_value_t = 8192)]
    ce_chunk: usize,
    #[arg(long, default_value_t = 989.0)]
    peak_tflops: f64,
    /// compare the composed loss with CausalLm::forward before timing
    #[arg(long)]
    check: bool,
    // `cargo bench` passes --bench
    #[arg(long, hide = true)]
    bench: bool,
}

fn config_json(shape: &str, seq_len: usize) -> Result<String> {
    let (h, i, l, heads, kv, vocab) = match shape {
        "tiny" => (64, 128, 2, 4, 2, 256),
        "100m" => (768, 2048, 12, 12, 4, 32000),
        "1b" => (2048, 5632, 22, 32, 4, 32000),
        other => bail!("unknown shape `{other}` (tiny, 100m, 1b)"),
    };
    Ok(format!(
        r#"{{"architectures":["LlamaForCausalLM"],"hidden_size":{h},"intermediate_size":{i},
        "num_hidden_layers":{l},"num_attention_heads":{heads},"num_key_value_heads":{kv},
        "vocab_size":{vocab},"rms_norm_eps":1e-5,"rope_theta":10000.0,
        "max_position_embeddings":{},"tie_word_embeddings":false}}"#,
        seq_len.max(2048)
    ))
}

/// The parameters of one decoder layer, in `CausalLm::named_parameters` order.
#[derive(Clone)]
struct LayerParams {
    input_norm: Var,
    q: Var,
    k: Var,
    v: Var,
    o: Var,
    post_norm: Var,
    gate: Var,
    up: Var,
    down: Var,
}

impl LayerParams {
    fn all(&self) -> Vec<Var> {
        [&self.input_norm, &self.q, &self.k, &self.v, &self.o, &self.post_norm, &self.gate, &self.up, &self.down]
            .into_iter()
            .cloned()
            .collect()
    }
}

fn find(model: &CausalLm, name: &str) -> Result<Var> {
    model.named_parameters().iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).with_context(|| format!("no parameter {name}"))
}

/// Everything a layer's forward reads besides its parameters (built once per step).
#[derive(Clone)]
struct LayerCtx {
    mode: KernelMode,
    cfg: ModelConfig,
    dtype: DType,
    rope: std::sync::Arc<Rope>,
    mask: std::sync::Arc<AttentionMask>,
}

fn candle(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("{e:#}"))
}

/// One decoder layer, as `CausalLm::layer_forward`, through `dispatch`.
fn layer_forward(ctx: &LayerCtx, p: &LayerParams, x: &Tensor) -> candle_core::Result<Tensor> {
    let c = &ctx.cfg;
    let (b, t, _) = x.dims3()?;
    let w = |v: &Var| v.as_tensor().to_dtype(ctx.dtype);
    let lin = |x: &Tensor, v: &Var| ops::linear(x, &w(v)?, None);
    let heads = |y: Tensor, n: usize| y.reshape((b, t, n, c.head_dim))?.transpose(1, 2)?.contiguous();
    let h = dispatch::rms_norm(ctx.mode, x, &w(&p.input_norm)?, c.rms_norm_eps).map_err(candle)?;
    let q = ctx.rope.apply(&heads(lin(&h, &p.q)?, c.num_attention_heads)?).map_err(candle)?;
    let k = ctx.rope.apply(&heads(lin(&h, &p.k)?, c.num_key_value_heads)?).map_err(candle)?;
    let v = heads(lin(&h, &p.v)?, c.num_key_value_heads)?;
    let a = dispatch::attention(&q.contiguous()?, &k.contiguous()?, &v, &ctx.mask).map_err(candle)?;
    let a = a.transpose(1, 2)?.reshape((b, t, c.num_attention_heads * c.head_dim))?;
    let x = (x + lin(&a, &p.o)?)?;
    let h = dispatch::rms_norm(ctx.mode, &x, &w(&p.post_norm)?, c.rms_norm_eps).map_err(candle)?;
    let m = dispatch::swiglu(ctx.mode, &lin(&h, &p.gate)?, &lin(&h, &p.up)?).map_err(candle)?;
    &x + lin(&m, &p.down)?
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as u32
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let seq_len = args.seq_len.unwrap_or(if args.shape == "tiny" { 32 } else { 2048 });
    let mode: KernelMode = args.mode.parse()?;
    let attention: FusedAttention = args.attention.parse()?;
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0).context("opening CUDA device 0 (build with --features cuda)")?,
        other => bail!("unknown device `{other}` (cpu, cuda)"),
    };
    let dtype = if device.is_cuda() { DType::BF16 } else { DType::F32 };
    eprintln!("device: {}", device_info::describe(&device)?);
    let cfg = ModelConfig::from_json_str(&config_json(&args.shape, seq_len)?)?;
    let model = CausalLm::new_random(cfg.clone(), 0, &device, dtype)?;
    let layers: Vec<LayerParams> = (0..cfg.num_hidden_layers)
        .map(|l| {
            let p = |s: &str| find(&model, &format!("model.layers.{l}.{s}"));
            Ok(LayerParams {
                input_norm: p("input_layernorm.weight")?,
                q: p("self_attn.q_proj.weight")?,
                k: p("self_attn.k_proj.weight")?,
                v: p("self_attn.v_proj.weight")?,
                o: p("self_attn.o_proj.weight")?,
                post_norm: p("post_attention_layernorm.weight")?,
                gate: p("mlp.gate_proj.weight")?,
                up: p("mlp.up_proj.weight")?,
                down: p("mlp.down_proj.weight")?,
            })
        })
        .collect::<Result<_>>()?;
    let (embed, final_norm, head) = (find(&model, "model.embed_tokens.weight")?, find(&model, "model.norm.weight")?, find(&model, "lm_head.weight")?);
    let inv_freq = ops::rope_inv_freq(&cfg);
    let params: Vec<(String, Var)> = model.named_parameters().to_vec();
    let state: Vec<(Tensor, Tensor)> =
        params.iter().map(|(_, v)| Ok((v.zeros_like()?, v.zeros_like()?))).collect::<Result<_>>()?;
    let n_params: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    let n_matmul = n_params - embed.elem_count();
    let mut rng = Lcg(42);
    let (b, t) = (args.batch, seq_len);

    // loss of one batch; returns the mean loss tensor (not yet backpropagated)
    let forward = |ids: &Tensor, targets: &Tensor, sink: &GradSink| -> Result<Tensor> {
        let positions = Tensor::arange(0u32, t as u32, &device)?.unsqueeze(0)?.broadcast_as((b, t))?.contiguous()?;
        let ctx = LayerCtx {
            mode,
            cfg: cfg.clone(),
            dtype,
            rope: std::sync::Arc::new(Rope::new(mode, &positions, &inv_freq)?),
            mask: std::sync::Arc::new(AttentionMask::with_kernel(mode, attention, None, t, &device)?),
        };
        let mut x = embed.as_tensor().index_select(&ids.flatten_all()?, 0)?.to_dtype(dtype)?.reshape((b, t, cfg.hidden_size))?;
        for p in &layers {
            x = if args.recompute {
                let (ctx, pc) = (ctx.clone(), p.clone());
                recompute(&x, &p.all(), sink, move |x| layer_forward(&ctx, &pc, x))?
            } else {
                layer_forward(&ctx, p, &x)?
            };
        }
        let x = dispatch::rms_norm(mode, &x, &final_norm.as_tensor().to_dtype(dtype)?, cfg.rms_norm_eps)?;
        let nll = dispatch::token_nll_from_hidden(mode, &x, &head.as_tensor().to_dtype(dtype)?, targets, args.ce_chunk)?;
        Ok(nll.mean_all()?)
    };
    let batch = |rng: &mut Lcg| -> Result<(Tensor, Tensor)> {
        let v: Vec<u32> = (0..b * (t + 1)).map(|_| rng.next(cfg.vocab_size as u32)).collect();
        let all = Tensor::from_vec(v, (b, t + 1), &device)?;
        Ok((all.narrow(1, 0, t)?.contiguous()?, all.narrow(1, 1, t)?.contiguous()?))
    };

    if args.check {
        let (ids, targets) = batch(&mut rng)?;
        let ours = forward(&ids, &targets, &GradSink::new())?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let logits = model.forward(&ids, None)?;
        let theirs = cpt::model::loss::mean_nll(&logits, &targets)?.to_scalar::<f32>()?;
        let tol = if dtype == DType::F32 { 1e-4 } else { 2e-2 };
        if (ours - theirs).abs() > tol * theirs.abs() {
            bail!("check failed: {mode:?} loss {ours} vs CausalLm::forward {theirs}");
        }
        eprintln!("check: {mode:?} loss {ours:.5} = CausalLm::forward {theirs:.5}");
    }

    let mut step = 0u64;
    let mut run_step = |rng: &mut Lcg| -> Result<f32> {
        step += 1;
        let (ids, targets) = batch(rng)?;
        let sink = GradSink::new();
        let loss = forward(&ids, &targets, &sink)?;
        let mut grads = loss.backward()?;
        sink.merge_into(&mut grads)?;
        let grad_list: Vec<Tensor> = params
            .iter()
            .map(|(n, v)| grads.get(v).cloned().with_context(|| format!("no gradient for {n}")))
            .collect::<Result<_>>()?;
        let slots: Vec<AdamWSlot> = params
            .iter()
            .zip(&grad_list)
            .zip(&state)
            .map(|(((_, v), g), (m, s))| AdamWSlot {
                param: v.as_tensor(),
                grad: g,
                exp_avg: m,
                exp_avg_sq: s,
                weight_decay: if v.rank() == 2 { 0.1 } else { 0.0 },
                step,
            })
            .collect();
        adamw_step(&slots, &AdamWStep { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8 })?;
        Ok(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)
    };
    for _ in 0..args.warmup {
        run_step(&mut rng)?;
    }
    device.synchronize()?;
    device_info::reset_peak_memory(&device)?;
    let start = Instant::now();
    let mut loss = 0f32;
    for _ in 0..args.steps {
        loss = run_step(&mut rng)?;
    }
    device.synchronize()?;
    let elapsed = start.elapsed().as_secs_f64();
    let tokens_per_s = (b * t * args.steps) as f64 / elapsed;
    let fpt = 6.0 * n_matmul as f64 + 12.0 * (cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * t) as f64;
    let gib = |x: u64| (x as f64 / (1u64 << 30) as f64 * 100.0).round() / 100.0;
    let out = serde_json::json!({
        "impl": format!(
            "cpt {}{}{}",
            args.mode,
            if mode == KernelMode::Fused { format!(" ({})", args.attention) } else { String::new() },
            if args.recompute { "+recompute" } else { "" }
        ),
        "shape": args.shape, "params": n_params, "matmul_params": n_matmul,
        "batch": b, "seq_len": t, "steps": args.steps, "device": device_info::describe(&device)?,
        "tokens_per_s": (tokens_per_s * 10.0).round() / 10.0,
        "step_s": elapsed / args.steps as f64,
        "flops_per_token": fpt,
        "mfu": tokens_per_s * fpt / (args.peak_tflops * 1e12),
        "peak_allocated_gib": device_info::peak_memory_bytes(&device)?.map(gib),
        "peak_device_used_gib": device_info::memory_used_bytes(&device)?.map(gib),
        "final_loss": loss,
    });
    println!("{out}");
    Ok(())
}
