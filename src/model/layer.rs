//! One decoder layer: RMSNorm -> GQA attention with RoPE -> residual -> RMSNorm -> SwiGLU
//! MLP -> residual, through `kernels::dispatch` so the same code runs the composed ops or
//! the fused kernels. A layer is a plain function of its input, parameters and a
//! [`LayerContext`], so it can also run inside `kernels::recompute` (which re-runs it in the
//! backward).
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Result, Tensor, Var};

use super::config::ModelConfig;
use super::ops;
use crate::kernels::dispatch::{self, AttentionMask, Rope};
use crate::kernels::KernelMode;

/// The f32 master parameters of one layer (cheap to clone: `Var`s are shared handles).
#[derive(Clone)]
pub(crate) struct LayerParams {
    pub input_norm: Var,
    pub q: Var,
    pub k: Var,
    pub v: Var,
    pub q_bias: Option<Var>,
    pub k_bias: Option<Var>,
    pub v_bias: Option<Var>,
    pub o: Var,
    pub post_norm: Var,
    pub gate: Var,
    pub up: Var,
    pub down: Var,
}

/// Where a decoder layer's weights come from when the model does not hold them (ZeRO-3
/// keeps them sharded across ranks): the full f32 weights of one layer on demand, and the
/// layer's parameter gradients handed back after its backward. Keys are the parameters'
/// HF names.
pub trait LayerWeights: Send + Sync {
    fn gather(&self, layer: usize) -> Result<HashMap<String, Tensor>>;
    fn reduce(&self, layer: usize, grads: Vec<(String, Tensor)>) -> Result<()>;
}

impl LayerParams {
    /// Layer `l`'s parameters found by HF name (`None` where a required one is missing).
    pub fn from_lookup(l: usize, get: impl Fn(&str) -> Option<Var>) -> Option<Self> {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        Some(Self {
            input_norm: get(&p("input_layernorm.weight"))?,
            q: get(&p("self_attn.q_proj.weight"))?,
            k: get(&p("self_attn.k_proj.weight"))?,
            v: get(&p("self_attn.v_proj.weight"))?,
            q_bias: get(&p("self_attn.q_proj.bias")),
            k_bias: get(&p("self_attn.k_proj.bias")),
            v_bias: get(&p("self_attn.v_proj.bias")),
            o: get(&p("self_attn.o_proj.weight"))?,
            post_norm: get(&p("post_attention_layernorm.weight"))?,
            gate: get(&p("mlp.gate_proj.weight"))?,
            up: get(&p("mlp.up_proj.weight"))?,
            down: get(&p("mlp.down_proj.weight"))?,
        })
    }

    /// As [`LayerParams::vars`], each with its HF name in layer `l`.
    pub fn named_vars(&self, l: usize) -> Vec<(String, Var)> {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let mut out = vec![
            (p("input_layernorm.weight"), self.input_norm.clone()),
            (p("self_attn.q_proj.weight"), self.q.clone()),
            (p("self_attn.k_proj.weight"), self.k.clone()),
            (p("self_attn.v_proj.weight"), self.v.clone()),
            (p("self_attn.o_proj.weight"), self.o.clone()),
            (p("post_attention_layernorm.weight"), self.post_norm.clone()),
            (p("mlp.gate_proj.weight"), self.gate.clone()),
            (p("mlp.up_proj.weight"), self.up.clone()),
            (p("mlp.down_proj.weight"), self.down.clone()),
        ];
        for (name, bias) in [("q", &self.q_bias), ("k", &self.k_bias), ("v", &self.v_bias)] {
            if let Some(b) = bias {
                out.push((p(&format!("self_attn.{name}_proj.bias")), b.clone()));
            }
        }
        out
    }

    /// Every parameter the layer reads (recomputation hands their gradients back).
    pub fn vars(&self) -> Vec<Var> {
        let fixed = [&self.input_norm, &self.q, &self.k, &self.v, &self.o, &self.post_norm, &self.gate, &self.up, &self.down];
        let biases = [&self.q_bias, &self.k_bias, &self.v_bias].into_iter().flatten();
        fixed.into_iter().chain(biases).cloned().collect()
    }
}

/// The sizes a layer needs from the model config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
}

impl LayerShape {
    pub fn of(c: &ModelConfig) -> Self {
        Self { heads: c.num_attention_heads, kv_heads: c.num_key_value_heads, head_dim: c.head_dim, eps: c.rms_norm_eps }
    }
}

/// What every layer of one forward shares: the kernel mode, the compute dtype, the RoPE
/// tables and the attention mask (built once per forward; `Arc` so recomputed layers can
/// hold them until the backward).
#[derive(Clone)]
pub(crate) struct LayerContext {
    pub mode: KernelMode,
    pub dtype: DType,
    pub shape: LayerShape,
    pub rope: Arc<Rope>,
    pub mask: Arc<AttentionMask>,
}

/// `x` `[B, T, H]` (compute dtype) -> the layer's output, same shape.
pub(crate) fn decoder_layer(ctx: &LayerContext, p: &LayerParams, x: &Tensor) -> Result<Tensor> {
    layer_with_attention(ctx.mode, ctx.dtype, ctx.shape, &ctx.rope, p, x, |q, k, v| {
        dispatch::attention(q, k, v, &ctx.mask)
    })
}

/// The layer with its attention step supplied by the caller: `attend(q, k, v)` gets the
/// rotated queries `[B, H, T, D]` and the new keys/values `[B, KV, T, D]` and returns
/// `[B, H, T, D]`. Training attends over `k`/`v` as they are; generation first appends
/// them to its key/value cache (`super::kv_cache`).
pub(crate) fn layer_with_attention(
    mode: KernelMode,
    dtype: DType,
    s: LayerShape,
    rope: &Rope,
    p: &LayerParams,
    x: &Tensor,
    attend: impl FnOnce(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    // Weights are cast from the f32 masters per use: the cast records a backward to them.
    let w = |v: &Var| v.as_tensor().to_dtype(dtype);
    let wo = |v: &Option<Var>| v.as_ref().map(w).transpose();
    let heads = |y: Tensor, n: usize| y.reshape((b, t, n, s.head_dim))?.transpose(1, 2)?.contiguous();

    let h = dispatch::rms_norm(mode, x, &w(&p.input_norm)?, s.eps)?;
    let q = heads(ops::linear(&h, &w(&p.q)?, wo(&p.q_bias)?.as_ref())?, s.heads)?;
    let k = heads(ops::linear(&h, &w(&p.k)?, wo(&p.k_bias)?.as_ref())?, s.kv_heads)?;
    let v = heads(ops::linear(&h, &w(&p.v)?, wo(&p.v_bias)?.as_ref())?, s.kv_heads)?;
    let q = rope.apply(&q)?.contiguous()?;
    let k = rope.apply(&k)?.contiguous()?;
    let attn = attend(&q, &k, &v)?.transpose(1, 2)?.reshape((b, t, s.heads * s.head_dim))?;
    let x = (x + ops::linear(&attn, &w(&p.o)?, None)?)?;

    let h = dispatch::rms_norm(mode, &x, &w(&p.post_norm)?, s.eps)?;
    let gate = ops::linear(&h, &w(&p.gate)?, None)?;
    let up = ops::linear(&h, &w(&p.up)?, None)?;
    let mlp = ops::linear(&dispatch::swiglu(mode, &gate, &up)?, &w(&p.down)?, None)?;
    x + mlp
}
