//! Sharded optimiser state in a checkpoint, and reading it back at any world size.
//!
//! A ZeRO-1/3 checkpoint's `trainer_state/` holds, besides `trainer_state.json`:
//! - `optimizer_shards/rank-RRRRR.safetensors`: each rank's pieces of the moments
//!   (`<param>.exp_avg`, `<param>.exp_avg_sq`, or `<param>.momentum_buffer`, 1-D);
//! - `optimizer_shards/index.json` ([`ShardIndex`]): world size, every parameter's name,
//!   shape and step count, and for every rank which element range of which parameter each
//!   of its pieces holds;
//! - `optimizer_shards/COMPLETE`, written by rank 0 after a barrier that every rank reaches
//!   only once its file is durable. A checkpoint counts only with it.
//!
//! Reading goes through [`StateSource`], which answers "elements `[a, b)` of this
//! parameter's moment" from either this layout or the single-file state of a one-rank
//! optimiser (`optimizer.safetensors` + `optimizer.json`): so any checkpoint resumes at any
//! world size and any ZeRO stage, reading only the byte ranges each rank needs.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::shard::{Piece, ShardLayout, Unit};
use super::zero::ShardedOptimizer;
use crate::train::optim::{Optimizer, OptimizerMeta, OptimizerSettings, STATE_META_FILE, STATE_TENSORS_FILE};

pub const SHARDS_DIR: &str = "optimizer_shards";
pub const INDEX_FILE: &str = "index.json";
pub const COMPLETE_FILE: &str = "COMPLETE";
pub const INDEX_FORMAT: u32 = 1;
/// Moment tensors an optimiser may save per parameter.
const MOMENT_SUFFIXES: [&str; 3] = ["exp_avg", "exp_avg_sq", "momentum_buffer"];

pub fn rank_file(rank: usize) -> String {
    format!("rank-{rank:05}.safetensors")
}

/// One parameter in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexParam {
    pub name: String,
    pub shape: Vec<usize>,
    /// Its unit, and its first element in the unit's flat space.
    pub unit: usize,
    pub offset: usize,
    /// Optimiser steps it has taken.
    pub steps: u64,
}

/// One rank's file and the pieces it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRank {
    pub file: String,
    pub pieces: Vec<Piece>,
}

/// `optimizer_shards/index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    pub format: u32,
    pub world_size: usize,
    pub zero: u8,
    pub block: usize,
    pub settings: OptimizerSettings,
    pub params: Vec<IndexParam>,
    pub units: Vec<Unit>,
    pub ranks: Vec<IndexRank>,
}

/// What each rank contributes to the index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankShardMeta {
    pub pieces: Vec<Piece>,
    pub steps: Vec<(String, u64)>,
}

/// Writes this rank's moments into `<state_dir>/optimizer_shards/rank-RRRRR.safetensors`
/// (fsynced) and returns what the index needs from it.
pub fn write_rank_shard(state_dir: &Path, opt: &ShardedOptimizer) -> Result<RankShardMeta> {
    let dir = state_dir.join(SHARDS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(rank_file(opt.rank()));
    let tensors: HashMap<String, Tensor> = opt.inner().state_tensors().into_iter().collect();
    candle_core::safetensors::save(&tensors, &path).with_context(|| format!("writing {}", path.display()))?;
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync of {}", path.display()))?;
    Ok(RankShardMeta { pieces: opt.layout().rank_pieces(opt.rank()), steps: opt.meta().steps })
}

/// The index of a save, from the layout and every rank's [`RankShardMeta`] (rank order).
pub fn build_index(layout: &ShardLayout, zero: u8, settings: OptimizerSettings, ranks: &[RankShardMeta]) -> Result<ShardIndex> {
    ensure!(ranks.len() == layout.world, "shard metadata from {} ranks for a world of {}", ranks.len(), layout.world);
    let mut steps: HashMap<&str, u64> = HashMap::new();
    for (r, meta) in ranks.iter().enumerate() {
        for (name, s) in &meta.steps {
            if let Some(prev) = steps.insert(name, *s) {
                ensure!(prev == *s, "parameter {name}: rank {r} counts {s} optimiser steps, another rank {prev}");
            }
        }
    }
    let params = layout
        .params
        .iter()
        .map(|p| IndexParam {
            name: p.name.clone(),
            shape: p.shape.clone(),
            unit: p.unit,
            offset: p.offset,
            steps: steps.get(p.name.as_str()).copied().unwrap_or(0),
        })
        .collect();
    Ok(ShardIndex {
        format: INDEX_FORMAT,
        world_size: layout.world,
        zero,
        block: layout.block,
        settings,
        params,
        units: layout.units.clone(),
        ranks: ranks.iter().enumerate().map(|(r, m)| IndexRank { file: rank_file(r), pieces: m.pieces.clone() }).collect(),
    })
}

/// Rank 0, after every rank's file is written: the index.
pub fn write_index(state_dir: &Path, index: &ShardIndex) -> Result<()> {
    let path = state_dir.join(SHARDS_DIR).join(INDEX_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(index)?).with_context(|| format!("writing {}", path.display()))
}

/// Rank 0, after the barrier that follows every rank's durable write: the marker.
pub fn write_complete_marker(state_dir: &Path, world_size: usize) -> Result<()> {
    let path = state_dir.join(SHARDS_DIR).join(COMPLETE_FILE);
    let files: Vec<String> = (0..world_size).map(rank_file).collect();
    let body = serde_json::json!({ "world_size": world_size, "files": files });
    crate::util::atomic::write_file_atomic(&path, &serde_json::to_vec_pretty(&body)?)
}

/// Whether `state_dir` holds a complete sharded optimiser state.
pub fn is_complete_sharded(state_dir: &Path) -> bool {
    let dir = state_dir.join(SHARDS_DIR);
    if !dir.join(COMPLETE_FILE).is_file() || !dir.join(INDEX_FILE).is_file() {
        return false;
    }
    match read_index(state_dir) {
        Ok(index) => index.ranks.iter().all(|r| dir.join(&r.file).is_file()),
        Err(_) => false,
    }
}

pub fn read_index(state_dir: &Path) -> Result<ShardIndex> {
    let path = state_dir.join(SHARDS_DIR).join(INDEX_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let index: ShardIndex = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if index.format != INDEX_FORMAT {
        bail!("{}: shard index format {} (this cpt reads {INDEX_FORMAT})", path.display(), index.format);
    }
    ensure!(index.ranks.len() == index.world_size, "{}: {} rank entries for world size {}", path.display(), index.ranks.len(), index.world_size);
    Ok(index)
}

/// A memory-mapped safetensors file read by byte ranges.
pub struct Mapped {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl Mapped {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: checkpoint files are written once and never modified in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), map })
    }

    /// Elements `[start, start + len)` of f32 tensor `key` (None if the file has no such tensor).
    fn read(&self, key: &str, start: usize, len: usize) -> Result<Option<Vec<f32>>> {
        let st = safetensors::SafeTensors::deserialize(&self.map).with_context(|| format!("reading {}", self.path.display()))?;
        let view = match st.tensor(key) {
            Ok(v) => v,
            Err(safetensors::SafeTensorError::TensorNotFound(_)) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("{}: tensor {key}", self.path.display())),
        };
        ensure!(view.dtype() == safetensors::Dtype::F32, "{}: tensor {key} is {:?}, expected F32", self.path.display(), view.dtype());
        let numel: usize = view.shape().iter().product();
        ensure!(start + len <= numel, "{}: tensor {key} has {numel} elements, asked for [{start}, {})", self.path.display(), start + len);
        let bytes = &view.data()[start * 4..(start + len) * 4];
        Ok(Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
    }
}

/// A saved optimiser state, readable by element ranges whatever world size wrote it.
pub enum StateSource {
    /// `optimizer.json` + `optimizer.safetensors` (one rank, or ZeRO-0).
    Whole { meta: OptimizerMeta, file: Mapped },
    /// `optimizer_shards/` of a ZeRO-1/3 save.
    Sharded { index: ShardIndex, files: Vec<Mapped> },
}

impl StateSource {
    /// Opens the optimiser state of `state_dir` (a checkpoint's `trainer_state/`).
    pub fn open(state_dir: &Path) -> Result<Self> {
        if is_complete_sharded(state_dir) {
            let index = read_index(state_dir)?;
            let files =
                index.ranks.iter().map(|r| Mapped::open(&state_dir.join(SHARDS_DIR).join(&r.file))).collect::<Result<Vec<_>>>()?;
            return Ok(StateSource::Sharded { index, files });
        }
        let meta_path = state_dir.join(STATE_META_FILE);
        if !meta_path.is_file() {
            bail!("{}: no optimiser state (neither {STATE_META_FILE} nor a complete {SHARDS_DIR}/)", state_dir.display());
        }
        let text = std::fs::read_to_string(&meta_path).with_context(|| format!("reading {}", meta_path.display()))?;
        let meta: OptimizerMeta = serde_json::from_str(&text).with_context(|| format!("parsing {}", meta_path.display()))?;
        Ok(StateSource::Whole { meta, file: Mapped::open(&state_dir.join(STATE_TENSORS_FILE))? })
    }

    /// The world size that wrote it (1 for the single-file state).
    pub fn world_size(&self) -> usize {
        match self {
            StateSource::Whole { .. } => 1,
            StateSource::Sharded { index, .. } => index.world_size,
        }
    }

    pub fn settings(&self) -> OptimizerSettings {
        match self {
            StateSource::Whole { meta, .. } => meta.settings,
            StateSource::Sharded { index, .. } => index.settings,
        }
    }

    /// Parameter names in the saved order, with their step counts.
    pub fn steps(&self) -> Vec<(String, u64)> {
        match self {
            StateSource::Whole { meta, .. } => meta.steps.clone(),
            StateSource::Sharded { index, .. } => index.params.iter().map(|p| (p.name.clone(), p.steps)).collect(),
        }
    }

    /// Elements `[start, start + len)` of parameter `name`'s flattened moment `suffix`
    /// (None when the state has no such moment, e.g. before the first step).
    pub fn read(&self, name: &str, suffix: &str, start: usize, len: usize) -> Result<Option<Vec<f32>>> {
        let key = format!("{name}.{suffix}");
        match self {
            StateSource::Whole { file, .. } => file.read(&key, start, len),
            StateSource::Sharded { index, files } => {
                let p = index.params.iter().position(|p| p.name == name).with_context(|| format!("the saved state has no parameter {name}"))?;
                let mut out = vec![0f32; len];
                let mut covered = 0;
                let mut any = false;
                for (rank, entry) in index.ranks.iter().enumerate() {
                    for piece in entry.pieces.iter().filter(|x| x.param == p) {
                        let (lo, hi) = (piece.start.max(start), (piece.start + piece.len).min(start + len));
                        if lo >= hi {
                            continue;
                        }
                        let Some(values) = files[rank].read(&key, lo - piece.start, hi - lo)? else { continue };
                        out[lo - start..hi - start].copy_from_slice(&values);
                        covered += hi - lo;
                        any = true;
                    }
                }
                if !any {
                    return Ok(None);
                }
                ensure!(covered == len, "{key}: the shards cover {covered} of the {len} elements asked for");
                Ok(Some(out))
            }
        }
    }
}

/// Loads a saved state (any world size) into a full, unsharded optimiser over `params`.
pub fn restore_whole(opt: &mut Optimizer, params: &[(String, candle_core::Var)], source: &StateSource, device: &Device) -> Result<()> {
    let steps = source.steps();
    let mut tensors = HashMap::new();
    for (name, var) in params {
        for suffix in MOMENT_SUFFIXES {
            if let Some(v) = source.read(name, suffix, 0, var.elem_count())? {
                tensors.insert(format!("{name}.{suffix}"), Tensor::from_vec(v, var.shape(), device)?);
            }
        }
    }
    opt.restore(OptimizerMeta { settings: source.settings(), steps }, tensors)
}

/// Loads a saved state (any world size) into this rank's shards: each piece reads only the
/// element range it covers.
pub fn restore_sharded(opt: &mut ShardedOptimizer, source: &StateSource, device: &Device) -> Result<()> {
    let saved: HashMap<String, u64> = source.steps().into_iter().collect();
    let layout = opt.layout().clone();
    let names: Vec<&str> = layout.params.iter().map(|p| p.name.as_str()).collect();
    let unknown: Vec<&String> = saved.keys().filter(|n| !names.contains(&n.as_str())).collect();
    if let Some(first) = unknown.first() {
        bail!("the saved optimiser state has parameter {first}, which the model does not");
    }
    let mut steps = Vec::new();
    let mut tensors = HashMap::new();
    for piece in layout.rank_pieces(opt.rank()) {
        let name = &layout.params[piece.param].name;
        let step = *saved.get(name).with_context(|| format!("the saved optimiser state has no parameter {name}"))?;
        steps.push((name.clone(), step));
        for suffix in MOMENT_SUFFIXES {
            if let Some(v) = source.read(name, suffix, piece.start, piece.len)? {
                tensors.insert(format!("{name}.{suffix}"), Tensor::from_vec(v, piece.len, device)?);
            }
        }
    }
    opt.inner_mut().restore(OptimizerMeta { settings: source.settings(), steps }, tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::zero::ShardGrads;
    use crate::train::optim::{Algorithm, Grads};
    use candle_core::Var;

    fn settings() -> OptimizerSettings {
        OptimizerSettings { algorithm: Algorithm::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 }, weight_decay: 0.1, decay_embeddings: false }
    }

    fn params(dev: &Device) -> Vec<(String, Var)> {
        [("model.embed_tokens.weight", vec![64usize, 8]), ("model.layers.0.mlp.up_proj.weight", vec![40, 8]), ("model.norm.weight", vec![8])]
            .into_iter()
            .enumerate()
            .map(|(i, (n, s))| {
                let numel: usize = s.iter().product();
                let v: Vec<f32> = (0..numel).map(|k| ((k * 7 + i) % 11) as f32 * 0.1).collect();
                (n.to_string(), Var::from_tensor(&Tensor::from_vec(v, s.as_slice(), dev).unwrap()).unwrap())
            })
            .collect()
    }

    /// Saves the state of `world` simulated ranks (each stepped with the same full
    /// gradients, as after a reduce-scatter) and returns the directory.
    fn save_simulated(world: usize, dir: &Path) {
        let dev = Device::Cpu;
        let full = params(&dev);
        let shapes: Vec<(String, Vec<usize>)> = full.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
        let layout = ShardLayout::new(&shapes, world).unwrap();
        let grads = Grads::from_tensors(full.iter().map(|(n, v)| (n.clone(), Some(v.as_tensor().affine(0.5, 0.1).unwrap()))).collect());
        let mut metas = Vec::new();
        for rank in 0..world {
            let mut opt = ShardedOptimizer::new(layout.clone(), rank, &full, settings()).unwrap();
            // The rank's shard of the full gradient, as a reduce-scatter would leave it.
            let mut shards = ShardGrads::new(&layout);
            for (u, unit) in layout.units.iter().enumerate() {
                let refs: Vec<Option<&Tensor>> = unit.params.clone().map(|p| grads.entries()[p].1.as_ref()).collect();
                let flat = layout.flatten_unit(u, &refs, &grads.entries()[0].1.clone().unwrap()).unwrap();
                let r = layout.shard_range(u, rank);
                shards.set_unit(u, flat.narrow(0, r.start, r.len()).unwrap());
            }
            let pieces = opt.piece_grads(&shards).unwrap();
            opt.step(&pieces, 1e-2).unwrap();
            opt.step(&pieces, 1e-2).unwrap();
            metas.push(write_rank_shard(dir, &opt).unwrap());
        }
        let index = build_index(&layout, 1, settings(), &metas).unwrap();
        write_index(dir, &index).unwrap();
        write_complete_marker(dir, world).unwrap();
    }

    #[test]
    fn a_state_saved_at_three_ranks_reads_back_at_one_and_two() {
        let dev = Device::Cpu;
        let three = tempfile::tempdir().unwrap();
        save_simulated(3, three.path());
        let one = tempfile::tempdir().unwrap();
        save_simulated(1, one.path());
        assert!(is_complete_sharded(three.path()));
        let a = StateSource::open(three.path()).unwrap();
        let b = StateSource::open(one.path()).unwrap();
        assert_eq!(a.world_size(), 3);
        for (name, var) in params(&dev) {
            for suffix in ["exp_avg", "exp_avg_sq"] {
                let x = a.read(&name, suffix, 0, var.elem_count()).unwrap().unwrap();
                let y = b.read(&name, suffix, 0, var.elem_count()).unwrap().unwrap();
                assert_eq!(x, y, "{name}.{suffix}: resharding moves bytes, it computes nothing");
            }
            assert_eq!(a.read(&name, "momentum_buffer", 0, 1).unwrap(), None);
        }
        // Into two ranks' shards, and into a whole optimiser.
        let full = params(&dev);
        let shapes: Vec<(String, Vec<usize>)> = full.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
        for rank in 0..2 {
            let mut opt = ShardedOptimizer::new(ShardLayout::new(&shapes, 2).unwrap(), rank, &full, settings()).unwrap();
            restore_sharded(&mut opt, &a, &dev).unwrap();
            assert!(opt.meta().steps.iter().all(|(_, s)| *s == 2));
        }
        let mut whole = Optimizer::new(&full, settings()).unwrap();
        restore_whole(&mut whole, &full, &a, &dev).unwrap();
        let from_one: HashMap<String, Tensor> = {
            let mut w = Optimizer::new(&full, settings()).unwrap();
            restore_whole(&mut w, &full, &b, &dev).unwrap();
            w.state_tensors().into_iter().collect()
        };
        for (k, t) in whole.state_tensors() {
            assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), from_one[&k].flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{k}");
        }
    }

    #[test]
    fn without_the_marker_the_state_is_not_complete() {
        let dir = tempfile::tempdir().unwrap();
        save_simulated(2, dir.path());
        std::fs::remove_file(dir.path().join(SHARDS_DIR).join(COMPLETE_FILE)).unwrap();
        assert!(!is_complete_sharded(dir.path()));
        save_simulated(2, dir.path());
        std::fs::remove_file(dir.path().join(SHARDS_DIR).join(rank_file(1))).unwrap();
        assert!(!is_complete_sharded(dir.path()), "a missing rank file");
    }
}
