//! Fused kernels for training: each op is a candle custom op with a CPU implementation of
//! the fused algorithm and, under the `cuda` feature, a CUDA kernel (`src/kernels/cuda/*.cu`,
//! compiled to PTX by `build.rs`). Every op records a backward.
//!
//! The ops are drop-in replacements for the composed ops of `crate::model`: same shapes,
//! same semantics. [`KernelMode`] selects between the two; the composed path stays the
//! default because it is the one checked against transformers end to end.
//!
//! | op | function | layout |
//! |---|---|---|
//! | causal attention (flash-style, GQA, document mask) | [`attention::flash_attention`] | q `[B,Hq,T,D]`, k/v `[B,Hkv,T,D]` |
//! | RMSNorm | [`rms_norm::rms_norm`] | x `[..,H]`, weight `[H]` |
//! | RoPE (rotate-half, HF layout) | [`rope::rope`], [`rope::RopeTable`] | x `[B,H,T,D]`, cos/sin `[B,T,D/2]` |
//! | SwiGLU | [`swiglu::swiglu`] | gate, up: same shape |
//! | cross-entropy over vocabulary chunks | [`cross_entropy::chunked_cross_entropy`] | hidden `[N,H]`, lm_head `[V,H]`, targets `[N]` |
//! | multi-tensor AdamW | [`adamw::adamw_step`] | f32 params, grads, moments |
//! | activation recomputation | [`recompute::recompute`] | any block `x -> y` |
//! | linear layer with a frozen weight (no weight gradient) | [`frozen_linear::frozen_linear`] | x `[..,in]`, w `[out,in]` |
//! | frozen linear layer plus its LoRA term, intermediates not kept | [`lora_linear::lora_linear`] | x `[..,in]`, w `[out,in]`, A `[r,in]`, B `[out,r]` |
//!
//! [`dispatch`] gives the model one call per op that follows a [`KernelMode`];
//! [`KernelSettings`] (the `kernels:` section of a training config) picks the mode, the fused
//! attention, recomputation and the cross-entropy chunk for a whole model.

pub mod adamw;
pub mod attention;
pub mod attention_blocked;
pub mod cross_entropy;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod device_info;
pub mod dispatch;
pub mod frozen_linear;
mod host;
pub mod lora_linear;
pub mod masked_softmax;
mod precomputed;
pub mod recompute;
pub mod rms_norm;
pub mod rope;
pub mod swiglu;
pub mod token_nll;

use serde::{Deserialize, Serialize};

/// Which implementation of the model's ops a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelMode {
    /// Chains of candle primitives (`crate::model`'s ops): the reference path.
    #[default]
    Composed,
    /// The custom ops of this module (CUDA kernels on a GPU, their CPU versions otherwise).
    Fused,
}

/// How a model runs its ops: the `kernels:` section of a training config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelSettings {
    /// `composed` (candle primitives, the reference) or `fused` (this module's ops).
    pub mode: KernelMode,
    /// The attention of `fused` mode: `flash` or `blocked:<query rows>`.
    pub attention: dispatch::FusedAttention,
    /// Recompute each decoder layer in the backward instead of keeping its activations.
    pub recompute: bool,
    /// Vocabulary rows per chunk of the fused cross-entropy (`fused` mode).
    pub ce_chunk: usize,
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self { mode: KernelMode::Composed, attention: dispatch::FusedAttention::Flash, recompute: false, ce_chunk: 8192 }
    }
}

impl KernelSettings {
    /// The settings' own consistency (field names as in the YAML section).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.ce_chunk == 0 {
            anyhow::bail!("kernels.ce_chunk: must be at least 1");
        }
        Ok(())
    }

    /// A short label, e.g. `fused (flash) + recompute`.
    pub fn describe(&self) -> String {
        let mode = match self.mode {
            KernelMode::Composed => "composed".to_string(),
            KernelMode::Fused => format!("fused ({})", self.attention),
        };
        if self.recompute {
            format!("{mode} + recompute")
        } else {
            mode
        }
    }
}

impl std::str::FromStr for KernelMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "composed" => Ok(Self::Composed),
            "fused" => Ok(Self::Fused),
            other => anyhow::bail!("unknown kernel mode `{other}` (expected `composed` or `fused`)"),
        }
    }
}
