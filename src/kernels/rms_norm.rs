//! RMSNorm as one op: `y = x * rstd * w`, `rstd = 1 / sqrt(mean(x^2) + eps)` over the last
//! dimension, statistics in f32, one rounding on output. The backward gives `dx` and `dw`
//! (`dw` accumulated in f32).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::host::{check_float, from_f32_vec, to_f32_vec};

/// Rows per block of the CPU weight-gradient reduction.
const DW_ROWS_PER_BLOCK: usize = 64;

/// RMSNorm of `x` (`[.., H]`) with `weight` (`[H]`, cast to `x`'s dtype as the composed
/// op does; its gradient flows back through the cast).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    check_float(x.dtype(), "rms_norm input")?;
    let hidden = x.dim(candle_core::D::Minus1)?;
    if weight.dims() != [hidden] {
        bail!("rms_norm: weight shape {:?} does not match hidden size {hidden}", weight.dims())
    }
    let weight = weight.to_dtype(x.dtype())?.contiguous()?;
    x.contiguous()?.apply_op2(&weight, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

/// `dx` for upstream gradient `g`.
struct RmsNormBackwardX {
    eps: f32,
}

/// `dw` (f32, `[H]`) for upstream gradient `g`.
struct RmsNormBackwardW {
    eps: f32,
}

fn row_rstd(row: &[f32], eps: f32) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "cpt-rms-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = to_f32_vec(xs, xl, "rms_norm input")?;
        let w = to_f32_vec(ws, wl, "rms_norm weight")?;
        let cols = w.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(cols).zip(x.par_chunks(cols)).for_each(|(yr, xr)| {
            let rstd = row_rstd(xr, self.eps);
            for ((yv, xv), wv) in yr.iter_mut().zip(xr).zip(&w) {
                *yv = xv * rstd * wv;
            }
        });
        Ok((from_f32_vec(y, xs.dtype())?, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        let dev = xs.device().clone();
        let n = xl.shape().elem_count();
        let cols = wl.shape().elem_count();
        let out = cuda::zeros(&dev, xs.dtype(), n)?;
        let cfg = row_launch(n / cols);
        let name = format!("rmsnorm_fwd_{}", cuda::suffix(xs.dtype())?);
        let args =
            [cuda::ptr(xs, xl)?, cuda::ptr(ws, wl)?, cuda::ptr_all(&out)?, Arg::I32(cols as i32), Arg::F32(self.eps)];
        cuda::launch(&dev, &cuda::RMSNORM, &name, cfg, &args)?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &g, &RmsNormBackwardX { eps: self.eps })?;
        let dw = x.apply_op2_no_bwd(&g, &RmsNormBackwardW { eps: self.eps })?.to_dtype(w.dtype())?;
        Ok((Some(dx), Some(dw)))
    }
}

#[cfg(feature = "cuda")]
fn row_launch(rows: usize) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
    candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CustomOp3 for RmsNormBackwardX {
    fn name(&self) -> &'static str {
        "cpt-rms-norm-backward-x"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = to_f32_vec(xs, xl, "rms_norm input")?;
        let w = to_f32_vec(ws, wl, "rms_norm weight")?;
        let g = to_f32_vec(gs, gl, "rms_norm gradient")?;
        let cols = w.len();
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(cols).zip(x.par_chunks(cols).zip(g.par_chunks(cols))).for_each(|(dxr, (xr, gr))| {
            let rstd = row_rstd(xr, self.eps);
            let dot: f32 = xr.iter().zip(gr).zip(&w).map(|((x, g), w)| g * w * x).sum();
            let coef = rstd * rstd * rstd * dot / cols as f32;
            for i in 0..cols {
                dxr[i] = rstd * gr[i] * w[i] - xr[i] * coef;
            }
        });
        Ok((from_f32_vec(dx, xs.dtype())?, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        let dev = xs.device().clone();
        let n = xl.shape().elem_count();
        let cols = wl.shape().elem_count();
        let out = cuda::zeros(&dev, xs.dtype(), n)?;
        let name = format!("rmsnorm_bwd_dx_{}", cuda::suffix(xs.dtype())?);
        let args = [
            cuda::ptr(xs, xl)?,
            cuda::ptr(ws, wl)?,
            cuda::ptr(gs, gl)?,
            cuda::ptr_all(&out)?,
            Arg::I32(cols as i32),
            Arg::F32(self.eps),
        ];
        cuda::launch(&dev, &cuda::RMSNORM, &name, row_launch(n / cols), &args)?;
        Ok((out, xl.shape().clone()))
    }
}

impl CustomOp2 for RmsNormBackwardW {
    fn name(&self) -> &'static str {
        "cpt-rms-norm-backward-w"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = to_f32_vec(xs, xl, "rms_norm input")?;
        let g = to_f32_vec(gs, gl, "rms_norm gradient")?;
        let cols = xl.dims().last().copied().unwrap_or(1);
        // Fixed blocks of rows, their partial sums added in block order: the result does not
        // depend on how the thread pool splits the work (exact resume needs gradients that
        // are bit-identical run to run; rayon's fold/reduce tree is not).
        let block = cols * DW_ROWS_PER_BLOCK;
        let partials: Vec<Vec<f32>> = x
            .par_chunks(block)
            .zip(g.par_chunks(block))
            .map(|(xb, gb)| {
                let mut acc = vec![0f32; cols];
                for (xr, gr) in xb.chunks(cols).zip(gb.chunks(cols)) {
                    let rstd = row_rstd(xr, self.eps);
                    for i in 0..cols {
                        acc[i] += gr[i] * xr[i] * rstd;
                    }
                }
                acc
            })
            .collect();
        let mut dw = vec![0f32; cols];
        for partial in &partials {
            for (d, p) in dw.iter_mut().zip(partial) {
                *d += p;
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from(cols)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
        let dev = xs.device().clone();
        let n = xl.shape().elem_count();
        let cols = xl.dims().last().copied().unwrap_or(1);
        let rows = n / cols;
        let smem = cols * 4;
        if smem > 48 * 1024 {
            bail!("rms_norm backward: hidden size {cols} exceeds the CUDA kernel's limit of 12288")
        }
        // One partial row per block, then a fixed-order sum: no atomics, so the result is
        // bit-identical run to run.
        let blocks = rows.clamp(1, 256);
        let partials = cuda::zeros(&dev, candle_core::DType::F32, blocks * cols)?;
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let name = format!("rmsnorm_bwd_dw_{}", cuda::suffix(xs.dtype())?);
        let args = [
            cuda::ptr(xs, xl)?,
            cuda::ptr(gs, gl)?,
            cuda::ptr_all(&partials)?,
            Arg::I32(rows as i32),
            Arg::I32(cols as i32),
            Arg::F32(self.eps),
        ];
        cuda::launch(&dev, &cuda::RMSNORM, &name, cfg, &args)?;
        let out = cuda::zeros(&dev, candle_core::DType::F32, cols)?;
        let cfg = LaunchConfig { grid_dim: (cols.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let args = [cuda::ptr_all(&partials)?, cuda::ptr_all(&out)?, Arg::I32(blocks as i32), Arg::I32(cols as i32)];
        cuda::launch(&dev, &cuda::RMSNORM, "rmsnorm_dw_sum", cfg, &args)?;
        Ok((out, Shape::from(cols)))
    }
}
