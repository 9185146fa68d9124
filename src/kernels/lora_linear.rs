//! A linear layer with a frozen weight and a LoRA adapter as one autograd op:
//! `y = x W^T (+ b) + s · (drop(x) A^T) B^T`, with gradients for x, A and B only.
//!
//! Written with candle's ops, the adapter's term keeps every intermediate alive until the
//! backward (a node holds its inputs): the dropout mask and the dropped input (`[.., in]`
//! each), the base output, B's output, the scaled term and the sum (`[.., out]` each), where a
//! full-training linear layer keeps one output. On all seven projections that is several
//! times a layer's own activations. This op keeps its output and the rank-r product
//! `u = drop(x) A^T`; the backward draws the dropout mask again (a pure function of the draw
//! and the site) instead of keeping it.
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::precomputed::Precomputed;
use crate::model::lora::dropout::DropoutDraw;
use crate::model::ops;

/// The adapter's side of [`lora_linear`]: A `[r, in]` and B `[out, r]` in the compute dtype
/// (cast from their f32 masters, so the cast carries the gradient back), the scaling, and the
/// dropout of this forward with the site's key.
pub struct Adapter<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub scaling: f64,
    pub dropout: Option<(DropoutDraw, u64)>,
}

/// `ops::linear(x, w, bias) + scaling · ops::linear(ops::linear(drop(x), a), b)` with no
/// gradient for the frozen `w` and `bias` (x `[.., in]`, w `[out, in]`).
pub fn lora_linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, adapter: Adapter<'_>) -> Result<Tensor> {
    if w.track_op() || bias.is_some_and(|b| b.track_op()) {
        bail!("lora_linear: the base weight and bias must be frozen (they would get no gradient)")
    }
    let Adapter { a, b, scaling, dropout } = adapter;
    let drop = Dropout(dropout);
    let xd = x.detach();
    let u = ops::linear(&drop.apply(&xd)?, &a.detach(), None)?;
    let y = (ops::linear(&xd, w, bias)? + ops::linear(&u, &b.detach(), None)?.affine(scaling, 0.0)?)?;
    if !(x.track_op() || a.track_op() || b.track_op()) {
        return Ok(y);
    }
    let op = LoraLinear { w: w.clone(), scaling, drop, u, output: Precomputed::new("lora-linear", y.contiguous()?) };
    x.apply_op3(a, b, op)
}

/// The dropout of one forward at one site (none: identity).
#[derive(Clone, Copy)]
struct Dropout(Option<(DropoutDraw, u64)>);

impl Dropout {
    /// `t` times the mask (and 1/(1-p)): the dropped input forwards, its gradient backwards.
    fn apply(&self, t: &Tensor) -> Result<Tensor> {
        match self.0 {
            Some((draw, site)) => draw.apply(t, site),
            None => Ok(t.clone()),
        }
    }
}

struct LoraLinear {
    w: Tensor,
    scaling: f64,
    drop: Dropout,
    /// drop(x) A^T `[.., r]`, for B's gradient.
    u: Tensor,
    output: Precomputed,
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "cpt-lora-linear"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.output.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.output.cuda()
    }

    /// The gradients candle's autograd takes through the composed ops. Only inputs that
    /// depend on a variable get one: candle would keep any other (the first layer's input
    /// under frozen embeddings) until the step ends. The arithmetic runs on detached inputs:
    /// a gradient computed from a tracked tensor records a graph, and the variables'
    /// gradients would keep its intermediates (the dropped input, the scaled output
    /// gradient) alive until the step ends.
    fn bwd(&self, x: &Tensor, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (track_x, track_a, track_b) = (x.track_op(), a.track_op(), b.track_op());
        let (x, a, b) = (x.detach(), a.detach(), b.detach());
        let (in_f, out_f, r) = (a.dim(1)?, b.dim(0)?, a.dim(0)?);
        let rows = grad.elem_count() / out_f;
        let g = grad.reshape((rows, out_f))?;
        let gs = g.affine(self.scaling, 0.0)?;
        let u = self.u.reshape((rows, r))?;
        // u B^T: B's gradient (gs^T u, as the transpose of u^T gs) and u's.
        let grad_b = match track_b {
            true => Some(u.t()?.matmul(&gs)?.t()?),
            false => None,
        };
        let grad_u = gs.matmul(&b)?;
        // drop(x) A^T: A's gradient needs the dropped input again.
        let grad_a = match track_a {
            true => Some(self.drop.apply(&x)?.reshape((rows, in_f))?.t()?.matmul(&grad_u)?.t()?),
            false => None,
        };
        let grad_x = match track_x {
            true => {
                let lora = self.drop.apply(&grad_u.matmul(&a)?)?;
                let base = ops::linear(&g, &self.w.t()?, None)?;
                Some((base + lora)?.reshape(x.shape())?)
            }
            false => None,
        };
        Ok((grad_x, grad_a, grad_b))
    }
}
