//! Activation recomputation per block ("activation checkpointing").
//!
//! candle keeps every forward intermediate alive until the loss is dropped. [`recompute`]
//! runs a block's forward on a detached input, keeps only the block's output, and wraps it
//! in a custom op whose backward runs the block again on the saved input, backpropagates
//! the incoming gradient through that local graph, and returns the input's gradient.
//! Memory per block drops from all its intermediates to its input and output; compute rises
//! by one extra forward per block.
//!
//! A custom op can hand gradients back only to its own arguments, not to the parameters the
//! block reads. Those gradients go to a [`GradSink`]; after `loss.backward()`, call
//! [`GradSink::merge_into`] to add them to the step's `GradStore` before the optimiser runs.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, Var};

use super::precomputed::Precomputed;

type BlockFn = dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync;

/// Parameter gradients produced inside recomputed blocks during one backward pass.
#[derive(Clone, Default)]
pub struct GradSink {
    grads: Arc<Mutex<Vec<(Var, Tensor)>>>,
}

impl GradSink {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, var: &Var, grad: Tensor) -> Result<()> {
        let mut grads = self.grads.lock().map_err(|_| candle_core::Error::Msg("gradient sink poisoned".into()))?;
        if let Some(slot) = grads.iter_mut().find(|(v, _)| v.id() == var.id()) {
            slot.1 = (&slot.1 + grad)?;
        } else {
            grads.push((var.clone(), grad));
        }
        Ok(())
    }

    /// Adds the collected gradients to `store` (summing with any already there) and empties
    /// the sink.
    pub fn merge_into(&self, store: &mut GradStore) -> Result<()> {
        let mut grads = self.grads.lock().map_err(|_| candle_core::Error::Msg("gradient sink poisoned".into()))?;
        for (var, grad) in grads.drain(..) {
            let total = match store.get(var.as_tensor()) {
                Some(existing) => (existing + grad)?,
                None => grad,
            };
            store.insert(var.as_tensor(), total);
        }
        Ok(())
    }

    /// Number of parameters holding a gradient.
    pub fn len(&self) -> usize {
        self.grads.lock().map(|g| g.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A block whose forward can run twice (once for its output, again in the backward) and
/// whose parameters' gradients go somewhere of its choosing.
pub trait Block: Send + Sync {
    /// `x -> y`, returning the variables it read (their gradients are asked for).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Vec<Var>)>;
    /// The gradients of the variables of one recomputed forward, after its backward.
    fn param_grads(&self, grads: Vec<(Var, Tensor)>) -> Result<()>;
}

/// Runs `block(x)` keeping only its output; the backward recomputes the block.
/// `params` are the variables the block reads (their gradients go to `sink`).
/// The block must be deterministic (no dropout), as the recomputation must match.
pub fn recompute<F>(x: &Tensor, params: &[Var], sink: &GradSink, block: F) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
{
    let block: Arc<BlockFn> = Arc::new(block);
    // candle records an op only on a tracked input: an input that depends on no variable
    // (frozen embeddings under LoRA) becomes one, or the parameters would get no gradient.
    let x = if x.track_op() || params.is_empty() { x.clone() } else { Var::from_tensor(x)?.as_tensor().clone() };
    recompute_block(&x, Arc::new(FixedParams { block, params: params.to_vec(), sink: sink.clone() }))
}

/// As [`recompute`] for a [`Block`] that finds its parameters itself (e.g. gathers them
/// from other ranks for each run) and disposes of their gradients itself.
pub fn recompute_block(x: &Tensor, block: Arc<dyn Block>) -> Result<Tensor> {
    let (y, _) = block.forward(&x.detach())?;
    let op = Recompute { block, output: Precomputed::new("recompute", y.detach().contiguous()?) };
    x.apply_op1(op)
}

/// A block over a fixed set of variables whose gradients go to a [`GradSink`].
struct FixedParams {
    block: Arc<BlockFn>,
    params: Vec<Var>,
    sink: GradSink,
}

impl Block for FixedParams {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Vec<Var>)> {
        Ok(((self.block)(x)?, self.params.clone()))
    }

    fn param_grads(&self, grads: Vec<(Var, Tensor)>) -> Result<()> {
        for (var, g) in grads {
            self.sink.add(&var, g)?;
        }
        Ok(())
    }
}

struct Recompute {
    block: Arc<dyn Block>,
    /// The block's output, handed to candle once by the op's forward.
    output: Precomputed,
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "cpt-recompute"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.output.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        self.output.cuda()
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let x_var = Var::from_tensor(&x.detach())?;
        let (y, params) = self.block.forward(x_var.as_tensor())?;
        // d(sum(y * g))/dy = g: backpropagates exactly the incoming gradient.
        let grads = (y * grad.detach())?.sum_all()?.backward()?;
        let param_grads = params.iter().filter_map(|v| grads.get(v.as_tensor()).map(|g| (v.clone(), g.clone()))).collect();
        self.block.param_grads(param_grads)?;
        let dx = match grads.get(x_var.as_tensor()) {
            Some(g) => g.clone(),
            None => x.zeros_like()?,
        };
        Ok(Some(dx))
    }
}
