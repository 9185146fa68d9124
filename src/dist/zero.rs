//! The sharded optimiser of ZeRO-1 and ZeRO-3, and the gradient all-reduce of plain data
//! parallelism (ZeRO-0).
//!
//! Each rank keeps f32 master weights and optimiser moments for its shard of every unit
//! only ([`crate::dist::shard`]): one [`Optimizer`] over the *pieces* of parameters that lie
//! in the rank's shards, so the update is exactly `train::optim`'s (AdamW and SGD are
//! element-wise: a piece updates bit for bit as it would inside the whole tensor). A step:
//! 1. gradients are reduce-scattered unit by unit, in buckets of `parallel.bucket_mb`
//!    ([`ShardedOptimizer::reduce_scatter`]; ZeRO-3's layers arrive already reduced);
//! 2. the gradient norm comes from per-block sums of squares of every shard, added in the
//!    model's block order on every rank ([`ShardedOptimizer::grad_norm`]);
//! 3. the rank's optimiser steps on its pieces;
//! 4. updated weights are all-gathered in the compute dtype into the model's full copy
//!    ([`ShardedOptimizer::all_gather_into`]).
use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var};

use super::comm::Comm;
use super::shard::{Piece, ShardLayout};
use crate::train::optim::{decays, freeze_masks, Grads, Optimizer, OptimizerMeta, OptimizerSettings, UpdateMask};

/// Gradients after the reduce-scatter: this rank's shard of each unit (f32, shard_len).
pub struct ShardGrads {
    units: Vec<Option<Tensor>>,
    /// Per parameter: whether it had a gradient at all (a parameter without one keeps its
    /// moments and step count, as in the unsharded optimiser).
    has_grad: Vec<bool>,
}

impl ShardGrads {
    pub fn new(layout: &ShardLayout) -> Self {
        Self { units: vec![None; layout.units.len()], has_grad: vec![true; layout.params.len()] }
    }

    /// Sets unit `u`'s shard (ZeRO-3's layers, reduced during the backward).
    pub fn set_unit(&mut self, u: usize, shard: Tensor) {
        self.units[u] = Some(shard);
    }
}

/// The optimiser of one rank's shards.
pub struct ShardedOptimizer {
    layout: ShardLayout,
    rank: usize,
    /// This rank's pieces, per unit.
    pieces: Vec<Vec<Piece>>,
    /// The f32 master weights of the pieces, per unit, in piece order (the optimiser updates
    /// them in place).
    masters: Vec<Vec<Var>>,
    inner: Optimizer,
    device: Device,
}

impl ShardedOptimizer {
    /// Takes this rank's pieces of the full f32 parameters `params` (in the layout's order)
    /// as its master weights.
    pub fn new(layout: ShardLayout, rank: usize, params: &[(String, Var)], settings: OptimizerSettings) -> Result<Self> {
        ensure!(params.len() == layout.params.len(), "{} parameters for a layout of {}", params.len(), layout.params.len());
        let device = params.first().map(|(_, v)| v.device().clone()).unwrap_or(Device::Cpu);
        let mut pieces = Vec::with_capacity(layout.units.len());
        let mut masters = Vec::with_capacity(layout.units.len());
        let mut named = Vec::new();
        for u in 0..layout.units.len() {
            let unit_pieces = layout.pieces(u, rank);
            let mut vars = Vec::with_capacity(unit_pieces.len());
            for piece in &unit_pieces {
                let (name, var) = &params[piece.param];
                ensure!(*name == layout.params[piece.param].name, "parameter {name} where the layout has {}", layout.params[piece.param].name);
                let slice = var.as_tensor().flatten_all()?.narrow(0, piece.start, piece.len)?.contiguous()?.copy()?;
                let master = Var::from_tensor(&slice.to_dtype(DType::F32)?)?;
                named.push((name.clone(), master.clone()));
                vars.push(master);
            }
            pieces.push(unit_pieces);
            masters.push(vars);
        }
        let mut inner = Optimizer::new(&named, settings)?;
        for (name, _) in &named {
            let slot = layout.params.iter().find(|p| &p.name == name).expect("piece of a layout parameter");
            inner.set_decay(name, decays(name, slot.shape.len(), settings.decay_embeddings))?;
        }
        Ok(Self { layout, rank, pieces, masters, inner, device })
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn settings(&self) -> &OptimizerSettings {
        self.inner.settings()
    }

    /// The optimiser over this rank's pieces (its state is what a checkpoint shard holds).
    pub fn inner(&self) -> &Optimizer {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut Optimizer {
        &mut self.inner
    }

    /// Pieces of unit `u` on this rank, with their master weights.
    pub fn unit_masters(&self, u: usize) -> (&[Piece], &[Var]) {
        (&self.pieces[u], &self.masters[u])
    }

    /// Reduce-scatters (sums) the full gradients of every unit whose parameters are all in
    /// `grads` (matched by name) into `out`, `bucket` elements of the full buffer per call.
    pub fn reduce_scatter(&self, comm: &Comm, grads: &Grads, bucket: usize, out: &mut ShardGrads) -> Result<()> {
        let by_name: HashMap<&str, Option<&Tensor>> = grads.entries().iter().map(|(n, g)| (n.as_str(), g.as_ref())).collect();
        let like = Tensor::zeros(1, DType::F32, &self.device)?;
        for (u, unit) in self.layout.units.iter().enumerate() {
            let found: Option<Vec<Option<&Tensor>>> =
                unit.params.clone().map(|p| by_name.get(self.layout.params[p].name.as_str()).copied()).collect();
            let Some(tensors) = found else { continue };
            for (p, t) in unit.params.clone().zip(&tensors) {
                out.has_grad[p] = t.is_some();
            }
            let flat = self.layout.flatten_unit(u, &tensors, &like)?;
            out.units[u] = Some(reduce_scatter_bucketed(comm, &flat, unit.shard_len, bucket)?);
        }
        Ok(())
    }

    /// The gradients of this rank's pieces, masked as the optimiser's masks say (frozen
    /// parameters lose theirs; row masks keep their rows).
    pub fn piece_grads(&self, shards: &ShardGrads) -> Result<Grads> {
        let mut entries = Vec::new();
        for (u, pieces) in self.pieces.iter().enumerate() {
            if pieces.is_empty() {
                continue;
            }
            let shard = shards.units[u].as_ref().with_context(|| format!("no reduced gradient for unit {}", self.layout.units[u].key))?;
            for piece in pieces {
                let name = self.layout.params[piece.param].name.clone();
                let grad = if shards.has_grad[piece.param] { Some(shard.narrow(0, piece.shard_offset, piece.len)?) } else { None };
                entries.push((name, grad));
            }
        }
        let mut grads = Grads::from_tensors(entries);
        self.inner.apply_masks(&mut grads)?;
        Ok(grads)
    }

    /// The global L2 norm of the (masked) gradients: per-block sums of squares of every
    /// shard, gathered and added in the model's block order. The same bits at any world size.
    pub fn grad_norm(&self, comm: &Comm, pieces: &Grads) -> Result<f64> {
        let mut sums = Vec::with_capacity(self.layout.units.len());
        let mut entries = pieces.entries().iter();
        let like = Tensor::zeros(1, DType::F32, &self.device)?;
        for (u, unit_pieces) in self.pieces.iter().enumerate() {
            let mut parts = Vec::with_capacity(unit_pieces.len());
            for piece in unit_pieces {
                let (_, g) = entries.next().context("fewer gradient pieces than pieces")?;
                parts.push(match g {
                    Some(g) => g.clone(),
                    None => Tensor::zeros(piece.len, DType::F32, &self.device)?,
                });
            }
            let shard = self.layout.assemble_shard(u, &parts, &like)?;
            sums.push(self.layout.block_sums(u, &shard)?);
        }
        let mine = Tensor::cat(&sums, 0)?;
        let all = comm.all_gather(&mine)?.to_vec1::<f32>()?;
        let per_rank: Vec<Vec<f32>> = all.chunks(self.layout.blocks_per_rank().max(1)).map(<[f32]>::to_vec).collect();
        Ok(self.layout.sum_blocks_in_model_order(&per_rank)?.sqrt())
    }

    /// One optimiser update of this rank's pieces.
    pub fn step(&mut self, pieces: &Grads, lr: f64) -> Result<()> {
        self.inner.step(pieces, lr)
    }

    /// This rank's shard of unit `u`'s master weights in `dtype` (zero-padded).
    pub fn master_shard(&self, u: usize, dtype: DType) -> Result<Tensor> {
        let parts: Vec<Tensor> = self.masters[u].iter().map(|v| v.as_tensor().to_dtype(dtype)).collect::<candle_core::Result<_>>()?;
        let like = Tensor::zeros(1, dtype, &self.device)?;
        self.layout.assemble_shard(u, &parts, &like)
    }

    /// Unit `u`'s full weights, gathered from every rank in `dtype`, split into its
    /// parameters (their shapes).
    pub fn gather_unit(&self, comm: &Comm, u: usize, dtype: DType, bucket: usize) -> Result<Vec<Tensor>> {
        let shard = self.master_shard(u, dtype)?;
        let full = all_gather_bucketed(comm, &shard, bucket)?;
        self.layout.split_unit(u, &full)
    }

    /// All-gathers the updated weights of every unit whose parameters are all in `targets`
    /// (the model's full f32 copies), in the compute `dtype`, and writes them there.
    pub fn all_gather_into(&self, comm: &Comm, targets: &[(String, Var)], dtype: DType, bucket: usize) -> Result<()> {
        let by_name: HashMap<&str, &Var> = targets.iter().map(|(n, v)| (n.as_str(), v)).collect();
        for (u, unit) in self.layout.units.iter().enumerate() {
            let found: Option<Vec<&Var>> = unit.params.clone().map(|p| by_name.get(self.layout.params[p].name.as_str()).copied()).collect();
            let Some(vars) = found else { continue };
            for (var, weight) in vars.into_iter().zip(self.gather_unit(comm, u, dtype, bucket)?) {
                var.set(&weight.to_dtype(var.dtype())?)?;
            }
        }
        Ok(())
    }

    /// Every parameter's full f32 master weights (for writing the model directory).
    pub fn gather_masters(&self, comm: &Comm, bucket: usize) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.layout.params.len());
        for (u, unit) in self.layout.units.iter().enumerate() {
            let tensors = self.gather_unit(comm, u, DType::F32, bucket)?;
            out.extend(unit.params.clone().map(|p| self.layout.params[p].name.clone()).zip(tensors));
        }
        Ok(out)
    }

    /// The masks of a `freeze:` phase, translated to this rank's pieces.
    pub fn freeze_for(&mut self, target: crate::config::FreezeTarget, new_rows: &[u32]) -> Result<()> {
        let names: Vec<String> = self.layout.params.iter().map(|p| p.name.clone()).collect();
        let masks: HashMap<String, UpdateMask> = freeze_masks(&names, target, new_rows)?.into_iter().collect();
        for piece in self.pieces.iter().flatten() {
            let slot = &self.layout.params[piece.param];
            let mask = match &masks[&slot.name] {
                UpdateMask::Rows(rows) => UpdateMask::Rows(rows_in_piece(rows, &slot.shape, piece)),
                other => other.clone(),
            };
            self.inner.set_mask(&slot.name, mask)?;
        }
        Ok(())
    }

    pub fn clear_masks(&mut self) {
        self.inner.clear_masks();
    }

    /// The optimiser meta (settings, per-piece step counts) of this rank.
    pub fn meta(&self) -> OptimizerMeta {
        self.inner.meta()
    }
}

/// Elements of `piece` (indices from its start) that lie in the given rows of a parameter
/// of `shape`: a row mask of the whole tensor as an element mask of the 1-D piece.
fn rows_in_piece(rows: &[u32], shape: &[usize], piece: &Piece) -> Vec<u32> {
    let row_len: usize = shape.iter().skip(1).product::<usize>().max(1);
    let (lo, hi) = (piece.start, piece.start + piece.len);
    let mut out = Vec::new();
    let mut sorted = rows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for r in sorted {
        let (a, b) = ((r as usize * row_len).max(lo), ((r as usize + 1) * row_len).min(hi));
        out.extend((a..b.max(a)).map(|e| (e - lo) as u32));
    }
    out
}

/// Reduce-scatter of a unit's full padded gradient (world x shard_len) in chunks of about
/// `bucket` elements: chunk c takes columns `[c0, c1)` of every rank's block.
pub fn reduce_scatter_bucketed(comm: &Comm, flat: &Tensor, shard_len: usize, bucket: usize) -> Result<Tensor> {
    let world = comm.size();
    if world == 1 {
        return Ok(flat.clone());
    }
    let cols = (bucket / world).max(1);
    if cols >= shard_len {
        return comm.reduce_scatter_sum(flat);
    }
    let grid = flat.reshape((world, shard_len))?;
    let mut parts = Vec::with_capacity(shard_len.div_ceil(cols));
    let mut c0 = 0;
    while c0 < shard_len {
        let n = cols.min(shard_len - c0);
        let chunk = grid.narrow(1, c0, n)?.contiguous()?.flatten_all()?;
        parts.push(comm.reduce_scatter_sum(&chunk)?);
        c0 += n;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// All-gather of one rank's shard (shard_len) into the full unit (world x shard_len), in
/// chunks of about `bucket` elements of the result.
pub fn all_gather_bucketed(comm: &Comm, shard: &Tensor, bucket: usize) -> Result<Tensor> {
    let world = comm.size();
    if world == 1 {
        return Ok(shard.clone());
    }
    let shard_len = shard.elem_count();
    let cols = (bucket / world).max(1);
    if cols >= shard_len {
        return comm.all_gather(shard);
    }
    let mut parts = Vec::with_capacity(shard_len.div_ceil(cols));
    let mut c0 = 0;
    while c0 < shard_len {
        let n = cols.min(shard_len - c0);
        // (world x n), rank-major: the columns [c0, c0 + n) of every rank's block.
        parts.push(comm.all_gather(&shard.narrow(0, c0, n)?.contiguous()?)?.reshape((world, n))?);
        c0 += n;
    }
    Ok(Tensor::cat(&parts, 1)?.flatten_all()?)
}

/// ZeRO-0 with several ranks: every gradient summed over ranks, consecutive tensors packed
/// into buckets of about `bucket` elements (a tensor larger than a bucket is split), so
/// every rank steps its full optimiser identically.
pub fn all_reduce_grads(comm: &Comm, grads: &Grads, bucket: usize) -> Result<Grads> {
    if comm.size() == 1 {
        return Ok(grads.clone());
    }
    let mut out: Vec<(String, Option<Tensor>)> = Vec::with_capacity(grads.entries().len());
    // Pending pieces of the current bucket: (entry index, flat piece).
    let mut pending: Vec<(usize, Tensor)> = Vec::new();
    let mut pending_len = 0;
    let mut reduced: Vec<Vec<Tensor>> = vec![Vec::new(); grads.entries().len()];
    let flush = |pending: &mut Vec<(usize, Tensor)>, pending_len: &mut usize, reduced: &mut Vec<Vec<Tensor>>| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let flat = Tensor::cat(&pending.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(), 0)?;
        let summed = comm.all_reduce_sum(&flat)?;
        let mut offset = 0;
        for (i, t) in pending.drain(..) {
            let n = t.elem_count();
            reduced[i].push(summed.narrow(0, offset, n)?);
            offset += n;
        }
        *pending_len = 0;
        Ok(())
    };
    for (i, (_, g)) in grads.entries().iter().enumerate() {
        let Some(g) = g else { continue };
        let flat = g.flatten_all()?;
        let mut start = 0;
        while start < flat.elem_count() {
            let n = (bucket - pending_len).min(flat.elem_count() - start);
            pending.push((i, flat.narrow(0, start, n)?));
            pending_len += n;
            start += n;
            if pending_len >= bucket {
                flush(&mut pending, &mut pending_len, &mut reduced)?;
            }
        }
    }
    flush(&mut pending, &mut pending_len, &mut reduced)?;
    for ((name, g), parts) in grads.entries().iter().zip(reduced) {
        out.push((
            name.clone(),
            match g {
                Some(g) => Some(if parts.len() == 1 { parts[0].reshape(g.shape())? } else { Tensor::cat(&parts, 0)?.reshape(g.shape())? }),
                None => None,
            },
        ));
    }
    Ok(Grads::from_tensors(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::Algorithm;

    fn settings() -> OptimizerSettings {
        OptimizerSettings { algorithm: Algorithm::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 }, weight_decay: 0.1, decay_embeddings: false }
    }

    fn model(dev: &Device) -> Vec<(String, Var)> {
        let shapes: Vec<(&str, Vec<usize>)> = vec![
            ("model.embed_tokens.weight", vec![40, 8]),
            ("model.layers.0.input_layernorm.weight", vec![8]),
            ("model.layers.0.mlp.up_proj.weight", vec![24, 8]),
            ("model.norm.weight", vec![8]),
            ("lm_head.weight", vec![40, 8]),
        ];
        shapes
            .into_iter()
            .enumerate()
            .map(|(i, (n, s))| {
                let numel: usize = s.iter().product();
                let v: Vec<f32> = (0..numel).map(|k| ((k * 31 + i * 17) % 97) as f32 / 97.0 - 0.5).collect();
                (n.to_string(), Var::from_tensor(&Tensor::from_vec(v, s.as_slice(), dev).unwrap()).unwrap())
            })
            .collect()
    }

    fn grads_for(params: &[(String, Var)], seed: usize) -> Grads {
        Grads::from_tensors(
            params
                .iter()
                .enumerate()
                .map(|(i, (n, v))| {
                    let numel = v.elem_count();
                    let g: Vec<f32> = (0..numel).map(|k| ((k * 13 + i * 7 + seed * 5) % 23) as f32 / 23.0 - 0.4).collect();
                    (n.clone(), Some(Tensor::from_vec(g, v.shape(), v.device()).unwrap()))
                })
                .collect(),
        )
    }

    /// With one rank, the sharded optimiser is the plain optimiser with another norm order:
    /// the weights after several clipped steps match within rounding, and exactly without
    /// clipping.
    #[test]
    fn one_rank_sharded_matches_the_plain_optimiser_without_clipping() {
        let dev = Device::Cpu;
        let comm = Comm::single();
        let plain_params = model(&dev);
        let sharded_params = model(&dev);
        let shapes: Vec<(String, Vec<usize>)> = plain_params.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
        let mut plain = Optimizer::new(&plain_params, settings()).unwrap();
        let layout = ShardLayout::new(&shapes, 1).unwrap();
        let mut sharded = ShardedOptimizer::new(layout, 0, &sharded_params, settings()).unwrap();
        for step in 0..4 {
            let g = grads_for(&plain_params, step);
            plain.step(&g, 1e-2).unwrap();
            let mut shards = ShardGrads::new(sharded.layout());
            sharded.reduce_scatter(&comm, &g, 1 << 20, &mut shards).unwrap();
            let pieces = sharded.piece_grads(&shards).unwrap();
            let norm = sharded.grad_norm(&comm, &pieces).unwrap();
            let expect = g.global_norm().unwrap();
            assert!((norm - expect).abs() < 1e-6 * expect, "{norm} vs {expect}");
            sharded.step(&pieces, 1e-2).unwrap();
            sharded.all_gather_into(&comm, &sharded_params, DType::F32, 1 << 20).unwrap();
        }
        for ((n, a), (_, b)) in plain_params.iter().zip(&sharded_params) {
            let (a, b) = (a.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap());
            assert_eq!(a, b, "{n}");
        }
        // Decay groups follow the full tensors' shapes, not the 1-D pieces'.
        assert_eq!(sharded.inner().is_decayed("lm_head.weight"), Some(true));
        assert_eq!(sharded.inner().is_decayed("model.norm.weight"), Some(false));
    }

    #[test]
    fn row_masks_become_element_masks_of_the_piece() {
        let piece = Piece { param: 0, start: 5, shard_offset: 0, len: 10 };
        // Rows of 4 elements: row 1 is [4, 8), row 3 is [12, 16).
        assert_eq!(rows_in_piece(&[3, 1], &[5, 4], &piece), vec![0, 1, 2, 7, 8, 9]);
    }

    #[test]
    fn bucketed_collectives_are_the_identity_for_one_rank() {
        let comm = Comm::single();
        let t = Tensor::arange(0f32, 12.0, &Device::Cpu).unwrap();
        assert_eq!(reduce_scatter_bucketed(&comm, &t, 12, 4).unwrap().to_vec1::<f32>().unwrap(), t.to_vec1::<f32>().unwrap());
        assert_eq!(all_gather_bucketed(&comm, &t, 4).unwrap().to_vec1::<f32>().unwrap(), t.to_vec1::<f32>().unwrap());
    }
}
