//! The composed attention softmax of `model::ops` (`scores + mask`, then max, subtract, exp,
//! sum, divide) as one CPU op with the same bits.
//!
//! The composition makes about five `[B, H, T, S]` tensors in the forward and a dozen in the
//! backward (each backward contribution is a zero tensor plus the gradient in candle's
//! autograd). This op does the same f32 operations in the same order, row by row, saving
//! `e = exp(x - max)` and the row sum:
//!
//! - forward: `x = score + mask`, `m` = the first maximum of `x` (candle's reduce),
//!   `e = exp(x - m)`, `s` = candle's `vec_reduce_sum` of `e` (the routine its `sum_keepdim`
//!   calls), `p = e / s`;
//! - backward, for the upstream gradient `g` of a row, as candle's backward of the
//!   composition computes it: `de = 0 + g / s` (the division's numerator),
//!   `ds = 0 + sum(0 - (g * e) / (s * s))` (its broadcast divisor, summed with
//!   `vec_reduce_sum`), then `dx = 0 + (0 + (de + ds) * e)` (exp, then the subtraction of the
//!   detached max). The `0 + ...` accumulations turn a -0 into +0, so they are kept.
//!
//! `tests/kernels_cpu.rs` checks probabilities and gradients bit for bit against the
//! composition.

use std::sync::Mutex;

use candle_core::cpu::kernels::VecOps;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::host::tensor_f32_cpu;
use super::token_nll::for_each_row;

/// `softmax(scores + mask)` over the last dimension of f32 CPU `scores` `[B, H, T, S]`, with
/// an additive f32 `mask` broadcastable to it; gradients flow to `scores` (the mask is a
/// constant).
pub fn masked_softmax_cpu(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if scores.dtype() != DType::F32 || mask.dtype() != DType::F32 || !scores.device().is_cpu() || scores.rank() != 4 {
        bail!(
            "masked_softmax_cpu: expected f32 CPU [B, H, T, S] scores and an f32 mask, got {:?} {:?} and {:?}",
            scores.dims(),
            scores.dtype(),
            mask.dtype()
        )
    }
    // The mask is read through its broadcast strides: no [B, H, T, S] copy of it.
    let mask = mask.detach().broadcast_as(scores.shape())?;
    scores.contiguous()?.apply_op2(&mask, MaskedSoftmax::default())
}

/// The forward's per-row results the backward needs.
struct Saved {
    /// `exp(x - max)`, `[rows * len]`.
    exp: Vec<f32>,
    /// Per row, the sum of `exp`.
    sum: Vec<f32>,
}

#[derive(Default)]
struct MaskedSoftmax {
    saved: Mutex<Option<Saved>>,
}

/// Start of each `[.., T, S]` row of the mask viewed through `layout` (rank 4, unit stride
/// in the last dimension).
fn mask_row_offsets(layout: &Layout) -> Result<Vec<usize>> {
    let (dims, stride) = (layout.dims(), layout.stride());
    if dims.len() != 4 || (stride[3] != 1 && dims[3] > 1) {
        bail!("masked-softmax: expected a rank-4 mask with a unit last stride, got dims {dims:?} strides {stride:?}")
    }
    let mut offsets = Vec::with_capacity(dims[0] * dims[1] * dims[2]);
    for b in 0..dims[0] {
        for h in 0..dims[1] {
            for t in 0..dims[2] {
                offsets.push(layout.start_offset() + b * stride[0] + h * stride[1] + t * stride[2]);
            }
        }
    }
    Ok(offsets)
}

/// Scores `[rows * len]` and the mask row of each row -> what the backward needs, and the
/// probabilities.
fn forward(scores: &[f32], mask: &[f32], mask_rows: &[usize], len: usize) -> Result<(Saved, Vec<f32>)> {
    let rows = mask_rows.len();
    if scores.len() != rows * len || len == 0 {
        bail!("masked-softmax: {} scores for {rows} rows of {len}", scores.len())
    }
    let mut exp = vec![0f32; rows * len];
    let mut sum = vec![0f32; rows];
    for_each_row(&mut sum, &mut exp, len, |r, sum, e| {
        let xs = &scores[r * len..(r + 1) * len];
        let ms = &mask[mask_rows[r]..mask_rows[r] + len];
        for ((e, &x), &m) in e.iter_mut().zip(xs).zip(ms) {
            *e = x + m;
        }
        // candle's max: the running value is replaced when it is smaller.
        let mut max = e[0];
        for &v in e.iter() {
            if max < v {
                max = v;
            }
        }
        for e in e.iter_mut() {
            *e = (*e - max).exp();
        }
        // SAFETY: `e` holds `len` initialised values; `sum` is a valid f32.
        unsafe { <f32 as VecOps>::vec_reduce_sum(e.as_ptr(), sum, len) };
    });
    let mut probs = exp.clone();
    for_each_row(&mut sum.clone(), &mut probs, len, |_, s, p| {
        for p in p.iter_mut() {
            *p /= *s;
        }
    });
    Ok((Saved { exp, sum }, probs))
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((x0, x1)) = l1.contiguous_offsets() else { bail!("masked-softmax: expected contiguous scores") };
        let len = *l1.dims().last().expect("rank checked");
        let mask_rows = mask_row_offsets(l2)?;
        let (saved, probs) = forward(&s1.as_slice::<f32>()?[x0..x1], s2.as_slice::<f32>()?, &mask_rows, len)?;
        *self.saved.lock().expect("masked-softmax state") = Some(saved);
        Ok((CpuStorage::F32(probs), l1.shape().clone()))
    }

    fn bwd(&self, scores: &Tensor, mask: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let len = scores.dim(candle_core::D::Minus1)?;
        // The forward's values, or (for a second backward over the same graph) made again.
        let saved = match self.saved.lock().expect("masked-softmax state").take() {
            Some(saved) => saved,
            None => {
                let (storage, layout) = mask.storage_and_layout();
                let candle_core::Storage::Cpu(storage) = &*storage else { bail!("masked-softmax: expected a CPU mask") };
                let mask_rows = mask_row_offsets(layout)?;
                forward(&tensor_f32_cpu(scores, "masked-softmax scores")?, storage.as_slice::<f32>()?, &mask_rows, len)?.0
            }
        };
        let mut grads = tensor_f32_cpu(&grad_res.contiguous()?, "masked-softmax gradient")?;
        let Saved { exp, sum } = saved;
        // dx is written over the upstream gradient, row by row.
        let mut rows: Vec<(usize, f32)> = sum.into_iter().enumerate().collect();
        for_each_row(&mut rows, &mut grads, len, |_, (r, s), g| {
            let (r, s) = (*r, *s);
            let e = &exp[r * len..(r + 1) * len];
            let s2 = s * s;
            // The divisor's gradient, `0 - (g * e) / (s * s)`, summed over the row.
            let d_div: Vec<f32> = g.iter().zip(e).map(|(&g, &e)| 0.0 - (g * e) / s2).collect();
            let mut ds = 0f32;
            // SAFETY: `d_div` holds `len` initialised values; `ds` is a valid f32.
            unsafe { <f32 as VecOps>::vec_reduce_sum(d_div.as_ptr(), &mut ds, len) };
            let ds = 0.0 + ds;
            for (g, &e) in g.iter_mut().zip(e) {
                let de = (0.0 + *g / s) + ds;
                *g = 0.0 + (0.0 + de * e);
            }
        });
        Ok((Some(Tensor::from_vec(grads, scores.shape(), scores.device())?), None))
    }
}
