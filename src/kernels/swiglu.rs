//! SwiGLU as one op: `silu(gate) * up`. The backward writes `dgate` and `dup` in one pass
//! (into a `[2, ..]` buffer split afterwards).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::host::{check_float, from_f32_vec, to_f32_vec};

/// `silu(gate) * up` for two tensors of one shape and dtype.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    check_float(gate.dtype(), "swiglu input")?;
    if gate.dims() != up.dims() || gate.dtype() != up.dtype() {
        bail!("swiglu: gate {:?} {:?} and up {:?} {:?} differ", gate.dims(), gate.dtype(), up.dims(), up.dtype())
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

struct SwiGlu;

/// `[2, ..]`: `dgate` then `dup`, for upstream gradient `g`.
struct SwiGluBackward;

fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "cpt-swiglu"
    }

    fn cpu_fwd(&self, a_s: &CpuStorage, al: &Layout, b_s: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let a = to_f32_vec(a_s, al, "swiglu gate")?;
        let b = to_f32_vec(b_s, bl, "swiglu up")?;
        let y: Vec<f32> = a.par_iter().zip(b.par_iter()).map(|(&a, &b)| a * sigmoid(a) * b).collect();
        Ok((from_f32_vec(y, a_s.dtype())?, al.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        a_s: &candle_core::CudaStorage,
        al: &Layout,
        b_s: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        let dev = a_s.device().clone();
        let n = al.shape().elem_count();
        let out = cuda::zeros(&dev, a_s.dtype(), n)?;
        let name = format!("swiglu_fwd_{}", cuda::suffix(a_s.dtype())?);
        let args = [cuda::ptr(a_s, al)?, cuda::ptr(b_s, bl)?, cuda::ptr_all(&out)?, Arg::I64(n as i64)];
        cuda::launch(&dev, &cuda::ELEMENTWISE, &name, cuda::grid_1d(n, 256), &args)?;
        Ok((out, al.shape().clone()))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = a.apply_op3_no_bwd(b, &g.contiguous()?, &SwiGluBackward)?;
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

impl CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "cpt-swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        a_s: &CpuStorage,
        al: &Layout,
        b_s: &CpuStorage,
        bl: &Layout,
        g_s: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = to_f32_vec(a_s, al, "swiglu gate")?;
        let b = to_f32_vec(b_s, bl, "swiglu up")?;
        let g = to_f32_vec(g_s, gl, "swiglu gradient")?;
        let n = a.len();
        let mut out = vec![0f32; 2 * n];
        let (da, db) = out.split_at_mut(n);
        da.par_iter_mut().zip(db.par_iter_mut()).enumerate().for_each(|(i, (da, db))| {
            let s = sigmoid(a[i]);
            *da = g[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
            *db = g[i] * a[i] * s;
        });
        let mut dims = vec![2];
        dims.extend_from_slice(al.dims());
        Ok((from_f32_vec(out, a_s.dtype())?, Shape::from(dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        a_s: &candle_core::CudaStorage,
        al: &Layout,
        b_s: &candle_core::CudaStorage,
        bl: &Layout,
        g_s: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        let dev = a_s.device().clone();
        let n = al.shape().elem_count();
        let out = cuda::zeros(&dev, a_s.dtype(), 2 * n)?;
        let name = format!("swiglu_bwd_{}", cuda::suffix(a_s.dtype())?);
        let args =
            [cuda::ptr(a_s, al)?, cuda::ptr(b_s, bl)?, cuda::ptr(g_s, gl)?, cuda::ptr_all(&out)?, Arg::I64(n as i64)];
        cuda::launch(&dev, &cuda::ELEMENTWISE, &name, cuda::grid_1d(n, 256), &args)?;
        let mut dims = vec![2];
        dims.extend_from_slice(al.dims());
        Ok((out, Shape::from(dims)))
    }
}
