//! The parameter table of a config (every tensor's Hugging Face name, shape and how it
//! starts) and the seeded initialisation of one tensor. Both `CausalLm` (loading, random
//! models) and `init` (writing new model directories) build on it.
use anyhow::Result;
use candle_core::{Device, Tensor};

use super::config::ModelConfig;
use crate::util::rng::SplitMix64;

/// How a parameter starts (transformers `_init_weights` for these models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitKind {
    /// normal(0, initializer_range): linear weights and embeddings.
    Normal,
    /// RMSNorm weights.
    Ones,
    /// Biases.
    Zeros,
}

/// A freshly initialised f32 tensor.
pub fn init_tensor(
    shape: &[usize],
    kind: InitKind,
    std: f64,
    rng: &mut SplitMix64,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = match kind {
        InitKind::Ones => vec![1.0; n],
        InitKind::Zeros => vec![0.0; n],
        InitKind::Normal => {
            let mut v = Vec::with_capacity(n + 1);
            while v.len() < n {
                let (a, b) = rng.next_normal_pair();
                v.push((a * std) as f32);
                v.push((b * std) as f32);
            }
            v.truncate(n);
            v
        }
    };
    Ok(Tensor::from_vec(data, shape, device)?)
}

/// Every parameter of a config: HF name, shape and initialisation, in a stable order.
pub fn parameter_specs(cfg: &ModelConfig) -> Vec<(String, Vec<usize>, InitKind)> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let q_out = cfg.num_attention_heads * cfg.head_dim;
    let kv_out = cfg.num_key_value_heads * cfg.head_dim;
    let mut specs = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
        InitKind::Normal,
    )];
    for l in 0..cfg.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        specs.push((p("input_layernorm.weight"), vec![h], InitKind::Ones));
        specs.push((
            p("self_attn.q_proj.weight"),
            vec![q_out, h],
            InitKind::Normal,
        ));
        specs.push((
            p("self_attn.k_proj.weight"),
            vec![kv_out, h],
            InitKind::Normal,
        ));
        specs.push((
            p("self_attn.v_proj.weight"),
            vec![kv_out, h],
            InitKind::Normal,
        ));
        if cfg.architecture.qkv_bias() {
            specs.push((p("self_attn.q_proj.bias"), vec![q_out], InitKind::Zeros));
            specs.push((p("self_attn.k_proj.bias"), vec![kv_out], InitKind::Zeros));
            specs.push((p("self_attn.v_proj.bias"), vec![kv_out], InitKind::Zeros));
        }
        specs.push((
            p("self_attn.o_proj.weight"),
            vec![h, q_out],
            InitKind::Normal,
        ));
        specs.push((
            p("post_attention_layernorm.weight"),
            vec![h],
            InitKind::Ones,
        ));
        specs.push((p("mlp.gate_proj.weight"), vec![i, h], InitKind::Normal));
        specs.push((p("mlp.up_proj.weight"), vec![i, h], InitKind::Normal));
        specs.push((p("mlp.down_proj.weight"), vec![h, i], InitKind::Normal));
    }
    specs.push(("model.norm.weight".to_string(), vec![h], InitKind::Ones));
    if !cfg.tie_word_embeddings {
        specs.push((
            "lm_head.weight".to_string(),
            vec![cfg.vocab_size, h],
            InitKind::Normal,
        ));
    }
    specs
}
