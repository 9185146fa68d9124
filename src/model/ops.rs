//! Differentiable building blocks of the decoder.
//!
//! candle's fused `softmax_last_dim`, `rms_norm` and `rotary_emb::*` record no backward, so
//! every op here is composed from primitives that do (matmul, broadcast arithmetic, exp,
//! sum, sqrt, narrow, cat, ...). Statistics (norm variance, softmax) are taken in f32
//! whatever the compute dtype, as transformers does.
use candle_core::{DType, Device, Result, Tensor, D};

use super::config::{ModelConfig, RopeScaling};

/// RMSNorm as in transformers' `LlamaRMSNorm`: normalise in f32, cast back, scale.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let mean_sq = x32.sqr()?.mean_keepdim(D::Minus1)?;
    let inv_rms = (mean_sq + eps)?.sqrt()?.recip()?;
    let normed = x32.broadcast_mul(&inv_rms)?.to_dtype(dtype)?;
    normed.broadcast_mul(&weight.to_dtype(dtype)?)
}

/// Softmax over the last dimension, in f32. The max is a constant shift (detached: the
/// gradient through it is exactly zero).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// log-softmax over the last dimension, in f32.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// SwiGLU MLP activation: silu(gate) * up.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()?.mul(up)
}

/// `x @ w^T (+ b)` for x [.., in], w [out, in] (the PyTorch `nn.Linear` layout).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_dim = dims[dims.len() - 1];
    let rows = x.elem_count() / in_dim;
    let y = x.reshape((rows, in_dim))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().expect("non-empty dims") = w.dim(0)?;
    y.reshape(out_dims)
}

/// Inverse RoPE frequencies, including rope scaling (transformers
/// `_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
/// `_compute_llama3_parameters`).
pub fn rope_inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let dim = cfg.head_dim;
    let base: Vec<f64> = (0..dim / 2)
        .map(|i| {
            // transformers computes base ** (arange(0, dim, 2).float() / dim) in f32.
            let exponent = (2 * i) as f32 / dim as f32;
            1.0 / (cfg.rope_theta as f32).powf(exponent) as f64
        })
        .collect();
    let scaled: Vec<f64> = match &cfg.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old_ctx = *original_max_position_embeddings as f64;
            let low_freq_wavelen = old_ctx / low_freq_factor;
            let high_freq_wavelen = old_ctx / high_freq_factor;
            base.iter()
                .map(|&freq| {
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    if wavelen < high_freq_wavelen {
                        freq
                    } else if wavelen > low_freq_wavelen {
                        freq / factor
                    } else {
                        let smooth = (old_ctx / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * freq / factor + smooth * freq
                    }
                })
                .collect()
        }
    };
    scaled.into_iter().map(|f| f as f32).collect()
}

/// cos/sin tables [B, 1, T, head_dim] (f32, constants) for positions [B, T] (u32).
pub fn rope_tables(
    positions: &Tensor,
    inv_freq: &[f32],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (b, t) = positions.dims2()?;
    let half = inv_freq.len();
    let inv = Tensor::from_slice(inv_freq, (1, 1, half), device)?;
    let pos = positions.to_dtype(DType::F32)?.reshape((b, t, 1))?;
    let freqs = pos.broadcast_mul(&inv)?;
    let emb = Tensor::cat(&[&freqs, &freqs], D::Minus1)?;
    let cos = emb.cos()?.unsqueeze(1)?;
    let sin = emb.sin()?.unsqueeze(1)?;
    Ok((cos, sin))
}

/// Applies RoPE in the transformers layout (`rotate_half`: halves, not interleaved pairs).
/// x [B, H, T, D]; cos/sin [B, 1, T, D] f32, cast to x's dtype.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let half = d / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let cos = cos.to_dtype(x.dtype())?;
    let sin = sin.to_dtype(x.dtype())?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// Additive attention mask [T, T] (f32): 0 where key j <= query i, -inf elsewhere.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}

/// Additive document mask [B, 1, T, T] (f32) from segment ids [B, T]: token i attends to
/// j iff j <= i and both lie in the same document.
pub fn document_mask(segments: &Tensor) -> Result<Tensor> {
    let (b, t) = segments.dims2()?;
    let device = segments.device();
    let seg_q = segments.reshape((b, t, 1))?;
    let seg_k = segments.reshape((b, 1, t))?;
    let same_doc = seg_q.broadcast_eq(&seg_k)?; // [B, T, T] u8
    let causal_ok = causal_mask(t, device)?.eq(0f64)?.reshape((1, t, t))?;
    let allowed = same_doc.broadcast_mul(&causal_ok)?.to_dtype(DType::F32)?;
    // 1 -> 0, 0 -> -1e30 (exp underflows to exactly 0); one [B, T, T] buffer, no -inf
    // arithmetic. Every row keeps its diagonal, so no row is fully masked.
    allowed.affine(1e30, -1e30)?.unsqueeze(1)
}

/// `softmax(scores + mask)` over the last dimension: f32 scores `[B, H, T, S]`, additive f32
/// mask broadcastable to them.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if scores.device().is_cpu() && scores.dtype() == DType::F32 && mask.dtype() == DType::F32 && scores.rank() == 4 {
        // The same f32 operations as `masked_softmax_composed` in one op: the same bits with
        // a fraction of the memory traffic (`kernels::masked_softmax`).
        return crate::kernels::masked_softmax::masked_softmax_cpu(scores, mask);
    }
    masked_softmax_composed(scores, mask)
}

/// [`masked_softmax`] composed from primitives that record their backward.
pub fn masked_softmax_composed(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    softmax_last_dim(&scores.broadcast_add(mask)?)
}

/// Scaled dot-product attention with grouped-query heads.
/// q [B, H, T, D], k/v [B, KV, S, D] (S = T in training; S = cached + new tokens when
/// generating), mask additive f32 broadcastable to [B, H, T, S].
/// Returns [B, H, T, D] in q's dtype. Scores and softmax are taken in f32.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (kv, s) = (k.dim(1)?, k.dim(2)?);
    let groups = h / kv;
    let dtype = q.dtype();
    // Query heads h = kv_head * groups + g share one key/value head (transformers
    // `repeat_kv`): fold the groups into the row dimension instead of copying k and v.
    let q = q.reshape((b, kv, groups * t, d))?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?.reshape((b, h, t, s))?;
    let probs = masked_softmax(&scores.to_dtype(DType::F32)?, mask)?.to_dtype(dtype)?;
    let probs = probs.reshape((b, kv, groups * t, s))?;
    probs.matmul(v)?.reshape((b, h, t, d))
}
