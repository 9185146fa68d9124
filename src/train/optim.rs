//! AdamW and SGD over f32 master parameters, with the exact semantics of
//! `torch.optim.AdamW` / `torch.optim.SGD` (single-tensor code path), global-norm clipping as
//! `torch.nn.utils.clip_grad_norm_`, gradient accumulation, per-parameter update masks
//! (frozen parameters, or only some rows such as new vocabulary entries), and a state that
//! saves to safetensors and restores bit for bit.
//!
//! Why not `candle_nn::AdamW`: it keeps moments in the parameter dtype, decays every tensor
//! and has no saveable state.
//!
//! AdamW has two implementations: `adamw_cpu` (one parameter at a time, on the CPU) and the
//! multi-tensor `kernels::adamw` (`kernels.mode: fused`, and the per-parameter update on a
//! GPU). They follow torch with different rounding orders, so a run keeps the one it started
//! with (the kernel mode is part of the config).
use anyhow::{bail, ensure, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use crate::kernels::adamw::{adamw_step, AdamWSlot, AdamWStep};
use crate::model::lora::peft::is_adapter_tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Which update rule, with its own hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Algorithm {
    /// torch.optim.AdamW: decoupled decay `p -= lr*wd*p`, bias correction, eps outside the sqrt.
    AdamW { beta1: f64, beta2: f64, eps: f64 },
    /// torch.optim.SGD with dampening 0: weight decay is added to the gradient (L2).
    Sgd { momentum: f64, nesterov: bool },
}

/// Settings shared by both algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSettings {
    pub algorithm: Algorithm,
    pub weight_decay: f64,
    /// Whether `embed_tokens` (input embeddings) are decayed. 1-D tensors (norm weights,
    /// biases) are never decayed.
    pub decay_embeddings: bool,
}

/// Which elements of a parameter the optimiser may change.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateMask {
    /// Normal training.
    All,
    /// Not updated at all; its gradient is dropped (as torch with `requires_grad=False`).
    Frozen,
    /// Only these rows (indices along dim 0, e.g. new vocabulary entries) change; the other
    /// rows keep their values and optimiser moments bit for bit.
    Rows(Vec<u32>),
}

/// Whether a parameter gets weight decay: never for 1-D tensors (norm weights, biases),
/// and for input embeddings only when `decay_embeddings` is set.
pub fn decays(name: &str, rank: usize, decay_embeddings: bool) -> bool {
    if rank < 2 {
        return false;
    }
    if name.ends_with("embed_tokens.weight") {
        return decay_embeddings;
    }
    true
}

/// The masks of a `freeze:` phase for parameters `names`: only the embeddings and
/// `lm_head` train (`Embeddings`), or only their rows listed in `new_rows` (`NewVocabRows`).
pub fn freeze_masks(
    names: &[String],
    target: crate::config::FreezeTarget,
    new_rows: &[u32],
) -> Result<Vec<(String, UpdateMask)>> {
    use crate::config::FreezeTarget;
    let mut trainable = 0;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let is_vocab = is_vocab(name);
        let mask = match (is_vocab, target) {
            // LoRA adapters are not base weights: they keep training through the phase.
            _ if is_adapter_tensor(name) => UpdateMask::All,
            (false, _) => UpdateMask::Frozen,
            (true, FreezeTarget::Embeddings) => UpdateMask::All,
            (true, FreezeTarget::NewVocabRows) => UpdateMask::Rows(new_rows.to_vec()),
        };
        trainable += is_vocab as usize;
        out.push((name.clone(), mask));
    }
    ensure!(trainable > 0, "freeze: the model has no trainable embed_tokens.weight or lm_head.weight parameter");
    Ok(out)
}

/// Gradients of the trainable parameters, in the parameters' order (None: no gradient).
#[derive(Debug, Clone)]
pub struct Grads {
    entries: Vec<(String, Option<Tensor>)>,
}

impl Grads {
    /// Take the f32 gradients of `params` out of a backward pass, multiplied by `scale`
    /// (use `1/grad_accum` or a token-count ratio when accumulating).
    pub fn from_store(params: &[(String, Var)], store: &GradStore, scale: f64) -> Result<Self> {
        let mut entries = Vec::with_capacity(params.len());
        for (name, var) in params {
            let grad = match store.get(var.as_tensor()) {
                Some(g) => {
                    let g = g.detach().to_dtype(DType::F32)?;
                    Some(if scale == 1.0 { g } else { g.affine(scale, 0.0)? })
                }
                None => None,
            };
            entries.push((name.clone(), grad));
        }
        Ok(Self { entries })
    }

    /// Build from explicit tensors (tests, tools).
    pub fn from_tensors(entries: Vec<(String, Option<Tensor>)>) -> Self {
        Self { entries }
    }

    pub fn entries(&self) -> &[(String, Option<Tensor>)] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).and_then(|(_, g)| g.as_ref())
    }

    /// Add another micro-batch's gradients (same parameter order).
    pub fn accumulate(&mut self, other: Grads) -> Result<()> {
        ensure!(self.entries.len() == other.entries.len(), "gradient sets of different parameter lists");
        for ((name, mine), (other_name, theirs)) in self.entries.iter_mut().zip(other.entries) {
            ensure!(*name == other_name, "gradient order mismatch: {name} vs {other_name}");
            *mine = match (mine.take(), theirs) {
                (Some(a), Some(b)) => Some((a + b)?),
                (a, b) => a.or(b),
            };
        }
        Ok(())
    }

    /// L2 norm over all gradients together (NaN or inf if any element is not finite).
    pub fn global_norm(&self) -> Result<f64> {
        let squares: Vec<Tensor> = self
            .entries
            .iter()
            .filter_map(|(_, g)| g.as_ref())
            .map(|g| g.sqr()?.sum_all())
            .collect::<candle_core::Result<_>>()?;
        if squares.is_empty() {
            return Ok(0.0);
        }
        // One device-to-host transfer for all parameters.
        let sums = Tensor::stack(&squares, 0)?.to_vec1::<f32>()?;
        Ok(sums.iter().map(|s| *s as f64).sum::<f64>().sqrt())
    }

    /// torch.nn.utils.clip_grad_norm_: scale all gradients by `max_norm / (norm + 1e-6)` when
    /// that is below 1. Returns the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        self.clip_to(norm, max_norm)?;
        Ok(norm)
    }

    /// The scaling of [`Grads::clip_global_norm`] for a norm computed elsewhere (the sum of
    /// every rank's shard when the gradients are sharded).
    pub fn clip_to(&mut self, norm: f64, max_norm: f64) -> Result<()> {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 && norm.is_finite() {
            // torch computes the coefficient in f32 before multiplying.
            let coef = coef as f32 as f64;
            for (_, g) in self.entries.iter_mut() {
                if let Some(t) = g {
                    *t = t.affine(coef, 0.0)?;
                }
            }
        }
        Ok(())
    }
}

/// Sums gradients over micro-batches: `add` after each backward, `finish` before the step.
#[derive(Default)]
pub struct GradAccumulator {
    sum: Option<Grads>,
    micro_batches: usize,
}

impl GradAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `scale` x the gradients in `store` (e.g. `scale = 1 / grad_accum`).
    pub fn add(&mut self, params: &[(String, Var)], store: &GradStore, scale: f64) -> Result<()> {
        let grads = Grads::from_store(params, store, scale)?;
        match &mut self.sum {
            Some(sum) => sum.accumulate(grads)?,
            None => self.sum = Some(grads),
        }
        self.micro_batches += 1;
        Ok(())
    }

    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The summed gradients; resets the accumulator.
    pub fn finish(&mut self) -> Result<Grads> {
        self.micro_batches = 0;
        self.sum.take().context("no micro-batch gradients were accumulated before the optimiser step")
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    mask: UpdateMask,
    /// u8 [rows, 1, ...] selecting updated rows, built from `mask` when it is `Rows`.
    row_select: Option<Tensor>,
    /// Steps this parameter has taken (torch keeps one per parameter).
    step: u64,
    /// AdamW exp_avg, or the SGD momentum buffer.
    first: Option<Tensor>,
    /// AdamW exp_avg_sq.
    second: Option<Tensor>,
}

/// Per-parameter step counts and settings: the JSON half of the saved state (the tensors go
/// to safetensors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerMeta {
    pub settings: OptimizerSettings,
    pub steps: Vec<(String, u64)>,
}

pub const STATE_TENSORS_FILE: &str = "optimizer.safetensors";
pub const STATE_META_FILE: &str = "optimizer.json";

/// The optimiser over a model's f32 master parameters.
pub struct Optimizer {
    settings: OptimizerSettings,
    slots: Vec<Slot>,
    /// Update every AdamW parameter in one multi-tensor call (`kernels::adamw`).
    multi_tensor: bool,
}

impl Optimizer {
    /// `params` are the model's trainable f32 master variables in a stable order.
    pub fn new(params: &[(String, Var)], settings: OptimizerSettings) -> Result<Self> {
        let mut slots = Vec::with_capacity(params.len());
        for (name, var) in params {
            ensure!(
                var.dtype() == DType::F32,
                "parameter {name} is {:?}; the optimiser needs f32 master weights",
                var.dtype()
            );
            slots.push(Slot {
                name: name.clone(),
                var: var.clone(),
                decay: decays(name, var.rank(), settings.decay_embeddings),
                mask: UpdateMask::All,
                row_select: None,
                step: 0,
                first: None,
                second: None,
            });
        }
        Ok(Self { settings, slots, multi_tensor: false })
    }

    /// Use the multi-tensor AdamW of `kernels::adamw` (on a GPU one kernel launch for all
    /// parameters) instead of one update per parameter. Parameters with a row mask keep the
    /// per-parameter path. Not bit-identical to it (another rounding order; both follow torch).
    pub fn set_multi_tensor(&mut self, multi_tensor: bool) {
        self.multi_tensor = multi_tensor;
    }

    pub fn settings(&self) -> &OptimizerSettings {
        &self.settings
    }

    /// Put a parameter in or out of the weight-decay group (for slices of parameters,
    /// whose own shape no longer tells).
    pub fn set_decay(&mut self, name: &str, decay: bool) -> Result<()> {
        let slot = self.slots.iter_mut().find(|s| s.name == name).with_context(|| format!("unknown parameter {name}"))?;
        slot.decay = decay;
        Ok(())
    }

    /// Whether the named parameter is in the weight-decay group.
    pub fn is_decayed(&self, name: &str) -> Option<bool> {
        self.slots.iter().find(|s| s.name == name).map(|s| s.decay)
    }

    /// Restrict (or release, with `UpdateMask::All`) the updates of one parameter.
    pub fn set_mask(&mut self, name: &str, mask: UpdateMask) -> Result<()> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.name == name)
            .with_context(|| format!("cannot mask unknown parameter {name}"))?;
        slot.row_select = match &mask {
            UpdateMask::Rows(rows) => Some(row_selector(&slot.var, rows).with_context(|| format!("mask of {name}"))?),
            _ => None,
        };
        slot.mask = mask;
        Ok(())
    }

    /// Names of the parameters, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// The `freeze:` phase of a config: of the base model's weights, only the embeddings and
    /// `lm_head` train (`Embeddings`), or only their rows listed in `new_rows`
    /// (`NewVocabRows`, after a vocabulary extension); every other base weight is frozen.
    /// LoRA adapters are not base weights and keep training. `clear_masks` ends the phase.
    pub fn freeze_for(&mut self, target: crate::config::FreezeTarget, new_rows: &[u32]) -> Result<()> {
        let names: Vec<String> = self.param_names().map(str::to_string).collect();
        for (name, mask) in freeze_masks(&names, target, new_rows)? {
            self.set_mask(&name, mask)?;
        }
        Ok(())
    }

    /// Every parameter back to `UpdateMask::All`.
    pub fn clear_masks(&mut self) {
        for slot in &mut self.slots {
            slot.mask = UpdateMask::All;
            slot.row_select = None;
        }
    }

    /// Drop gradients the masks exclude: frozen parameters lose theirs, row-masked ones keep
    /// only their selected rows. Call before clipping so the norm only counts what trains.
    pub fn apply_masks(&self, grads: &mut Grads) -> Result<()> {
        self.check_order(grads)?;
        for (slot, (_, grad)) in self.slots.iter().zip(grads.entries.iter_mut()) {
            match (&slot.mask, grad.as_ref()) {
                (UpdateMask::Frozen, _) => *grad = None,
                (UpdateMask::Rows(_), Some(g)) => {
                    let select = slot.row_select.as_ref().context("row mask without selector")?;
                    let zeros = g.zeros_like()?;
                    *grad = Some(select.broadcast_as(g.shape())?.where_cond(g, &zeros)?);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_order(&self, grads: &Grads) -> Result<()> {
        ensure!(
            grads.entries.len() == self.slots.len(),
            "{} gradients for {} parameters",
            grads.entries.len(),
            self.slots.len()
        );
        for (slot, (name, _)) in self.slots.iter().zip(&grads.entries) {
            ensure!(slot.name == *name, "gradient for {name} where {} was expected", slot.name);
        }
        Ok(())
    }

    /// One update with learning rate `lr`. Parameters without a gradient (or frozen) are
    /// left untouched, moments and step count included, as torch does.
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        self.check_order(grads)?;
        let settings = self.settings;
        let multi_tensor = self.multi_tensor && matches!(settings.algorithm, Algorithm::AdamW { .. });
        let mut group: Vec<(usize, Tensor)> = Vec::new();
        for (index, (slot, (_, grad))) in self.slots.iter_mut().zip(&grads.entries).enumerate() {
            let Some(grad) = grad else { continue };
            if slot.mask == UpdateMask::Frozen {
                continue;
            }
            let grad = grad.to_dtype(DType::F32)?;
            ensure!(
                grad.shape() == slot.var.shape(),
                "gradient of {} has shape {:?}, parameter {:?}",
                slot.name,
                grad.dims(),
                slot.var.dims()
            );
            if multi_tensor && slot.row_select.is_none() {
                group.push((index, grad.contiguous()?));
            } else {
                update_slot(slot, &grad, lr, settings)?;
            }
        }
        if !group.is_empty() {
            self.adamw_multi_tensor(&group, lr)?;
        }
        Ok(())
    }

    /// AdamW on every `(slot index, f32 gradient)` of `group` at once, in place
    /// (`kernels::adamw`: one kernel launch on a GPU).
    fn adamw_multi_tensor(&mut self, group: &[(usize, Tensor)], lr: f64) -> Result<()> {
        let Algorithm::AdamW { beta1, beta2, eps } = self.settings.algorithm else {
            bail!("the multi-tensor update is AdamW only")
        };
        let weight_decay = self.settings.weight_decay;
        // Zero moments where none exist yet (the same start as torch's lazily created state).
        for (index, grad) in group {
            let slot = &mut self.slots[*index];
            for moment in [&mut slot.first, &mut slot.second] {
                *moment = Some(match moment.take() {
                    Some(m) => m.contiguous()?,
                    None => grad.zeros_like()?,
                });
            }
        }
        let mut slots = Vec::with_capacity(group.len());
        for (index, grad) in group {
            let slot = &self.slots[*index];
            let (Some(exp_avg), Some(exp_avg_sq)) = (&slot.first, &slot.second) else {
                bail!("{}: AdamW moments missing", slot.name)
            };
            slots.push(AdamWSlot {
                param: slot.var.as_tensor(),
                grad,
                exp_avg,
                exp_avg_sq,
                weight_decay: if slot.decay { weight_decay } else { 0.0 },
                step: slot.step + 1,
            });
        }
        adamw_step(&slots, &AdamWStep { lr, beta1, beta2, eps }).context("multi-tensor AdamW update")?;
        // Counted only once the update happened (adamw_step checks every slot first).
        for (index, _) in group {
            self.slots[*index].step += 1;
        }
        Ok(())
    }

    /// The JSON half of the state: settings and per-parameter step counts.
    pub fn meta(&self) -> OptimizerMeta {
        OptimizerMeta { settings: self.settings, steps: self.slots.iter().map(|s| (s.name.clone(), s.step)).collect() }
    }

    /// The tensor half of the state, named `<param>.exp_avg`, `<param>.exp_avg_sq` (AdamW) or
    /// `<param>.momentum_buffer` (SGD).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let (first_name, second_name) = self.state_names();
        let mut out = Vec::new();
        for slot in &self.slots {
            if let Some(t) = &slot.first {
                out.push((format!("{}.{first_name}", slot.name), t.clone()));
            }
            if let Some(t) = &slot.second {
                out.push((format!("{}.{second_name}", slot.name), t.clone()));
            }
        }
        out
    }

    fn state_names(&self) -> (&'static str, &'static str) {
        match self.settings.algorithm {
            Algorithm::AdamW { .. } => ("exp_avg", "exp_avg_sq"),
            Algorithm::Sgd { .. } => ("momentum_buffer", "unused"),
        }
    }

    /// Write `optimizer.safetensors` and `optimizer.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self.state_tensors().into_iter().collect();
        let path = dir.join(STATE_TENSORS_FILE);
        candle_core::safetensors::save(&tensors, &path).with_context(|| format!("writing {}", path.display()))?;
        let meta_path = dir.join(STATE_META_FILE);
        let json = serde_json::to_vec_pretty(&self.meta())?;
        std::fs::write(&meta_path, json).with_context(|| format!("writing {}", meta_path.display()))?;
        Ok(())
    }

    /// Restore a state written by `save` into this optimiser (same parameters, same
    /// algorithm). Values come back bit for bit.
    pub fn load(&mut self, dir: &Path, device: &Device) -> Result<()> {
        let meta_path = dir.join(STATE_META_FILE);
        let text = std::fs::read_to_string(&meta_path).with_context(|| format!("reading {}", meta_path.display()))?;
        let meta: OptimizerMeta =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", meta_path.display()))?;
        let path = dir.join(STATE_TENSORS_FILE);
        let tensors = candle_core::safetensors::load(&path, device).with_context(|| format!("reading {}", path.display()))?;
        self.restore(meta, tensors).with_context(|| format!("restoring the optimiser from {}", dir.display()))
    }

    /// Restore from an already loaded meta + tensor map.
    pub fn restore(&mut self, meta: OptimizerMeta, mut tensors: HashMap<String, Tensor>) -> Result<()> {
        if std::mem::discriminant(&meta.settings.algorithm) != std::mem::discriminant(&self.settings.algorithm) {
            bail!(
                "saved state is for {:?} but the optimiser is {:?}",
                meta.settings.algorithm,
                self.settings.algorithm
            );
        }
        ensure!(
            meta.steps.len() == self.slots.len(),
            "saved state has {} parameters, the model {}",
            meta.steps.len(),
            self.slots.len()
        );
        let (first_name, second_name) = self.state_names();
        let adam = matches!(self.settings.algorithm, Algorithm::AdamW { .. });
        let sgd_momentum = matches!(self.settings.algorithm, Algorithm::Sgd { momentum, .. } if momentum != 0.0);
        let mut restored = Vec::with_capacity(self.slots.len());
        for (slot, (name, step)) in self.slots.iter().zip(&meta.steps) {
            ensure!(slot.name == *name, "saved state lists parameter {name} where the model has {}", slot.name);
            let mut take = |suffix: &str, required: bool| -> Result<Option<Tensor>> {
                let key = format!("{name}.{suffix}");
                match tensors.remove(&key) {
                    Some(t) => {
                        ensure!(
                            t.shape() == slot.var.shape() && t.dtype() == DType::F32,
                            "tensor {key}: {:?} {:?}, expected f32 {:?}",
                            t.dtype(),
                            t.dims(),
                            slot.var.dims()
                        );
                        Ok(Some(t))
                    }
                    None if required => bail!("tensor {key} is missing"),
                    None => Ok(None),
                }
            };
            let stepped = *step > 0;
            let first = take(first_name, stepped && (adam || sgd_momentum))?;
            let second = if adam { take(second_name, stepped)? } else { None };
            restored.push((*step, first, second));
        }
        if let Some(extra) = tensors.keys().next() {
            bail!("saved state has tensor {extra} that matches no parameter");
        }
        for (slot, (step, first, second)) in self.slots.iter_mut().zip(restored) {
            slot.step = step;
            slot.first = first;
            slot.second = second;
        }
        Ok(())
    }
}

/// The input embeddings or the output head (the tensors with vocabulary rows).
fn is_vocab(name: &str) -> bool {
    name.ends_with("embed_tokens.weight") || name.ends_with("lm_head.weight")
}

fn row_selector(var: &Var, rows: &[u32]) -> Result<Tensor> {
    ensure!(var.rank() >= 1, "a row mask needs a tensor with at least one dimension");
    let n = var.dims()[0];
    let mut select = vec![0u8; n];
    for &r in rows {
        let r = r as usize;
        ensure!(r < n, "row {r} is out of range for a tensor with {n} rows");
        select[r] = 1;
    }
    let mut shape = vec![1usize; var.rank()];
    shape[0] = n;
    Ok(Tensor::from_vec(select, shape, var.device())?)
}

/// One parameter's update (AdamW: `adamw_cpu` on the CPU, the `kernels::adamw` kernel on
/// other devices; SGD: tensor ops), honouring its row mask.
fn update_slot(slot: &mut Slot, grad: &Tensor, lr: f64, settings: OptimizerSettings) -> Result<()> {
    let old_param = slot.var.as_detached_tensor();
    let old_first = slot.first.clone();
    let old_second = slot.second.clone();
    slot.step += 1;
    let wd = if slot.decay { settings.weight_decay } else { 0.0 };
    let (param, first, second) = match settings.algorithm {
        Algorithm::AdamW { beta1, beta2, eps } if grad.device().is_cpu() => {
            let consts = AdamConsts::new(lr, wd, beta1, beta2, eps, slot.step);
            let (param, m, v) = adamw_cpu(&old_param, grad, slot.first.as_ref(), slot.second.as_ref(), consts)
                .with_context(|| format!("AdamW update of {}", slot.name))?;
            (param, Some(m), Some(v))
        }
        Algorithm::AdamW { beta1, beta2, eps } => {
            let hp = AdamWStep { lr, beta1, beta2, eps };
            let (param, m, v) = adamw_on_device(&old_param, grad, slot.first.as_ref(), slot.second.as_ref(), &hp, wd, slot.step)
                .with_context(|| format!("AdamW update of {}", slot.name))?;
            (param, Some(m), Some(v))
        }
        Algorithm::Sgd { momentum, nesterov } => {
            let d = if wd != 0.0 { (grad + old_param.affine(wd, 0.0)?)? } else { grad.clone() };
            let (d, buf) = if momentum != 0.0 {
                let buf = match &slot.first {
                    None => d.clone(),
                    Some(b) => (b.affine(momentum, 0.0)? + &d)?,
                };
                let d = if nesterov { (&d + buf.affine(momentum, 0.0)?)? } else { buf.clone() };
                (d, Some(buf))
            } else {
                (d, None)
            };
            let param = (&old_param - d.affine(lr, 0.0)?)?;
            (param, buf, None)
        }
    };
    let (param, first, second) = match &slot.row_select {
        Some(select) => {
            let keep = |new: Tensor, old: Option<Tensor>| -> Result<Tensor> {
                let old = match old {
                    Some(o) => o,
                    None => new.zeros_like()?,
                };
                Ok(select.broadcast_as(new.shape())?.where_cond(&new, &old)?)
            };
            (
                keep(param, Some(old_param))?,
                first.map(|f| keep(f, old_first)).transpose()?,
                second.map(|s| keep(s, old_second)).transpose()?,
            )
        }
        None => (param, first, second),
    };
    slot.var.set(&param).with_context(|| format!("updating {}", slot.name))?;
    slot.first = first;
    slot.second = second;
    Ok(())
}

/// The f32 constants of one AdamW update (f64 scalars rounded once to f32).
#[derive(Clone, Copy)]
struct AdamConsts {
    decay: Option<f32>,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    inv_bias2_sqrt: f32,
    eps: f32,
    step_size: f32,
}

impl AdamConsts {
    fn new(lr: f64, wd: f64, beta1: f64, beta2: f64, eps: f64, step: u64) -> Self {
        let step = step as i32;
        let bias1 = 1.0 - beta1.powi(step);
        let bias2_sqrt = (1.0 - beta2.powi(step)).sqrt();
        Self {
            decay: (wd != 0.0).then_some((1.0 - lr * wd) as f32),
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            inv_bias2_sqrt: (1.0 / bias2_sqrt) as f32,
            eps: eps as f32,
            step_size: (lr / bias1) as f32,
        }
    }
}

/// AdamW of one parameter on a device other than the CPU, through the `kernels::adamw`
/// kernel: it updates in place, so it works on copies (the caller's row mask needs the old
/// values). Returns the new parameter, exp_avg and exp_avg_sq.
fn adamw_on_device(
    param: &Tensor,
    grad: &Tensor,
    first: Option<&Tensor>,
    second: Option<&Tensor>,
    hp: &AdamWStep,
    weight_decay: f64,
    step: u64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let moment = |m: Option<&Tensor>| -> Result<Tensor> {
        Ok(match m {
            Some(m) => m.copy()?,
            None => grad.zeros_like()?,
        })
    };
    let (p, m, v) = (param.copy()?, moment(first)?, moment(second)?);
    let grad = grad.contiguous()?;
    let slot = AdamWSlot { param: &p, grad: &grad, exp_avg: &m, exp_avg_sq: &v, weight_decay, step };
    adamw_step(&[slot], hp)?;
    Ok((p, m, v))
}

/// The values of a contiguous f32 CPU tensor, borrowed from its storage guard.
fn cpu_slice<'a>(storage: &'a candle_core::Storage, layout: &candle_core::Layout) -> Result<&'a [f32]> {
    let candle_core::Storage::Cpu(cpu) = storage else { bail!("expected a CPU tensor") };
    let (start, end) = layout.contiguous_offsets().context("expected a contiguous tensor")?;
    Ok(&cpu.as_slice::<f32>()?[start..end])
}

/// The CPU AdamW: one parallel pass over the parameter, gradient and moments. Within 1e-7
/// of torch.optim.AdamW (`tests/optim_torch.rs`). Its f32 operations and their order are
/// those of the tensor-op formulation it replaced (`x * mul + 0.0` is candle's
/// `affine(mul, 0)`: it turns a -0 into +0), so runs and checkpoints keep their bits.
///
/// Why this one: it gives the same bits as the tensor-op formulation and took 1.4-2.9x less
/// wall time per step (five runs of `cargo bench --bench optim_step` at 42.1M parameters with
/// a variant timing both, on the shared 2-core machine at load 2-7: 266 vs 362, 356 vs 847,
/// 536 vs 1318, 760 vs 1674, 543 vs 1570 ms; user CPU 4.3 vs 9.0 s for eleven steps): the
/// tensor ops make about a dozen passes over memory, each allocating a new tensor.
fn adamw_cpu(
    param: &Tensor,
    grad: &Tensor,
    first: Option<&Tensor>,
    second: Option<&Tensor>,
    c: AdamConsts,
) -> Result<(Tensor, Tensor, Tensor)> {
    use rayon::prelude::*;
    let shape = param.shape().clone();
    let grad = grad.contiguous()?;
    // Read guards on the storages; all are dropped before the caller writes the parameter.
    let (p_store, p_layout) = param.storage_and_layout();
    let (g_store, g_layout) = grad.storage_and_layout();
    let m_guard = first.map(|t| t.storage_and_layout());
    let v_guard = second.map(|t| t.storage_and_layout());
    let p = cpu_slice(&p_store, p_layout)?;
    let g = cpu_slice(&g_store, g_layout)?;
    let m = m_guard.as_ref().map(|(s, l)| cpu_slice(s, l)).transpose()?;
    let v = v_guard.as_ref().map(|(s, l)| cpu_slice(s, l)).transpose()?;
    let n = p.len();
    ensure!(g.len() == n, "gradient has {} elements, parameter {n}", g.len());
    // Outputs written once, without zeroing them first (three parameter-sized passes less).
    let (mut p_out, mut m_out, mut v_out) = (Vec::<f32>::with_capacity(n), Vec::<f32>::with_capacity(n), Vec::<f32>::with_capacity(n));
    const CHUNK: usize = 1 << 14;
    p_out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(m_out.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .zip(v_out.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(chunk, ((po, mo), vo))| {
            let base = chunk * CHUNK;
            for i in 0..po.len() {
                let j = base + i;
                let gj = g[j];
                let mj = m.as_ref().map_or(0.0, |m| m[j]);
                let vj = v.as_ref().map_or(0.0, |v| v[j]);
                let pj = match c.decay {
                    Some(d) => p[j] * d + 0.0,
                    None => p[j],
                };
                let m_new = mj + ((gj - mj) * c.one_minus_beta1 + 0.0);
                let v_new = (vj * c.beta2 + 0.0) + ((gj * gj) * c.one_minus_beta2 + 0.0);
                let denom = v_new.sqrt() * c.inv_bias2_sqrt + c.eps;
                po[i].write(pj - ((m_new / denom) * c.step_size + 0.0));
                mo[i].write(m_new);
                vo[i].write(v_new);
            }
        });
    // SAFETY: the chunks cover 0..n, and every element of every chunk was written above.
    unsafe {
        p_out.set_len(n);
        m_out.set_len(n);
        v_out.set_len(n);
    }
    let dev = param.device();
    Ok((
        Tensor::from_vec(p_out, shape.clone(), dev)?,
        Tensor::from_vec(m_out, shape.clone(), dev)?,
        Tensor::from_vec(v_out, shape, dev)?,
    ))
}
