//! The optimiser as the training loop sees it, whatever the parallelism: gradients in,
//! one reduced and masked set of gradients, their norm, clipping and the step out.
//!
//! - ZeRO-0: the plain [`Optimizer`] on every rank; gradients are all-reduced first (with
//!   one rank nothing is communicated and every operation is exactly the one-device loop's).
//! - ZeRO-1: the [`ShardedOptimizer`]; gradients are reduce-scattered, each rank steps its
//!   shard, the updated weights are all-gathered into the model.
//! - ZeRO-3: as ZeRO-1, and the model's decoder layers are handed to [`ShardedLayers`],
//!   which gathers them per layer and reduce-scatters their gradients during the backward.
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

use super::checkpoint::{self as shards, StateSource};
use super::layers::ShardedLayers;
use super::shard::ShardLayout;
use super::zero::{all_reduce_grads, ShardGrads, ShardedOptimizer};
use super::{World, ZeroStage};
use crate::model::CausalLm;
use crate::train::optim::{Grads, Optimizer, OptimizerSettings};

enum Kind {
    Replicated(Optimizer),
    Sharded { opt: ShardedOptimizer, layers: Option<Arc<ShardedLayers>> },
}

/// Gradients after the reduction and the masks: what the norm, clipping and the step use.
pub enum Reduced {
    /// Every parameter's full gradient (ZeRO-0).
    Full(Grads),
    /// This rank's pieces (ZeRO-1/3).
    Pieces(Grads),
}

impl Reduced {
    fn grads_mut(&mut self) -> &mut Grads {
        match self {
            Reduced::Full(g) | Reduced::Pieces(g) => g,
        }
    }
}

/// The run's optimiser across ranks.
pub struct ParallelOptimizer {
    world: World,
    zero: ZeroStage,
    bucket: usize,
    compute_dtype: DType,
    kind: Kind,
}

impl ParallelOptimizer {
    /// Builds the optimiser over `model`'s trainable parameters. For ZeRO-3 the model hands
    /// its decoder layers over (it keeps only the other parameters).
    pub fn new(world: &World, zero: ZeroStage, bucket: usize, model: &mut CausalLm, settings: OptimizerSettings) -> Result<Self> {
        let compute_dtype = model.compute_dtype();
        let kind = match zero {
            ZeroStage::Zero0 => Kind::Replicated(Optimizer::new(model.named_parameters(), settings)?),
            ZeroStage::Zero1 | ZeroStage::Zero3 => {
                let params = model.named_parameters();
                let shapes: Vec<(String, Vec<usize>)> = params.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
                let layout = ShardLayout::new(&shapes, world.size())?;
                let opt = ShardedOptimizer::new(layout, world.rank(), params, settings)?;
                let layers = if zero == ZeroStage::Zero3 {
                    let layers = Arc::new(ShardedLayers::new(Arc::clone(world.comm()), &opt, compute_dtype, bucket)?);
                    model.release_layers(Arc::clone(&layers) as Arc<dyn crate::model::LayerWeights>)?;
                    Some(layers)
                } else {
                    None
                };
                Kind::Sharded { opt, layers }
            }
        };
        Ok(Self { world: world.clone(), zero, bucket, compute_dtype, kind })
    }

    pub fn zero(&self) -> ZeroStage {
        self.zero
    }

    /// The plain optimiser (ZeRO-0), for code that works on whole tensors.
    pub fn replicated_mut(&mut self) -> Option<&mut Optimizer> {
        match &mut self.kind {
            Kind::Replicated(o) => Some(o),
            Kind::Sharded { .. } => None,
        }
    }

    /// Use the multi-tensor AdamW of the fused kernels.
    pub fn set_multi_tensor(&mut self, on: bool) {
        match &mut self.kind {
            Kind::Replicated(o) => o.set_multi_tensor(on),
            Kind::Sharded { opt, .. } => opt.inner_mut().set_multi_tensor(on),
        }
    }

    /// The factor every micro-batch's gradients are multiplied by: 1 / the micro-batches of
    /// one step over all ranks (their sum over ranks is then the mean).
    pub fn set_micro_batch_scale(&self, scale: f64) {
        if let Kind::Sharded { layers: Some(layers), .. } = &self.kind {
            layers.set_scale(scale);
        }
    }

    /// Sums the step's gradients over ranks and applies the masks (frozen parameters, row
    /// masks). `grads` are this rank's accumulated gradients of `named_parameters`.
    pub fn reduce(&self, grads: Grads) -> Result<Reduced> {
        match &self.kind {
            Kind::Replicated(opt) => {
                let mut grads = if self.world.size() > 1 { all_reduce_grads(self.world.comm(), &grads, self.bucket)? } else { grads };
                opt.apply_masks(&mut grads)?;
                Ok(Reduced::Full(grads))
            }
            Kind::Sharded { opt, layers } => {
                let mut shards = ShardGrads::new(opt.layout());
                opt.reduce_scatter(self.world.comm(), &grads, self.bucket, &mut shards)?;
                if let Some(layers) = layers {
                    layers.take_grads(&mut shards)?;
                }
                Ok(Reduced::Pieces(opt.piece_grads(&shards)?))
            }
        }
    }

    /// The global gradient norm (before clipping), the same on every rank.
    pub fn grad_norm(&self, reduced: &Reduced) -> Result<f64> {
        match (&self.kind, reduced) {
            (Kind::Replicated(_), Reduced::Full(g)) => g.global_norm(),
            (Kind::Sharded { opt, .. }, Reduced::Pieces(g)) => opt.grad_norm(self.world.comm(), g),
            _ => bail!("gradients reduced for another optimiser"),
        }
    }

    /// torch's `clip_grad_norm_` with the norm already computed.
    pub fn clip(&self, reduced: &mut Reduced, norm: f64, max_norm: f64) -> Result<()> {
        reduced.grads_mut().clip_to(norm, max_norm)
    }

    /// One update; with sharded state, the updated weights are all-gathered into `model`.
    pub fn step(&mut self, reduced: &Reduced, lr: f64, model: &CausalLm) -> Result<()> {
        match (&mut self.kind, reduced) {
            (Kind::Replicated(opt), Reduced::Full(g)) => opt.step(g, lr),
            (Kind::Sharded { opt, .. }, Reduced::Pieces(g)) => {
                opt.step(g, lr)?;
                opt.all_gather_into(self.world.comm(), model.named_parameters(), self.compute_dtype, self.bucket)
            }
            _ => bail!("gradients reduced for another optimiser"),
        }
    }

    /// The masks of a `freeze:` phase.
    pub fn freeze_for(&mut self, target: crate::config::FreezeTarget, new_rows: &[u32]) -> Result<()> {
        match &mut self.kind {
            Kind::Replicated(o) => o.freeze_for(target, new_rows),
            Kind::Sharded { opt, .. } => opt.freeze_for(target, new_rows),
        }
    }

    pub fn clear_masks(&mut self) {
        match &mut self.kind {
            Kind::Replicated(o) => o.clear_masks(),
            Kind::Sharded { opt, .. } => opt.clear_masks(),
        }
    }

    /// Whether the optimiser state is split across ranks (each writes its own shard).
    pub fn is_sharded(&self) -> bool {
        matches!(self.kind, Kind::Sharded { .. })
    }

    /// The full f32 weights to write into the model directory, when the model's own copy
    /// is not them (sharded state: the masters are gathered from every rank; a collective,
    /// so every rank calls it). None: write the model's own parameters.
    pub fn weights_for_save(&self) -> Result<Option<Vec<(String, Tensor)>>> {
        match &self.kind {
            Kind::Replicated(_) => Ok(None),
            Kind::Sharded { opt, .. } => Ok(Some(opt.gather_masters(self.world.comm(), self.bucket)?)),
        }
    }

    /// The single-file state (ZeRO-0), written by rank 0 exactly as a one-device run writes it.
    pub fn save_whole(&self, state_dir: &Path) -> Result<()> {
        match &self.kind {
            Kind::Replicated(o) => o.save(state_dir),
            Kind::Sharded { .. } => bail!("a sharded optimiser saves per rank"),
        }
    }

    /// This rank's shard file; returns what the index needs (sharded state only).
    pub fn save_shard(&self, state_dir: &Path) -> Result<shards::RankShardMeta> {
        match &self.kind {
            Kind::Sharded { opt, .. } => shards::write_rank_shard(state_dir, opt),
            Kind::Replicated(_) => bail!("a replicated optimiser saves one file"),
        }
    }

    /// The index of a sharded save from every rank's meta.
    pub fn shard_index(&self, metas: &[shards::RankShardMeta]) -> Result<shards::ShardIndex> {
        match &self.kind {
            Kind::Sharded { opt, .. } => shards::build_index(opt.layout(), self.zero.number(), *opt.settings(), metas),
            Kind::Replicated(_) => bail!("a replicated optimiser has no shard index"),
        }
    }

    /// Loads a checkpoint's optimiser state saved at any world size and ZeRO stage.
    /// `params` are the model's parameters (for the shapes of whole tensors).
    pub fn load(&mut self, state_dir: &Path, model: &CausalLm, device: &Device) -> Result<()> {
        let sharded_on_disk = shards::is_complete_sharded(state_dir);
        match &mut self.kind {
            // The one-device path reads its own files exactly as before.
            Kind::Replicated(o) if !sharded_on_disk => o.load(state_dir, device),
            Kind::Replicated(o) => shards::restore_whole(o, model.named_parameters(), &StateSource::open(state_dir)?, device),
            Kind::Sharded { opt, .. } => shards::restore_sharded(opt, &StateSource::open(state_dir)?, device),
        }
    }
}
