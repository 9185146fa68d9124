//! One call per op for the model's forward: [`KernelMode`] picks the composed op of
//! `crate::model::ops` or the fused op of this module, with the same shapes and meaning.
//!
//! ```text
//! composed                                  dispatch
//! ops::rms_norm(x, w, eps)                  dispatch::rms_norm(mode, x, w, eps)
//! ops::swiglu(gate, up)                     dispatch::swiglu(mode, gate, up)
//! ops::rope_tables + ops::apply_rope        Rope::new(mode, &positions, &inv_freq)?.apply(x)
//! ops::document_mask / causal_mask          AttentionMask::new(mode, segments, t, device)
//!                                           (or ::with_kernel(mode, FusedAttention::Blocked{..}, ..))
//! ops::attention(q, k, v, mask)             dispatch::attention(q, k, v, &mask)
//! linear(h, head) + loss::token_nll         dispatch::token_nll_from_hidden(mode, h, head, targets, chunk)
//! ```
//!
//! The per-layer calls return `candle_core::Result`, so a decoder layer built from them can
//! run inside [`super::recompute::recompute`] (whose block is a candle op).

use anyhow::bail;
use candle_core::{DType, Device, Result, Tensor};

use super::KernelMode;
use crate::model::{loss, ops};

pub fn rms_norm(mode: KernelMode, x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(match mode {
        KernelMode::Composed => ops::rms_norm(x, weight, eps)?,
        KernelMode::Fused => super::rms_norm::rms_norm(x, weight, eps)?,
    })
}

pub fn swiglu(mode: KernelMode, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok(match mode {
        KernelMode::Composed => ops::swiglu(gate, up)?,
        KernelMode::Fused => super::swiglu::swiglu(gate, up)?,
    })
}

/// RoPE tables for one forward, in the layout the mode's op reads.
pub struct Rope {
    mode: KernelMode,
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables for per-token `positions` (`[B, T]` u32) and the model's inverse frequencies.
    pub fn new(mode: KernelMode, positions: &Tensor, inv_freq: &[f32]) -> Result<Self> {
        let (cos, sin) = ops::rope_tables(positions, inv_freq, positions.device())?;
        let (cos, sin) = match mode {
            KernelMode::Composed => (cos, sin),
            KernelMode::Fused => super::rope::half_tables(&cos, &sin)?,
        };
        Ok(Self { mode, cos, sin })
    }

    /// Rotates `x` (`[B, H, T, D]`).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.mode {
            KernelMode::Composed => ops::apply_rope(x, &self.cos, &self.sin)?,
            KernelMode::Fused => super::rope::rope(x, &self.cos, &self.sin)?,
        })
    }
}

/// Which fused attention runs in `KernelMode::Fused`. In YAML and on the command line:
/// `flash` or `blocked:<query rows>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FusedAttention {
    /// Tiled kernel with online softmax ([`super::attention::flash_attention`]).
    #[default]
    Flash,
    /// Query blocks on the matmul units ([`super::attention_blocked::blocked_attention`]).
    Blocked { q_block: usize },
}

impl std::fmt::Display for FusedAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flash => f.write_str("flash"),
            Self::Blocked { q_block } => write!(f, "blocked:{q_block}"),
        }
    }
}

impl From<FusedAttention> for String {
    fn from(a: FusedAttention) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for FusedAttention {
    type Error = anyhow::Error;
    fn try_from(s: String) -> anyhow::Result<Self> {
        s.parse()
    }
}

impl std::str::FromStr for FusedAttention {
    type Err = anyhow::Error;
    /// `flash` or `blocked:<q_block>` (e.g. `blocked:256`).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.split_once(':') {
            None if s == "flash" => Ok(Self::Flash),
            Some(("blocked", n)) => match n.parse::<usize>() {
                Ok(q_block) if q_block > 0 => Ok(Self::Blocked { q_block }),
                _ => bail!("fused attention `{s}`: the query block must be a positive integer"),
            },
            _ => bail!("unknown fused attention `{s}` (expected `flash` or `blocked:<rows>`)"),
        }
    }
}

/// What attention needs to know about visibility, built once per forward.
pub enum AttentionMask {
    /// Additive `[B|1, 1, T, T]` f32 mask for the composed op.
    Additive(Tensor),
    /// Segment ids `[B, T]` u32 (None: plain causal) for a fused op.
    Segments { segments: Option<Tensor>, kernel: FusedAttention },
}

impl AttentionMask {
    /// `segments`: the document ids of packed rows (`Packing::segments`), or None.
    pub fn new(mode: KernelMode, segments: Option<&Tensor>, t: usize, device: &Device) -> Result<Self> {
        Self::with_kernel(mode, FusedAttention::default(), segments, t, device)
    }

    /// As [`AttentionMask::new`], choosing the fused attention kernel.
    pub fn with_kernel(
        mode: KernelMode,
        kernel: FusedAttention,
        segments: Option<&Tensor>,
        t: usize,
        device: &Device,
    ) -> Result<Self> {
        Ok(match (mode, segments) {
            (KernelMode::Composed, Some(s)) => Self::Additive(ops::document_mask(&s.to_dtype(DType::U32)?)?),
            (KernelMode::Composed, None) => Self::Additive(ops::causal_mask(t, device)?),
            (KernelMode::Fused, s) => {
                Self::Segments { segments: s.map(|s| s.to_dtype(DType::U32)).transpose()?, kernel }
            }
        })
    }
}

/// q `[B, H, T, D]`, k/v `[B, KV, T, D]` -> `[B, H, T, D]`, scale `1/sqrt(D)`, causal.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
    Ok(match mask {
        AttentionMask::Additive(m) => ops::attention(q, k, v, m)?,
        AttentionMask::Segments { segments, kernel } => {
            let scale = 1.0 / (q.dim(3)? as f32).sqrt();
            match kernel {
                FusedAttention::Flash => super::attention::flash_attention(q, k, v, segments.as_ref(), scale)?,
                FusedAttention::Blocked { q_block } => {
                    super::attention_blocked::blocked_attention(q, k, v, segments.as_ref(), scale, *q_block)?
                }
            }
        }
    })
}

/// Per-token NLL `[B, T]` (f32) from the final hidden states `[B, T, H]` and the lm_head
/// weight `[V, H]` (compute dtype). Fused: vocabulary chunks of `chunk_size`, never the full
/// f32 logits.
pub fn token_nll_from_hidden(
    mode: KernelMode,
    hidden: &Tensor,
    head: &Tensor,
    targets: &Tensor,
    chunk_size: usize,
) -> anyhow::Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    if targets.dims() != [b, t] {
        bail!("token_nll: hidden states are [{b}, {t}, {h}] but targets are {:?}", targets.dims())
    }
    match mode {
        KernelMode::Composed if hidden.device().is_cpu() => {
            // `ops::linear` without its last reshape: the `[B*T, V]` logits go straight into
            // the loss op (same values, one vocabulary-sized pass less in the backward).
            let rows = hidden.reshape((b * t, h))?;
            let logits = if head.track_op() { rows.matmul(&head.t()?)? } else { head_logits(&rows, head)? }.to_dtype(DType::F32)?;
            Ok(loss::token_nll_rows(&logits, &targets.flatten_all()?)?.reshape((b, t))?)
        }
        KernelMode::Composed => loss::token_nll(&head_logits(hidden, head)?.to_dtype(DType::F32)?, targets),
        KernelMode::Fused => {
            let nll = super::cross_entropy::chunked_cross_entropy(
                &hidden.reshape((b * t, h))?,
                head,
                &targets.to_dtype(DType::U32)?.flatten_all()?,
                chunk_size,
            )?;
            Ok(nll.reshape((b, t))?)
        }
    }
}

/// `x head^T`; a frozen head (LoRA without a saved `lm_head`) gets no gradient.
fn head_logits(x: &Tensor, head: &Tensor) -> Result<Tensor> {
    Ok(if head.track_op() { ops::linear(x, head, None)? } else { super::frozen_linear::frozen_linear(x, head, None)? })
}
