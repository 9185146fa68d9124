//! Cross-entropy of the language-model head without the full `[N, V]` f32 logits.
//!
//! Forward: logits are made one vocabulary chunk at a time (`hidden @ W[c0..c1]^T`, a cuBLAS
//! matmul on a GPU), folded into a running log-sum-exp, and dropped. Backward: each chunk's
//! logits are made again and turned into `dlogits = (softmax - onehot) * g` by one fused op,
//! which feeds `dhidden += dlogits @ W_chunk` and `dW_chunk = dlogits^T @ hidden`.
//! Peak extra memory is one chunk of f32 logits (`N * chunk * 4` bytes) instead of `N * V * 4`.
//!
//! The op is an identity custom op over the detached loss whose backward does the chunked
//! pass above, so it works on any device the matmuls run on.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::host::{check_float, from_f32_vec, tensor_f32_cpu, tensor_u32_cpu, to_f32_vec};

/// Per-token negative log-likelihood `[N]` (f32) of `targets` (`[N]` u32) under
/// `hidden @ weight^T` (`hidden` `[N, H]`, `weight` `[V, H]`, one dtype), computed over
/// vocabulary chunks of `chunk_size`. Gradients flow to `hidden` and `weight`.
pub fn chunked_cross_entropy(hidden: &Tensor, weight: &Tensor, targets: &Tensor, chunk_size: usize) -> Result<Tensor> {
    check_float(hidden.dtype(), "cross-entropy hidden states")?;
    let (n, h) = hidden.dims2()?;
    let (vocab, wh) = weight.dims2()?;
    if wh != h || weight.dtype() != hidden.dtype() {
        bail!("cross-entropy: lm_head {:?} {:?} does not fit hidden {:?} {:?}", weight.dims(), weight.dtype(), hidden.dims(), hidden.dtype())
    }
    if targets.dims() != [n] || targets.dtype() != DType::U32 {
        bail!("cross-entropy: targets must be [{n}] u32, got {:?} {:?}", targets.dims(), targets.dtype())
    }
    if chunk_size == 0 {
        bail!("cross-entropy: chunk_size must be positive")
    }
    if n == 0 {
        return Tensor::zeros(0, DType::F32, hidden.device());
    }
    let top = targets.max(0)?.to_scalar::<u32>()? as usize;
    if top >= vocab {
        bail!("cross-entropy: target id {top} is outside the vocabulary of {vocab}")
    }
    let (hidden, weight, targets) = (hidden.contiguous()?, weight.contiguous()?, targets.contiguous()?);
    let (lse, target_logit) = chunked_lse((&hidden.detach(), &weight.detach()), &targets, chunk_size)?;
    let loss = (&lse - target_logit)?.contiguous()?;
    let op = ChunkedCrossEntropy { targets, lse, chunk_size };
    hidden.apply_op3(&weight, &loss, op)
}

/// Running log-sum-exp over vocabulary chunks, and the target's logit, both `[N]` f32.
fn chunked_lse((hidden, weight): (&Tensor, &Tensor), targets: &Tensor, chunk: usize) -> Result<(Tensor, Tensor)> {
    let vocab = weight.dim(0)?;
    let targets_f = targets.to_dtype(DType::F32)?;
    let mut state: Option<(Tensor, Tensor, Tensor)> = None; // (max, sum of exp(x - max), target logit)
    for c0 in (0..vocab).step_by(chunk) {
        let len = chunk.min(vocab - c0);
        let logits = chunk_logits(hidden, weight, c0, len)?;
        let cmax = logits.max_keepdim(D::Minus1)?;
        let csum = logits.broadcast_sub(&cmax)?.exp()?.sum_keepdim(D::Minus1)?;
        // This chunk's logit of each target that falls inside it (0 elsewhere).
        let local = (&targets_f - c0 as f64)?;
        let inside = local.ge(0f64)?.mul(&local.lt(len as f64)?)?;
        let idx = local.clamp(0f64, (len - 1) as f64)?.to_dtype(DType::U32)?.unsqueeze(1)?;
        let picked = logits.gather(&idx, 1)?.squeeze(1)?;
        let picked = inside.where_cond(&picked, &picked.zeros_like()?)?;
        state = Some(match state {
            None => (cmax, csum, picked),
            Some((m, s, t)) => {
                let m_new = m.maximum(&cmax)?;
                let s = ((s * (&m - &m_new)?.exp()?)? + (csum * (&cmax - &m_new)?.exp()?)?)?;
                (m_new, s, (t + picked)?)
            }
        });
    }
    let Some((m, s, t)) = state else { bail!("cross-entropy: empty vocabulary") };
    Ok(((m + s.log()?)?.squeeze(1)?, t))
}

/// `hidden @ weight[c0..c0+len]^T` in the compute dtype, as f32 `[N, len]`.
fn chunk_logits(hidden: &Tensor, weight: &Tensor, c0: usize, len: usize) -> Result<Tensor> {
    hidden.matmul(&weight.narrow(0, c0, len)?.t()?)?.to_dtype(DType::F32)
}

/// Identity on the detached loss; the backward does the chunked pass.
struct ChunkedCrossEntropy {
    targets: Tensor,
    lse: Tensor,
    chunk_size: usize,
}

impl CustomOp3 for ChunkedCrossEntropy {
    fn name(&self) -> &'static str {
        "cpt-chunked-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        loss: &CpuStorage,
        loss_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(to_f32_vec(loss, loss_l, "cross-entropy loss")?), loss_l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        loss: &candle_core::CudaStorage,
        loss_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((loss.try_clone(loss_l)?, loss_l.shape().clone()))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        _loss: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (hidden, weight) = (hidden.detach(), weight.detach());
        let grad = grad.to_dtype(DType::F32)?.contiguous()?;
        let vocab = weight.dim(0)?;
        let mut dhidden: Option<Tensor> = None;
        let mut dweight = Vec::with_capacity(vocab.div_ceil(self.chunk_size));
        for c0 in (0..vocab).step_by(self.chunk_size) {
            let len = self.chunk_size.min(vocab - c0);
            let logits = chunk_logits(&hidden, &weight, c0, len)?;
            let softmax_grad = SoftmaxGrad {
                lse: self.lse.clone(),
                targets: self.targets.clone(),
                grad: grad.clone(),
                c0,
                dtype: hidden.dtype(),
            };
            let dlogits = logits.apply_op1_no_bwd(&softmax_grad)?;
            let wc = weight.narrow(0, c0, len)?;
            let dh = dlogits.matmul(&wc)?.to_dtype(DType::F32)?;
            dhidden = Some(match dhidden {
                None => dh,
                Some(acc) => (acc + dh)?,
            });
            dweight.push(dlogits.t()?.matmul(&hidden)?);
        }
        let Some(dhidden) = dhidden else { bail!("cross-entropy: empty vocabulary") };
        let dweight = Tensor::cat(&dweight, 0)?;
        Ok((Some(dhidden.to_dtype(hidden.dtype())?), Some(dweight), None))
    }
}

/// `(exp(logits - lse) - onehot(targets - c0)) * grad` for one chunk `[N, C]` of f32 logits,
/// written in the compute dtype.
struct SoftmaxGrad {
    lse: Tensor,
    targets: Tensor,
    grad: Tensor,
    c0: usize,
    dtype: DType,
}

impl CustomOp1 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "cpt-cross-entropy-softmax-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let logits = to_f32_vec(s, l, "cross-entropy logits")?;
        let lse = tensor_f32_cpu(&self.lse, "cross-entropy lse")?;
        let targets = tensor_u32_cpu(&self.targets, "cross-entropy targets")?;
        let grad = tensor_f32_cpu(&self.grad, "cross-entropy gradient")?;
        let (_, c) = l.shape().dims2()?;
        let mut out = vec![0f32; logits.len()];
        out.par_chunks_mut(c).zip(logits.par_chunks(c)).enumerate().for_each(|(n, (orow, lrow))| {
            for (j, (o, x)) in orow.iter_mut().zip(lrow).enumerate() {
                let onehot = if targets[n] as usize == self.c0 + j { 1.0 } else { 0.0 };
                *o = ((x - lse[n]).exp() - onehot) * grad[n];
            }
        });
        Ok((from_f32_vec(out, self.dtype)?, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        use candle_core::backend::BackendStorage;
        let dev = s.device().clone();
        let (n, c) = l.shape().dims2()?;
        let out = cuda::zeros(&dev, self.dtype, n * c)?;
        let args = [
            cuda::ptr(s, l)?,
            cuda::with_storage(&self.lse, "cross-entropy lse", cuda::ptr)?,
            cuda::with_storage(&self.targets, "cross-entropy targets", cuda::ptr)?,
            cuda::with_storage(&self.grad, "cross-entropy gradient", cuda::ptr)?,
            cuda::ptr_all(&out)?,
            Arg::I64(n as i64),
            Arg::I32(c as i32),
            Arg::I32(self.c0 as i32),
        ];
        let name = format!("ce_chunk_grad_{}", cuda::suffix(self.dtype)?);
        cuda::launch(&dev, &cuda::ELEMENTWISE, &name, cuda::grid_1d(n * c, 256), &args)?;
        Ok((out, l.shape().clone()))
    }
}
