//! cpt's side of the training benchmark (scripts/bench_gpu.sh runs it beside
//! scripts/bench_torch_train.py on the same GPU, same shapes): one full training step
//! (forward, per-token loss, backward, AdamW on f32 master weights) on random tokens,
//! reported as one JSON line with tokens/s, MFU and peak memory.
//!
//! The step is the trainer's: `CausalLm::token_nll` with the `kernels:` settings
//! (`--mode composed|fused`, `--attention`, `--recompute`, `--ce-chunk`), the recomputed
//! layers' gradients merged, and the trainer's `Optimizer` (multi-tensor AdamW in fused
//! mode). `--check` compares the loss of these kernels with the composed reference first.
//!
//!     cargo bench --bench gpu_train_step -- --shape tiny --device cpu --check
//!     (GPU) gpu_train_step --shape 1b --seq-len 2048 --batch 8 --mode fused --recompute

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use cpt::kernels::device_info;
use cpt::kernels::dispatch::FusedAttention;
use cpt::kernels::recompute::GradSink;
use cpt::kernels::{KernelMode, KernelSettings};
use cpt::model::causal_lm::CausalLm;
use cpt::model::config::ModelConfig;
use cpt::train::optim::{Algorithm, Grads, Optimizer, OptimizerSettings};

#[derive(Parser, Debug)]
struct Args {
    /// tiny | 100m | 1b (same shapes as scripts/bench_torch_train.py)
    #[arg(long, default_value = "tiny")]
    shape: String,
    #[arg(long)]
    seq_len: Option<usize>,
    /// override the shape's layer count (memory scaling runs)
    #[arg(long)]
    layers: Option<usize>,
    /// compute dtype: f32 | bf16 (default: bf16 on CUDA, f32 on CPU)
    #[arg(long)]
    dtype: Option<String>,
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
    /// compare the loss of these kernels with the composed ops before timing
    #[arg(long)]
    check: bool,
    // `cargo bench` passes --bench
    #[arg(long, hide = true)]
    bench: bool,
}

fn config_json(shape: &str, seq_len: usize, layers: Option<usize>) -> Result<String> {
    let (h, i, l, heads, kv, vocab) = match shape {
        "tiny" => (64, 128, 2, 4, 2, 256),
        "100m" => (768, 2048, 12, 12, 4, 32000),
        "1b" => (2048, 5632, 22, 32, 4, 32000),
        other => bail!("unknown shape `{other}` (tiny, 100m, 1b)"),
    };
    let l = layers.unwrap_or(l);
    Ok(format!(
        r#"{{"architectures":["LlamaForCausalLM"],"hidden_size":{h},"intermediate_size":{i},
        "num_hidden_layers":{l},"num_attention_heads":{heads},"num_key_value_heads":{kv},
        "vocab_size":{vocab},"rms_norm_eps":1e-5,"rope_theta":10000.0,
        "max_position_embeddings":{},"tie_word_embeddings":false}}"#,
        seq_len.max(2048)
    ))
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
    let dtype = match args.dtype.as_deref() {
        None if device.is_cuda() => DType::BF16,
        None | Some("f32") => DType::F32,
        Some("bf16") => DType::BF16,
        Some(other) => bail!("unknown dtype `{other}` (f32, bf16)"),
    };
    eprintln!("device: {}", device_info::describe(&device)?);
    let cfg = ModelConfig::from_json_str(&config_json(&args.shape, seq_len, args.layers)?)?;
    let kernels = KernelSettings { mode, attention, recompute: args.recompute, ce_chunk: args.ce_chunk };
    let mut model = CausalLm::new_random(cfg.clone(), 0, &device, dtype)?;
    model.set_kernels(kernels)?;
    // The trainer's optimiser, as `cpt train` sets it up for these kernels.
    let settings = OptimizerSettings {
        algorithm: Algorithm::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
        weight_decay: 0.1,
        decay_embeddings: false,
    };
    let mut optimizer = Optimizer::new(model.named_parameters(), settings)?;
    optimizer.set_multi_tensor(mode == KernelMode::Fused);
    let n_params = model.num_parameters();
    let n_matmul = n_params - cfg.vocab_size * cfg.hidden_size;
    let mut rng = Lcg(42);
    let (b, t) = (args.batch, seq_len);
    let batch = |rng: &mut Lcg| -> Result<(Tensor, Tensor)> {
        let v: Vec<u32> = (0..b * (t + 1)).map(|_| rng.next(cfg.vocab_size as u32)).collect();
        let all = Tensor::from_vec(v, (b, t + 1), &device)?;
        Ok((all.narrow(1, 0, t)?.contiguous()?, all.narrow(1, 1, t)?.contiguous()?))
    };

    if args.check {
        // These kernels' loss against the composed reference on the same batch.
        let (ids, targets) = batch(&mut rng)?;
        let ours = model.token_nll(&ids, &targets, None, None)?.mean_all()?.to_scalar::<f32>()?;
        model.set_kernels(KernelSettings::default())?;
        let reference = model.token_nll(&ids, &targets, None, None)?.mean_all()?.to_scalar::<f32>()?;
        model.set_kernels(kernels)?;
        let tol = if dtype == DType::F32 { 1e-4 } else { 2e-2 };
        if (ours - reference).abs() > tol * reference.abs() {
            bail!("check failed: {} loss {ours} vs composed {reference}", kernels.describe());
        }
        eprintln!("check: {} loss {ours:.5} = composed {reference:.5}", kernels.describe());
    }

    // One training step as `cpt train` runs it (forward, backward, recomputed gradients
    // merged, AdamW); returns the loss.
    let mut run_step = |rng: &mut Lcg| -> Result<f32> {
        let (ids, targets) = batch(rng)?;
        let sink = GradSink::new();
        let loss = model.token_nll(&ids, &targets, None, Some(&sink))?.mean_all()?;
        let mut store = loss.backward()?;
        sink.merge_into(&mut store)?;
        let value = loss.to_scalar::<f32>()?;
        drop(loss); // frees the graph before the update, as the trainer does
        let grads = Grads::from_store(model.named_parameters(), &store, 1.0)?;
        drop(store);
        optimizer.step(&grads, 1e-4)?;
        Ok(value)
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
        "shape": args.shape, "layers": cfg.num_hidden_layers, "dtype": format!("{dtype:?}").to_lowercase(), "params": n_params, "matmul_params": n_matmul,
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
