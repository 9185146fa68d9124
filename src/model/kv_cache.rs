//! Generation's key/value cache: every layer keeps the rotated keys and the values of the
//! tokens seen so far, so a new token costs one pass of each layer over itself plus
//! attention over the cache. The layer is the training layer
//! (`layer::layer_with_attention`, same weights and RoPE code); only its attention step
//! differs: the new keys/values are appended to the cache and the queries attend over all
//! of it through an additive mask.
//!
//! Batched prompts are left-padded (transformers' convention for decoder-only generation):
//! row `b` starts with `pad[b]` padding slots that no real token sees, and its real tokens
//! take positions `0, 1, ...` from its first real slot on.
use candle_core::{Device, Result, Tensor};
use candle_nn::kv_cache::KvCache as LayerKv;

/// Additive mask value for hidden slots: `exp` of it underflows to exactly 0 in f32, and,
/// unlike -inf, it never turns a row into NaN.
const HIDDEN: f32 = -1e30;

/// The keys and values of every layer for one batch of rows.
pub struct KvCache {
    pub(super) layers: Vec<LayerKv>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers; `capacity` slots are allocated up front (it
    /// grows beyond that if needed).
    pub fn new(num_layers: usize, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Dimension 2 of the [B, KV, S, D] keys/values is the slot axis.
        Self { layers: (0..num_layers).map(|_| LayerKv::new(2, capacity)).collect(), len: 0 }
    }

    /// Slots held (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

/// Positions `[B, T]` (u32) and the additive attention mask `[B, 1, T, start + T]` (f32) of
/// `t` new tokens at slots `start..start + t`, for rows whose first `pad[b]` slots are left
/// padding. A real token sees the real slots up to itself; a padding slot sees only itself
/// (its output is never used, but a row with nothing visible would be NaN).
pub fn step_inputs(pad: &[usize], start: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let b = pad.len();
    let s = start + t;
    let mut positions = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t * s);
    for &p in pad {
        for i in start..s {
            positions.push(i.saturating_sub(p) as u32);
            for j in 0..s {
                let visible = j == i || (j <= i && j >= p);
                mask.push(if visible { 0.0 } else { HIDDEN });
            }
        }
    }
    Ok((Tensor::from_vec(positions, (b, t), device)?, Tensor::from_vec(mask, (b, 1, t, s), device)?))
}
