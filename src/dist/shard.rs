//! How trainable parameters are split across ranks (ZeRO-1 and ZeRO-3).
//!
//! Parameters are grouped into *units*: each decoder layer is one unit, and every run of
//! other parameters (embeddings; final norm and head) another. A unit's parameters,
//! flattened and concatenated, are padded to a multiple of `world x block` elements and cut
//! into `world` equal shards: rank r owns elements `[r*S, (r+1)*S)` of every unit. Equal
//! shards are what reduce-scatter and all-gather need; one unit at a time is what ZeRO-3's
//! per-layer gather needs.
//!
//! A shard is made of whole *blocks* whose size depends only on the model (never on the
//! world size): the gradient norm is summed block by block in one fixed order, so it is the
//! same number at any world size, which is what lets a 2-rank run match a 1-rank run bit for
//! bit with clipping on.
use std::ops::Range;

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// A parameter as the layout sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSlot {
    pub name: String,
    pub shape: Vec<usize>,
    /// The unit it belongs to, and where its elements start in the unit's flat space.
    pub unit: usize,
    pub offset: usize,
}

impl ParamSlot {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Consecutive parameters sharded together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// `layers.<i>` for a decoder layer, `rest` otherwise.
    pub key: String,
    /// Indices into the layout's parameters.
    pub params: Range<usize>,
    /// Elements of its parameters.
    pub len: usize,
    /// Elements of each rank's shard (len padded to world x block, divided by world).
    pub shard_len: usize,
}

impl Unit {
    /// The decoder layer this unit holds, if it is one.
    pub fn layer(&self) -> Option<usize> {
        self.key.strip_prefix("layers.")?.parse().ok()
    }
}

/// The part of one parameter that lies in one rank's shard of its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub param: usize,
    /// First element of the piece in the parameter's flat space.
    pub start: usize,
    /// First element of the piece in the rank's unit shard.
    pub shard_offset: usize,
    pub len: usize,
}

/// The split of a parameter list over `world` ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    pub world: usize,
    pub block: usize,
    pub params: Vec<ParamSlot>,
    pub units: Vec<Unit>,
}

/// The unit key of a parameter name: its decoder layer, or `rest`.
pub fn unit_key(name: &str) -> String {
    let mut parts = name.split('.');
    while let Some(p) = parts.next() {
        if p == "layers" {
            if let Some(i) = parts.next().filter(|i| i.parse::<usize>().is_ok()) {
                return format!("layers.{i}");
            }
        }
    }
    "rest".to_string()
}

/// Elements per norm block: a power of two between 256 and 65536 that keeps the number of
/// blocks near 65536 (so the per-block sums a step exchanges stay small), from the total
/// parameter count alone.
pub fn block_size(total: usize) -> usize {
    total.div_ceil(1 << 16).next_power_of_two().clamp(256, 1 << 16)
}

impl ShardLayout {
    /// `params`: (name, shape) in the model's order.
    pub fn new(params: &[(String, Vec<usize>)], world: usize) -> Result<Self> {
        ensure!(world >= 1, "a layout needs at least one rank");
        let total: usize = params.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        let block = block_size(total);
        let mut slots = Vec::with_capacity(params.len());
        let mut units: Vec<Unit> = Vec::new();
        for (i, (name, shape)) in params.iter().enumerate() {
            let key = unit_key(name);
            let numel: usize = shape.iter().product();
            let start_new = units.last().is_none_or(|u| u.key != key);
            if start_new {
                units.push(Unit { key, params: i..i, len: 0, shard_len: 0 });
            }
            let unit_index = units.len() - 1;
            let unit = units.last_mut().expect("just pushed");
            slots.push(ParamSlot { name: name.clone(), shape: shape.clone(), unit: unit_index, offset: unit.len });
            unit.params.end = i + 1;
            unit.len += numel;
        }
        for unit in &mut units {
            let grain = world * block;
            unit.shard_len = unit.len.div_ceil(grain).max(1) * grain / world;
        }
        Ok(Self { world, block, params: slots, units })
    }

    /// Range of unit `u`'s flat space that `rank` owns (may run into the padding).
    pub fn shard_range(&self, u: usize, rank: usize) -> Range<usize> {
        let s = self.units[u].shard_len;
        rank * s..(rank + 1) * s
    }

    /// The pieces of unit `u`'s parameters in `rank`'s shard, in order.
    pub fn pieces(&self, u: usize, rank: usize) -> Vec<Piece> {
        let unit = &self.units[u];
        let shard = self.shard_range(u, rank);
        let mut out = Vec::new();
        for p in unit.params.clone() {
            let slot = &self.params[p];
            let (lo, hi) = (slot.offset.max(shard.start), (slot.offset + slot.numel()).min(shard.end));
            if lo < hi {
                out.push(Piece { param: p, start: lo - slot.offset, shard_offset: lo - shard.start, len: hi - lo });
            }
        }
        out
    }

    /// Every piece `rank` holds, unit by unit.
    pub fn rank_pieces(&self, rank: usize) -> Vec<Piece> {
        (0..self.units.len()).flat_map(|u| self.pieces(u, rank)).collect()
    }

    /// Blocks in one rank's shards, all units together (the same on every rank).
    pub fn blocks_per_rank(&self) -> usize {
        self.units.iter().map(|u| u.shard_len / self.block).sum()
    }

    /// Unit `u`'s tensors (in parameter order; None counts as zeros) as one padded f32
    /// vector of world x shard_len elements.
    pub fn flatten_unit(&self, u: usize, tensors: &[Option<&Tensor>], like: &Tensor) -> Result<Tensor> {
        let unit = &self.units[u];
        ensure!(tensors.len() == unit.params.len(), "unit {} has {} parameters, got {}", unit.key, unit.params.len(), tensors.len());
        let mut parts = Vec::with_capacity(tensors.len() + 1);
        for (p, t) in unit.params.clone().zip(tensors) {
            let numel = self.params[p].numel();
            parts.push(match t {
                Some(t) => {
                    ensure!(t.elem_count() == numel, "{}: {} elements, expected {numel}", self.params[p].name, t.elem_count());
                    t.flatten_all()?.to_dtype(DType::F32)?
                }
                None => Tensor::zeros(numel, DType::F32, like.device())?,
            });
        }
        let padding = unit.shard_len * self.world - unit.len;
        if padding > 0 {
            parts.push(Tensor::zeros(padding, DType::F32, like.device())?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The inverse of [`ShardLayout::flatten_unit`]: a full unit vector (padding allowed
    /// at the end) -> its parameters' tensors with their shapes.
    pub fn split_unit(&self, u: usize, flat: &Tensor) -> Result<Vec<Tensor>> {
        let unit = &self.units[u];
        ensure!(flat.elem_count() >= unit.len, "unit {}: {} elements, expected at least {}", unit.key, flat.elem_count(), unit.len);
        unit.params
            .clone()
            .map(|p| {
                let slot = &self.params[p];
                Ok(flat.narrow(0, slot.offset, slot.numel())?.reshape(slot.shape.as_slice())?)
            })
            .collect()
    }

    /// Rank `rank`'s shard of unit `u` built from its pieces' tensors (1-D, in
    /// [`ShardLayout::pieces`] order), zero-padded to shard_len.
    pub fn assemble_shard(&self, u: usize, pieces: &[Tensor], like: &Tensor) -> Result<Tensor> {
        let unit = &self.units[u];
        let covered: usize = pieces.iter().map(Tensor::elem_count).sum();
        let mut parts: Vec<Tensor> = pieces.to_vec();
        if covered < unit.shard_len {
            parts.push(Tensor::zeros(unit.shard_len - covered, like.dtype(), like.device())?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Per-block sums of squares (f32) of a shard of unit `u`.
    pub fn block_sums(&self, u: usize, shard: &Tensor) -> Result<Tensor> {
        let s = self.units[u].shard_len;
        ensure!(shard.elem_count() == s, "shard of unit {} has {} elements, expected {s}", self.units[u].key, shard.elem_count());
        Ok(shard.reshape((s / self.block, self.block))?.sqr()?.sum(1)?)
    }

    /// The global sum of squares from every rank's block sums (`all[rank]` lists that
    /// rank's blocks unit by unit), added in the order of the blocks in the model, so the
    /// result does not depend on the world size.
    pub fn sum_blocks_in_model_order(&self, all: &[Vec<f32>]) -> Result<f64> {
        ensure!(all.len() == self.world, "block sums from {} ranks, expected {}", all.len(), self.world);
        let mut total = 0.0f64;
        let mut offset = 0;
        for unit in &self.units {
            let n = unit.shard_len / self.block;
            for rank_sums in all {
                ensure!(rank_sums.len() == self.blocks_per_rank(), "a rank sent {} block sums, expected {}", rank_sums.len(), self.blocks_per_rank());
                for &s in &rank_sums[offset..offset + n] {
                    total += s as f64;
                }
            }
            offset += n;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn params() -> Vec<(String, Vec<usize>)> {
        vec![
            ("model.embed_tokens.weight".into(), vec![100, 8]),
            ("model.layers.0.input_layernorm.weight".into(), vec![8]),
            ("model.layers.0.mlp.up_proj.weight".into(), vec![30, 8]),
            ("model.layers.1.input_layernorm.weight".into(), vec![8]),
            ("model.layers.1.mlp.up_proj.weight".into(), vec![30, 8]),
            ("model.norm.weight".into(), vec![8]),
            ("lm_head.weight".into(), vec![100, 8]),
        ]
    }

    #[test]
    fn units_follow_layers_and_runs_of_other_parameters() {
        let l = ShardLayout::new(&params(), 3).unwrap();
        let keys: Vec<&str> = l.units.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["rest", "layers.0", "layers.1", "rest"]);
        assert_eq!(l.units[1].layer(), Some(0));
        assert_eq!(l.units[3].params, 5..7);
        assert_eq!(l.units[3].len, 808);
        assert_eq!(l.block, 256);
        // 808 padded to a multiple of 3 x 256 (1536), split in three.
        assert_eq!(l.units[3].shard_len, 512);
        assert_eq!(unit_key("base_model.model.layers.12.q_proj.lora_A"), "layers.12");
    }

    #[test]
    fn pieces_cover_every_element_once_at_any_world_size() {
        for world in 1..=4 {
            let l = ShardLayout::new(&params(), world).unwrap();
            for (p, slot) in l.params.iter().enumerate() {
                let mut covered = vec![0u8; slot.numel()];
                for rank in 0..world {
                    for piece in l.rank_pieces(rank).into_iter().filter(|x| x.param == p) {
                        covered[piece.start..piece.start + piece.len].iter_mut().for_each(|c| *c += 1);
                        let shard = l.shard_range(slot.unit, rank);
                        assert_eq!(shard.start + piece.shard_offset, slot.offset + piece.start);
                    }
                }
                assert!(covered.iter().all(|&c| c == 1), "world {world}, {}", slot.name);
            }
        }
    }

    #[test]
    fn flatten_split_and_shards_round_trip() {
        let l = ShardLayout::new(&params(), 2).unwrap();
        let dev = Device::Cpu;
        let u = 1;
        let tensors: Vec<Tensor> = l.units[u]
            .params
            .clone()
            .map(|p| Tensor::arange(0f32, l.params[p].numel() as f32, &dev).unwrap().reshape(l.params[p].shape.as_slice()).unwrap())
            .collect();
        let refs: Vec<Option<&Tensor>> = tensors.iter().map(Some).collect();
        let flat = l.flatten_unit(u, &refs, &tensors[0]).unwrap();
        assert_eq!(flat.elem_count(), 2 * l.units[u].shard_len);
        let back = l.split_unit(u, &flat).unwrap();
        for (a, b) in tensors.iter().zip(&back) {
            assert_eq!(a.to_vec2::<f32>().ok(), b.to_vec2::<f32>().ok());
            assert_eq!(a.dims(), b.dims());
        }
        for rank in 0..2 {
            let range = l.shard_range(u, rank);
            let shard = flat.narrow(0, range.start, range.len()).unwrap();
            let pieces: Vec<Tensor> = l
                .pieces(u, rank)
                .iter()
                .map(|p| tensors[p.param - l.units[u].params.start].flatten_all().unwrap().narrow(0, p.start, p.len).unwrap())
                .collect();
            let rebuilt = l.assemble_shard(u, &pieces, &flat).unwrap();
            assert_eq!(rebuilt.to_vec1::<f32>().unwrap(), shard.to_vec1::<f32>().unwrap());
        }
    }

    #[test]
    fn the_norm_is_the_same_number_at_every_world_size() {
        let dev = Device::Cpu;
        let grads: Vec<Tensor> = params()
            .iter()
            .enumerate()
            .map(|(i, (_, s))| {
                let n: usize = s.iter().product();
                let v: Vec<f32> = (0..n).map(|k| ((k * 7919 + i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
                Tensor::from_vec(v, s.as_slice(), &dev).unwrap()
            })
            .collect();
        let norm_at = |world: usize| {
            let l = ShardLayout::new(&params(), world).unwrap();
            let mut all = vec![Vec::new(); world];
            for (u, unit) in l.units.iter().enumerate() {
                let refs: Vec<Option<&Tensor>> = unit.params.clone().map(|p| Some(&grads[p])).collect();
                let flat = l.flatten_unit(u, &refs, &grads[0]).unwrap();
                for (rank, sums) in all.iter_mut().enumerate() {
                    let r = l.shard_range(u, rank);
                    let shard = flat.narrow(0, r.start, r.len()).unwrap();
                    sums.extend(l.block_sums(u, &shard).unwrap().to_vec1::<f32>().unwrap());
                }
            }
            l.sum_blocks_in_model_order(&all).unwrap()
        };
        let one = norm_at(1);
        for world in 2..=4 {
            assert_eq!(norm_at(world).to_bits(), one.to_bits(), "world {world}");
        }
        let exact: f64 = grads.iter().map(|g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64).sum();
        assert!((one - exact).abs() < 1e-4 * exact);
    }

    #[test]
    fn block_size_depends_on_the_model_only() {
        assert_eq!(block_size(1000), 256);
        assert_eq!(block_size(8_000_000_000), 65536);
        assert_eq!(block_size(100_000_000), 2048);
    }
}
