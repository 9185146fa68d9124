//! Forward and backward over one step's micro-batches, and the reduction of what they
//! produced into the step's gradients, loss and per-source losses.
//!
//! The two halves are apart on purpose: `forward_backward` leaves sums (of losses, of token
//! rows per source) and gradients already divided by the micro-batch count, so data-parallel
//! ranks can combine theirs before `LocalGradients::into_step` turns sums into means.
use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{DType, Var};

use super::batch::MicroBatch;
use super::optim::{GradAccumulator, Grads};
use crate::kernels::recompute::GradSink;
use crate::model::causal_lm::CausalLm;

/// What the micro-batches of one step produced on this process.
pub struct LocalGradients {
    /// Gradients of the trainable parameters, summed over micro-batches of
    /// `1 / micro_batches` x each micro-batch's gradient.
    pub grads: Grads,
    /// Sum of the micro-batches' mean token losses.
    pub loss_sum: f64,
    pub micro_batches: usize,
    /// Per source index: the sum of its rows' mean token losses, and the row count.
    pub source_sums: BTreeMap<usize, (f64, u64)>,
}

/// One step's gradients and losses, as the guard and the optimiser see them.
pub struct StepGradients {
    pub grads: Grads,
    /// Mean token loss of the step (the mean over micro-batches of their means).
    pub loss: f64,
    /// Mean token loss per source name, over the rows drawn from it.
    pub source_loss: BTreeMap<String, f64>,
}

/// Forward and backward of every micro-batch; gradients of `trainable` (the parameters the
/// optimiser updates) are accumulated, each micro-batch weighted `1 / batches.len()`.
pub fn forward_backward(model: &CausalLm, trainable: &[(String, Var)], batches: &[MicroBatch]) -> Result<LocalGradients> {
    let count = batches.len();
    let mut acc = GradAccumulator::new();
    let mut loss_sum = 0.0;
    let mut source_sums: BTreeMap<usize, (f64, u64)> = BTreeMap::new();
    for batch in batches {
        let sink = GradSink::new();
        let nll = model.token_nll(&batch.inputs, &batch.targets, Some(&batch.packing), Some(&sink))?;
        let loss = nll.mean_all()?;
        let row_means = nll.detach().mean(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        for (src, m) in batch.sources.iter().zip(row_means) {
            let e = source_sums.entry(*src).or_insert((0.0, 0));
            e.0 += m;
            e.1 += 1;
        }
        loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let mut grads = loss.backward()?;
        // Gradients of parameters inside recomputed layers (empty without recomputation).
        sink.merge_into(&mut grads)?;
        acc.add(trainable, &grads, 1.0 / count as f64)?;
    }
    Ok(LocalGradients { grads: acc.finish()?, loss_sum, micro_batches: count, source_sums })
}

impl LocalGradients {
    /// The step's means; `source_names` maps source indices to names.
    pub fn into_step(self, source_names: &[&str]) -> StepGradients {
        let source_loss =
            self.source_sums.into_iter().map(|(i, (sum, rows))| (source_names[i].to_string(), sum / rows as f64)).collect();
        StepGradients { grads: self.grads, loss: self.loss_sum / self.micro_batches as f64, source_loss }
    }
}
