//! `x W^T (+ b)` for a weight that is not trained (LoRA's frozen base): the backward returns
//! the input's gradient `g W` only. candle's matmul backward computes the gradient of both
//! operands whether or not one needs it, which for a frozen weight costs the weight-gradient
//! matmul and an f32 gradient of the weight's size, kept until the step ends.
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::precomputed::Precomputed;
use crate::model::ops;

/// `ops::linear(x, w, b)` with no gradient for `w` and `b` (x `[.., in]`, w `[out, in]`).
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = ops::linear(&x.detach(), w, b)?;
    if !x.track_op() {
        return Ok(y);
    }
    let op = FrozenLinear { w: w.clone(), output: Precomputed::new("frozen-linear", y.contiguous()?) };
    x.apply_op1(op)
}

struct FrozenLinear {
    w: Tensor,
    output: Precomputed,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "cpt-frozen-linear"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.output.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        self.output.cuda()
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // dL/dx = g W: a linear layer with the transposed weight.
        Ok(Some(ops::linear(grad, &self.w.t()?, None)?))
    }
}
