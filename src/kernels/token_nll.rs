//! The composed per-token NLL of `model::loss` as one CPU op with the same bits.
//!
//! The composed loss (`max`, `x - max`, `exp`, `sum`, `log`, `+ max`, `gather`, `-`) makes
//! about ten vocabulary-sized tensors per micro-batch in the forward and the backward (each
//! backward contribution is a zero tensor plus the gradient in candle's autograd), and the
//! logits are by far the largest activation of a small model. This op does the same f32
//! operations in the same order, row by row, with one saved `exp(x - max)`:
//!
//! - forward: `m` = the first maximum (candle's reduce), `e = exp(x - m)`, `s` = candle's
//!   `vec_reduce_sum` of `e` (the routine its `sum_keepdim` calls, so the same summation
//!   order), `nll = (ln(s) + m) - x[target]`;
//! - backward, for the upstream gradient `g` of a row: `dx = 0 + (0 + g / s) * e`, plus
//!   `(0 - g)` at the target, which is what candle's backward of the composition computes
//!   (its `0 + ...` accumulations turn a -0 into +0, so they are kept).
//!
//! `tests/kernels_cpu.rs` checks losses and gradients bit for bit against the composition.

use std::sync::Mutex;

use candle_core::cpu::kernels::VecOps;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::host::{tensor_f32_cpu, tensor_u32_cpu};

/// Per-token NLL `[..]` of `targets` (`[..]` u32) under f32 CPU `logits` (`[.., V]`);
/// gradients flow to `logits`.
pub fn token_nll_cpu(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.dtype() != DType::F32 || !logits.device().is_cpu() {
        bail!("token_nll_cpu: expected f32 CPU logits, got {:?} on {:?}", logits.dtype(), logits.device())
    }
    let rows = &logits.dims()[..logits.rank().saturating_sub(1)];
    if logits.rank() < 2 || targets.dims() != rows || targets.dtype() != DType::U32 {
        bail!("token_nll_cpu: logits {:?} need targets {rows:?} u32, got {:?} {:?}", logits.dims(), targets.dims(), targets.dtype())
    }
    logits.contiguous()?.apply_op2(&targets.contiguous()?, TokenNll::default())
}

/// The forward's per-row results the backward needs.
struct Saved {
    /// `exp(x - max)`, `[rows * vocab]`.
    exp: Vec<f32>,
    /// Per row, the sum of `exp`.
    sum: Vec<f32>,
    targets: Vec<u32>,
}

#[derive(Default)]
struct TokenNll {
    saved: Mutex<Option<Saved>>,
}

/// Rows in parallel when candle's matmul is (`RAYON_NUM_THREADS`, see `util::threads`), so a
/// one-thread run never wakes rayon's workers.
pub(crate) fn for_each_row<T: Send>(items: &mut [T], vocab_chunks: &mut [f32], vocab: usize, f: impl Fn(usize, &mut T, &mut [f32]) + Sync + Send) {
    if candle_core::utils::get_num_threads() > 1 {
        items.par_iter_mut().zip(vocab_chunks.par_chunks_mut(vocab)).enumerate().for_each(|(r, (item, row))| f(r, item, row));
    } else {
        items.iter_mut().zip(vocab_chunks.chunks_mut(vocab)).enumerate().for_each(|(r, (item, row))| f(r, item, row));
    }
}

/// `x` `[rows * vocab]` -> what the backward needs, and the per-row NLL.
fn forward(x: &[f32], targets: Vec<u32>, vocab: usize) -> Result<(Saved, Vec<f32>)> {
    let rows = targets.len();
    if x.len() != rows * vocab {
        bail!("token-nll: {} logits for {rows} rows of {vocab}", x.len())
    }
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("token-nll: target id {bad} is outside the vocabulary ({vocab})")
    }
    let mut exp = vec![0f32; rows * vocab];
    // Per row: (sum of exp, nll).
    let mut out = vec![(0f32, 0f32); rows];
    for_each_row(&mut out, &mut exp, vocab, |r, (sum, nll), e| {
        let xs = &x[r * vocab..(r + 1) * vocab];
        // candle's max: the running value is replaced when it is smaller.
        let mut max = xs[0];
        for &v in xs {
            if max < v {
                max = v;
            }
        }
        for (e, &v) in e.iter_mut().zip(xs) {
            *e = (v - max).exp();
        }
        let mut s = 0f32;
        // SAFETY: `e` holds `vocab` initialised values; `s` is a valid f32.
        unsafe { <f32 as VecOps>::vec_reduce_sum(e.as_ptr(), &mut s, vocab) };
        *sum = s;
        *nll = (s.ln() + max) - xs[targets[r] as usize];
    });
    let (sum, nll): (Vec<f32>, Vec<f32>) = out.into_iter().unzip();
    Ok((Saved { exp, sum, targets }, nll))
}

impl CustomOp2 for TokenNll {
    fn name(&self) -> &'static str {
        "token-nll"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (Some((x0, x1)), Some((t0, t1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            bail!("token-nll: expected contiguous inputs")
        };
        let vocab = *l1.dims().last().expect("rank checked");
        let (saved, nll) = forward(&s1.as_slice::<f32>()?[x0..x1], s2.as_slice::<u32>()?[t0..t1].to_vec(), vocab)?;
        *self.saved.lock().expect("token-nll state") = Some(saved);
        let dims = l1.dims();
        Ok((CpuStorage::F32(nll), Shape::from(&dims[..dims.len() - 1])))
    }

    fn bwd(&self, logits: &Tensor, targets: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let vocab = logits.dim(candle_core::D::Minus1)?;
        // The forward's values, or (for a second backward over the same graph) made again.
        let saved = match self.saved.lock().expect("token-nll state").take() {
            Some(saved) => saved,
            None => forward(&tensor_f32_cpu(logits, "token-nll logits")?, tensor_u32_cpu(targets, "token-nll targets")?, vocab)?.0,
        };
        let grads = tensor_f32_cpu(&grad_res.contiguous()?, "token-nll gradient")?;
        let Saved { mut exp, sum, targets } = saved;
        let mut rows: Vec<f32> = grads;
        // dx is written over the saved exp values, row by row.
        for_each_row(&mut rows, &mut exp, vocab, |r, g, e| {
            let g = 0.0 + *g;
            let scale = 0.0 + g / sum[r];
            for v in e.iter_mut() {
                *v = 0.0 + scale * *v;
            }
            let t = targets[r] as usize;
            e[t] += 0.0 - g;
        });
        Ok((Some(Tensor::from_vec(exp, logits.shape(), logits.device())?), None))
    }
}
