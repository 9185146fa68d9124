//! Forward + backward time per token on CPU for the `tiny` and `small-100m` presets (f32).
//!
//! cargo bench --bench model_fwd_bwd [-- tiny|small-100m]
//! Run beside the PyTorch equivalent with scripts/bench_model.sh (same shapes and threads).
//! Prints one `BENCH {json}` line per case.
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use cpt::model::init::{build_config, preset, SizeOverrides};
use cpt::model::{token_nll, Architecture, CausalLm};

/// (preset, vocab, batch, seq_len, timed iterations)
const CASES: &[(&str, usize, usize, usize, usize)] =
    &[("tiny", 1024, 8, 128, 20), ("small-100m", 32000, 1, 256, 3)];

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; any other argument selects cases by name.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let threads = candle_core::utils::get_num_threads();
    for &(name, vocab, batch, seq, iters) in CASES {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let cfg = build_config(
            Architecture::Llama,
            &preset(name)?,
            &SizeOverrides::default(),
            vocab,
            None,
            None,
        )?;
        let model = CausalLm::new_random(cfg, 0, &Device::Cpu, DType::F32)?;
        let ids: Vec<u32> = (0..batch * (seq + 1))
            .map(|i| ((i as u64 * 2654435761) % vocab as u64) as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (batch, seq + 1), &Device::Cpu)?;
        let inputs = ids.narrow(1, 0, seq)?.contiguous()?;
        let targets = ids.narrow(1, 1, seq)?.contiguous()?;
        let step = || -> Result<()> {
            let logits = model.forward(&inputs, None)?;
            let loss = token_nll(&logits, &targets)?.mean_all()?;
            let grads = loss.backward()?;
            // Touch one gradient so nothing can be skipped.
            let g = grads.get(&model.named_parameters()[0].1).expect("gradient");
            std::hint::black_box(g.dims());
            Ok(())
        };
        step()?; // warm-up
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t0 = Instant::now();
            step()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).expect("finite times"));
        let median = times[times.len() / 2];
        let tokens = (batch * seq) as f64;
        println!(
            "BENCH {{\"impl\":\"cpt\",\"case\":\"{name}\",\"params\":{},\"batch\":{batch},\"seq\":{seq},\"threads\":{threads},\"ms_per_iter\":{:.3},\"us_per_token\":{:.3},\"tokens_per_s\":{:.1}}}",
            model.num_parameters(),
            median * 1e3,
            median * 1e6 / tokens,
            tokens / median
        );
    }
    Ok(())
}
