//! ZeRO-3's decoder layers: each layer's weights stay sharded (the sharded optimiser's f32
//! master pieces); the model gathers a layer's full weights just before running it, and
//! again in the backward's recomputation of it, and hands its gradients back here right
//! after that backward, where they are reduce-scattered at once and added to this rank's
//! shard. So about two layers' full weights exist at a time, and a layer's full gradient
//! only while its backward runs.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use candle_core::{DType, Tensor, Var};

use super::comm::Comm;
use super::shard::ShardLayout;
use super::zero::{reduce_scatter_bucketed, ShardGrads, ShardedOptimizer};
use crate::model::LayerWeights;

/// One layer's unit: its index in the layout and this rank's master pieces.
struct LayerUnit {
    unit: usize,
    masters: Vec<Var>,
}

/// The sharded decoder layers of one rank.
pub struct ShardedLayers {
    comm: Arc<Comm>,
    layout: ShardLayout,
    layers: Vec<LayerUnit>,
    /// Weights travel in the compute dtype.
    dtype: DType,
    bucket: usize,
    /// The factor each micro-batch's gradients are scaled by (1 / global micro-batches).
    scale: Mutex<f64>,
    /// The reduced gradient shard of each layer, summed over this step's micro-batches.
    grads: Mutex<Vec<Option<Tensor>>>,
}

fn err(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("{e:#}"))
}

impl ShardedLayers {
    /// The layers of `opt`'s layout (units keyed `layers.<i>`), reading its master pieces.
    pub fn new(comm: Arc<Comm>, opt: &ShardedOptimizer, dtype: DType, bucket: usize) -> anyhow::Result<Self> {
        let layout = opt.layout().clone();
        let mut layers: Vec<(usize, LayerUnit)> = Vec::new();
        for (u, unit) in layout.units.iter().enumerate() {
            if let Some(l) = unit.layer() {
                let (_, masters) = opt.unit_masters(u);
                layers.push((l, LayerUnit { unit: u, masters: masters.to_vec() }));
            }
        }
        layers.sort_by_key(|(l, _)| *l);
        for (i, (l, _)) in layers.iter().enumerate() {
            anyhow::ensure!(*l == i, "decoder layer {i} has no unit in the shard layout");
        }
        let n = layers.len();
        Ok(Self {
            comm,
            layout,
            layers: layers.into_iter().map(|(_, u)| u).collect(),
            dtype,
            bucket,
            scale: Mutex::new(1.0),
            grads: Mutex::new(vec![None; n]),
        })
    }

    /// The factor the next backward's gradients are scaled by before they are reduced.
    pub fn set_scale(&self, scale: f64) {
        if let Ok(mut s) = self.scale.lock() {
            *s = scale;
        }
    }

    /// Moves the accumulated layer shards into `out` (and starts a new accumulation).
    pub fn take_grads(&self, out: &mut ShardGrads) -> anyhow::Result<()> {
        let mut grads = self.grads.lock().map_err(|_| anyhow::anyhow!("layer gradients poisoned"))?;
        for (layer, g) in self.layers.iter().zip(grads.iter_mut()) {
            let shard = g.take().with_context(|| format!("decoder layer {} received no gradient this step", layer.unit))?;
            out.set_unit(layer.unit, shard);
        }
        Ok(())
    }

    fn layer(&self, l: usize) -> candle_core::Result<&LayerUnit> {
        self.layers.get(l).ok_or_else(|| candle_core::Error::Msg(format!("no decoder layer {l}")))
    }
}

impl LayerWeights for ShardedLayers {
    fn gather(&self, l: usize) -> candle_core::Result<HashMap<String, Tensor>> {
        let layer = self.layer(l)?;
        let parts: Vec<Tensor> = layer.masters.iter().map(|v| v.as_tensor().to_dtype(self.dtype)).collect::<candle_core::Result<_>>()?;
        let like = Tensor::zeros(1, self.dtype, layer.masters.first().map(|v| v.device()).unwrap_or(&candle_core::Device::Cpu))?;
        let shard = self.layout.assemble_shard(layer.unit, &parts, &like).map_err(err)?;
        let full = super::zero::all_gather_bucketed(&self.comm, &shard, self.bucket).map_err(err)?;
        let tensors = self.layout.split_unit(layer.unit, &full).map_err(err)?;
        let unit = &self.layout.units[layer.unit];
        // f32 containers of the compute-dtype values, as the model's own weights under ZeRO-1.
        unit.params
            .clone()
            .zip(tensors)
            .map(|(p, t)| Ok((self.layout.params[p].name.clone(), t.to_dtype(DType::F32)?)))
            .collect()
    }

    fn reduce(&self, l: usize, grads: Vec<(String, Tensor)>) -> candle_core::Result<()> {
        let layer = self.layer(l)?;
        let unit = &self.layout.units[layer.unit];
        let scale = *self.scale.lock().map_err(|_| candle_core::Error::Msg("scale poisoned".into()))?;
        let by_name: HashMap<String, Tensor> = grads.into_iter().collect();
        let scaled: Vec<Option<Tensor>> = unit
            .params
            .clone()
            .map(|p| {
                by_name
                    .get(&self.layout.params[p].name)
                    .map(|g| {
                        let g = g.detach().to_dtype(DType::F32)?;
                        if scale == 1.0 {
                            Ok(g)
                        } else {
                            g.affine(scale, 0.0)
                        }
                    })
                    .transpose()
            })
            .collect::<candle_core::Result<_>>()?;
        let refs: Vec<Option<&Tensor>> = scaled.iter().map(Option::as_ref).collect();
        let like = Tensor::zeros(1, DType::F32, layer.masters.first().map(|v| v.device()).unwrap_or(&candle_core::Device::Cpu))?;
        let flat = self.layout.flatten_unit(layer.unit, &refs, &like).map_err(err)?;
        let shard = reduce_scatter_bucketed(&self.comm, &flat, unit.shard_len, self.bucket).map_err(err)?;
        let mut acc = self.grads.lock().map_err(|_| candle_core::Error::Msg("layer gradients poisoned".into()))?;
        acc[l] = Some(match acc[l].take() {
            Some(prev) => (prev + shard)?,
            None => shard,
        });
        Ok(())
    }
}
