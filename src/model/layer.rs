//! One decoder layer: RMSNorm -> GQA attention with RoPE -> residual -> RMSNorm -> SwiGLU
//! MLP -> residual, through `kernels::dispatch` so the same code runs the composed ops or
//! the fused kernels. A layer is a plain function of its input, parameters and a
//! [`LayerContext`], so it can also run inside `kernels::recompute` (which re-runs it in the
//! backward). Adapters (`super::lora`) live inside the layer's [`Linear`]s.
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Result, Tensor, Var};

use super::config::ModelConfig;
use super::lora::adapter::LoraLinear;
use super::lora::dropout::DropoutDraw;
use super::lora::{LinearKind, Site};
use super::ops;
use crate::kernels::dispatch::{self, AttentionMask, Rope};
use crate::kernels::frozen_linear::frozen_linear;
use crate::kernels::lora_linear::{lora_linear, Adapter};
use crate::kernels::KernelMode;

/// A linear projection: `x W^T (+ b)`, plus the low-rank term of its LoRA adapter if any.
/// Weights are f32 master `Var`s (full training; cast to the compute dtype per use, which
/// records a backward to them) or frozen tensors already in the compute dtype.
#[derive(Clone)]
pub(crate) struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<LoraLinear>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor, ops: &LayerOps) -> Result<Tensor> {
        let b = self.bias.as_ref().map(|b| b.to_dtype(ops.dtype)).transpose()?;
        let w = self.weight.to_dtype(ops.dtype)?;
        match &self.lora {
            // A frozen weight (not a variable, nor cast from one) gets no gradient at all.
            None if w.track_op() => ops::linear(x, &w, b.as_ref()),
            None => frozen_linear(x, &w, b.as_ref()),
            Some(lora) => {
                let (a, b_lora) = (lora.a.as_tensor().to_dtype(ops.dtype)?, lora.b.as_tensor().to_dtype(ops.dtype)?);
                let dropout = ops.dropout.map(|d| (d, lora.site.key()));
                lora_linear(x, &w, b.as_ref(), Adapter { a: &a, b: &b_lora, scaling: lora.scaling, dropout })
            }
        }
    }

    /// The weight with the adapter merged in, W + scaling · B A, summed in f32 and stored in
    /// the weight's own dtype (as PEFT's `merge` does).
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.lora {
            Some(lora) => (self.weight.to_dtype(DType::F32)? + lora.delta_weight()?)?.to_dtype(self.weight.dtype()),
            None => Ok(self.weight.clone()),
        }
    }
}

/// The parameters of one layer (cheap to clone: tensors and `Var`s are shared handles).
#[derive(Clone)]
pub(crate) struct LayerParams {
    pub input_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub post_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    /// The trainable variables the layer reads (recomputation hands their gradients back).
    pub trainable: Vec<Var>,
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
    /// Layer `l`'s parameters found by HF name (`None` where a required one is missing),
    /// with the adapters of its sites taken out of `adapters` and the variables it trains.
    pub fn from_lookup(
        l: usize,
        get: impl Fn(&str) -> Option<Tensor>,
        adapters: &mut HashMap<Site, LoraLinear>,
        trainable: Vec<Var>,
    ) -> Option<Self> {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let mut linear = |kind: LinearKind, bias: bool| -> Option<Linear> {
            Some(Linear {
                weight: get(&format!("{}.weight", kind.path(l)))?,
                bias: if bias { get(&format!("{}.bias", kind.path(l))) } else { None },
                lora: adapters.remove(&Site { layer: l, kind }),
            })
        };
        Some(Self {
            q: linear(LinearKind::Q, true)?,
            k: linear(LinearKind::K, true)?,
            v: linear(LinearKind::V, true)?,
            o: linear(LinearKind::O, false)?,
            gate: linear(LinearKind::Gate, false)?,
            up: linear(LinearKind::Up, false)?,
            down: linear(LinearKind::Down, false)?,
            input_norm: get(&p("input_layernorm.weight"))?,
            post_norm: get(&p("post_attention_layernorm.weight"))?,
            trainable,
        })
    }

    pub fn linear(&self, kind: LinearKind) -> &Linear {
        match kind {
            LinearKind::Q => &self.q,
            LinearKind::K => &self.k,
            LinearKind::V => &self.v,
            LinearKind::O => &self.o,
            LinearKind::Gate => &self.gate,
            LinearKind::Up => &self.up,
            LinearKind::Down => &self.down,
        }
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

/// The per-forward settings of a layer's ops: kernel mode, compute dtype, sizes, and the
/// adapters' dropout masks of this forward (training with `lora.dropout` only).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerOps {
    pub mode: KernelMode,
    pub dtype: DType,
    pub shape: LayerShape,
    pub dropout: Option<DropoutDraw>,
}

/// What every layer of one training or evaluation forward shares: its ops' settings, the
/// RoPE tables and the attention mask (built once per forward; `Arc` so recomputed layers
/// can hold them until the backward).
#[derive(Clone)]
pub(crate) struct LayerContext {
    pub ops: LayerOps,
    pub rope: Arc<Rope>,
    pub mask: Arc<AttentionMask>,
}

/// `x` `[B, T, H]` (compute dtype) -> the layer's output, same shape.
pub(crate) fn decoder_layer(ctx: &LayerContext, p: &LayerParams, x: &Tensor) -> Result<Tensor> {
    layer_with_attention(&ctx.ops, &ctx.rope, p, x, |q, k, v| dispatch::attention(q, k, v, &ctx.mask))
}

/// The layer with its attention step supplied by the caller: `attend(q, k, v)` gets the
/// rotated queries `[B, H, T, D]` and the new keys/values `[B, KV, T, D]` and returns
/// `[B, H, T, D]`. Training attends over `k`/`v` as they are; generation first appends
/// them to its key/value cache (`super::kv_cache`).
pub(crate) fn layer_with_attention(
    ops: &LayerOps,
    rope: &Rope,
    p: &LayerParams,
    x: &Tensor,
    attend: impl FnOnce(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (s, mode) = (ops.shape, ops.mode);
    let (b, t, _) = x.dims3()?;
    let w = |t: &Tensor| t.to_dtype(ops.dtype);
    let heads = |y: Tensor, n: usize| y.reshape((b, t, n, s.head_dim))?.transpose(1, 2)?.contiguous();

    let h = dispatch::rms_norm(mode, x, &w(&p.input_norm)?, s.eps)?;
    let q = heads(p.q.forward(&h, ops)?, s.heads)?;
    let k = heads(p.k.forward(&h, ops)?, s.kv_heads)?;
    let v = heads(p.v.forward(&h, ops)?, s.kv_heads)?;
    let q = rope.apply(&q)?.contiguous()?;
    let k = rope.apply(&k)?.contiguous()?;
    let attn = attend(&q, &k, &v)?.transpose(1, 2)?.reshape((b, t, s.heads * s.head_dim))?;
    let x = (x + p.o.forward(&attn, ops)?)?;

    let h = dispatch::rms_norm(mode, &x, &w(&p.post_norm)?, s.eps)?;
    let gate = p.gate.forward(&h, ops)?;
    let up = p.up.forward(&h, ops)?;
    let mlp = p.down.forward(&dispatch::swiglu(mode, &gate, &up)?, ops)?;
    x + mlp
}
