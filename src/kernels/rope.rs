//! Rotary position embedding in the Hugging Face "rotate half" layout, as one op:
//! for `i < D/2`: `y[i] = x[i] cos - x[i + D/2] sin`, `y[i + D/2] = x[i + D/2] cos + x[i] sin`.
//! The backward is the inverse rotation (same op with `sin` negated).
//!
//! [`RopeTable`] precomputes cos/sin for every position from the model's inverse frequencies
//! (`crate::model::ops::rope_inv_freq`: default, linear or Llama-3 scaling); packed batches
//! gather rows by per-token positions. [`half_tables`] converts the model's own
//! `[B, 1, T, D]` tables instead.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::host::{check_float, from_f32_vec, to_f32_vec};

/// cos/sin for positions `0..max_positions`, `[max_positions, D/2]` f32 each.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RopeTable {
    /// The table for a model config, positions `0..max_positions`.
    pub fn for_config(cfg: &crate::model::config::ModelConfig, max_positions: usize, device: &Device) -> Result<Self> {
        Self::new(&crate::model::ops::rope_inv_freq(cfg), max_positions, 1.0, device)
    }

    /// `attention_scaling` multiplies cos and sin (1.0 except for YaRN-style configs).
    pub fn new(inv_freq: &[f32], max_positions: usize, attention_scaling: f32, device: &Device) -> Result<Self> {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for pos in 0..max_positions {
            for &f in inv_freq {
                // f32 product as in transformers (position_ids.float() @ inv_freq.float()).
                let angle = pos as f32 * f;
                cos.push(angle.cos() * attention_scaling);
                sin.push(angle.sin() * attention_scaling);
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_positions, half), device)?,
            sin: Tensor::from_vec(sin, (max_positions, half), device)?,
        })
    }

    /// Rows for per-token positions `[B, T]` (u32): cos, sin `[B, T, D/2]`.
    pub fn gather(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let max = self.cos.dim(0)?;
        let flat = positions.flatten_all()?;
        let top = flat.max(0)?.to_scalar::<u32>()? as usize;
        if top >= max {
            bail!("rope: position {top} is beyond the table's {max} positions")
        }
        let half = self.cos.dim(1)?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, t, half))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, t, half))?;
        Ok((cos, sin))
    }

    /// Rows for positions `0..t`, shared by the batch: cos, sin `[1, t, D/2]`.
    pub fn prefix(&self, t: usize) -> Result<(Tensor, Tensor)> {
        Ok((self.cos.narrow(0, 0, t)?.unsqueeze(0)?, self.sin.narrow(0, 0, t)?.unsqueeze(0)?))
    }
}

/// The model's cos/sin tables (`[B, 1, T, D]` f32, halves repeated, from
/// `crate::model::ops::rope_tables`) in this op's layout `[B, T, D/2]`. Do it once per
/// forward, not per layer.
pub fn half_tables(cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, one, _, d) = cos.dims4()?;
    if one != 1 || sin.dims() != cos.dims() {
        bail!("rope: expected [B, 1, T, D] tables, got {:?} and {:?}", cos.dims(), sin.dims())
    }
    let half = |t: &Tensor| -> Result<Tensor> { t.squeeze(1)?.narrow(2, 0, d / 2)?.to_dtype(DType::F32)?.contiguous() };
    Ok((half(cos)?, half(sin)?))
}

/// Rotates `x` (`[B, H, T, D]`) by `cos`, `sin` (`[B or 1, T, D/2]`, f32).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check_float(x.dtype(), "rope input")?;
    let (b, _h, t, d) = x.dims4()?;
    let (cb, ct, ch) = cos.dims3()?;
    if d % 2 != 0 || ct != t || ch != d / 2 || (cb != b && cb != 1) {
        bail!("rope: cos/sin shape {:?} does not fit input shape {:?}", cos.dims(), x.dims())
    }
    if sin.dims() != cos.dims() || cos.dtype() != DType::F32 || sin.dtype() != DType::F32 {
        bail!("rope: cos and sin must be f32 tensors of one shape")
    }
    x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope { sign: 1.0 })
}

struct Rope {
    /// +1: rotate by the angle; -1: rotate back (the backward).
    sign: f32,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "cpt-rope"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = to_f32_vec(xs, xl, "rope input")?;
        let cos = to_f32_vec(cs, cl, "rope cos")?;
        let sin = to_f32_vec(ss, sl, "rope sin")?;
        let (_b, h, t, d) = xl.shape().dims4()?;
        let half = d / 2;
        let cos_bstride = if cl.dims()[0] == 1 { 0 } else { t * half };
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d).zip(x.par_chunks(d)).enumerate().for_each(|(row, (yr, xr))| {
            let (pos, batch) = (row % t, row / (t * h));
            let base = batch * cos_bstride + pos * half;
            for i in 0..half {
                let (c, s) = (cos[base + i], self.sign * sin[base + i]);
                yr[i] = xr[i] * c - xr[i + half] * s;
                yr[i + half] = xr[i + half] * c + xr[i] * s;
            }
        });
        Ok((from_f32_vec(y, xs.dtype())?, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        cs: &candle_core::CudaStorage,
        cl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        let dev = xs.device().clone();
        let (_b, h, t, d) = xl.shape().dims4()?;
        let n = xl.shape().elem_count();
        let cos_bstride = if cl.dims()[0] == 1 { 0 } else { t * d / 2 };
        let out = cuda::zeros(&dev, xs.dtype(), n)?;
        let name = format!("rope_{}", cuda::suffix(xs.dtype())?);
        let args = [
            cuda::ptr(xs, xl)?,
            cuda::ptr(cs, cl)?,
            cuda::ptr(ss, sl)?,
            cuda::ptr_all(&out)?,
            Arg::I32(h as i32),
            Arg::I32(t as i32),
            Arg::I32(d as i32),
            Arg::I64(cos_bstride as i64),
            Arg::F32(self.sign),
            Arg::I64((n / 2) as i64),
        ];
        cuda::launch(&dev, &cuda::ELEMENTWISE, &name, cuda::grid_1d(n / 2, 256), &args)?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = g.contiguous()?.apply_op3_no_bwd(cos, sin, &Rope { sign: -self.sign })?;
        Ok((Some(dx), None, None))
    }
}
