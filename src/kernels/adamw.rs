//! AdamW over many f32 tensors in one pass, with torch.optim.AdamW's arithmetic:
//!
//! ```text
//! p *= 1 - lr * wd
//! m  = m + (1 - b1) * (g - m)            (torch: exp_avg.lerp_(grad, 1 - b1))
//! v  = v * b2 + (1 - b2) * g * g
//! p += -(lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),   bc_k = 1 - b_k^step
//! ```
//!
//! On CUDA the whole group is one kernel launch (a chunk table maps blocks to tensors); on
//! CPU each tensor is updated in place by two in-place ops. Parameters, gradients and both
//! moments must be f32 and contiguous (the f32 master weights of mixed-precision training).

use candle_core::{bail, CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

/// Hyper-parameters shared by a group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// One parameter and its state. `weight_decay` is per tensor (0 for norms and biases);
/// `step` is this parameter's step count including the step being taken (from 1), as torch
/// keeps one per parameter.
#[derive(Debug, Clone, Copy)]
pub struct AdamWSlot<'a> {
    pub param: &'a Tensor,
    pub grad: &'a Tensor,
    pub exp_avg: &'a Tensor,
    pub exp_avg_sq: &'a Tensor,
    pub weight_decay: f64,
    pub step: u64,
}

/// The f32 scalars of one slot's step, computed in f64 as PyTorch computes them in Python.
#[derive(Debug, Clone, Copy)]
struct Scalars {
    w1: f32,
    beta2: f32,
    w2: f32,
    eps: f32,
    decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
}

impl Scalars {
    fn of(hp: &AdamWStep, slot: &AdamWSlot<'_>) -> Self {
        let bc1 = 1.0 - hp.beta1.powf(slot.step as f64);
        let bc2 = 1.0 - hp.beta2.powf(slot.step as f64);
        Self {
            w1: (1.0 - hp.beta1) as f32,
            beta2: hp.beta2 as f32,
            w2: (1.0 - hp.beta2) as f32,
            eps: hp.eps as f32,
            decay: (1.0 - hp.lr * slot.weight_decay) as f32,
            step_size: (hp.lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
        }
    }
}

/// Applies one AdamW step to every slot, in place.
pub fn adamw_step(slots: &[AdamWSlot<'_>], hp: &AdamWStep) -> Result<()> {
    for (i, s) in slots.iter().enumerate() {
        if s.step == 0 {
            bail!("adamw: slot {i}: step counts from 1")
        }
        for (what, t) in [("param", s.param), ("grad", s.grad), ("exp_avg", s.exp_avg), ("exp_avg_sq", s.exp_avg_sq)] {
            if t.dtype() != DType::F32 || !t.is_contiguous() || t.dims() != s.param.dims() {
                bail!("adamw: slot {i} {what} must be a contiguous f32 tensor of shape {:?}", s.param.dims())
            }
            if !t.device().same_device(s.param.device()) {
                bail!("adamw: slot {i} {what} is on another device")
            }
        }
    }
    #[cfg(feature = "cuda")]
    if let Some(first) = slots.first() {
        if first.param.device().is_cuda() {
            return cuda_step(slots, hp);
        }
    }
    for s in slots {
        let sc = Scalars::of(hp, s);
        s.exp_avg_sq.inplace_op2(s.grad, &SecondMoment { sc })?;
        s.exp_avg.inplace_op2(s.grad, &FirstMoment { sc })?;
        s.param.inplace_op3(s.exp_avg, s.exp_avg_sq, &ParamUpdate { sc })?;
    }
    Ok(())
}

/// `m = m + (1 - b1) * (g - m)`, in place on m.
struct FirstMoment {
    sc: Scalars,
}

impl InplaceOp2 for FirstMoment {
    fn name(&self) -> &'static str {
        "cpt-adamw-exp-avg"
    }

    fn cpu_fwd(&self, m: &mut CpuStorage, ml: &Layout, g: &CpuStorage, gl: &Layout) -> Result<()> {
        let (m, g) = (f32_mut(m, ml)?, f32_ref(g, gl)?);
        let w1 = self.sc.w1;
        m.par_iter_mut().zip(g.par_iter()).for_each(|(m, &g)| *m += w1 * (g - *m));
        Ok(())
    }
}

/// `v = v * b2 + (1 - b2) * g * g`, in place on v.
struct SecondMoment {
    sc: Scalars,
}

impl InplaceOp2 for SecondMoment {
    fn name(&self) -> &'static str {
        "cpt-adamw-exp-avg-sq"
    }

    fn cpu_fwd(&self, v: &mut CpuStorage, vl: &Layout, g: &CpuStorage, gl: &Layout) -> Result<()> {
        let (v, g) = (f32_mut(v, vl)?, f32_ref(g, gl)?);
        let (beta2, w2) = (self.sc.beta2, self.sc.w2);
        v.par_iter_mut().zip(g.par_iter()).for_each(|(v, &g)| *v = *v * beta2 + w2 * g * g);
        Ok(())
    }
}

/// `p = p * decay - step_size * m / (sqrt(v) / sqrt(bc2) + eps)`, in place on p.
struct ParamUpdate {
    sc: Scalars,
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "cpt-adamw-param"
    }

    fn cpu_fwd(
        &self,
        p: &mut CpuStorage,
        pl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<()> {
        let (p, m, v) = (f32_mut(p, pl)?, f32_ref(m, ml)?, f32_ref(v, vl)?);
        let sc = self.sc;
        p.par_iter_mut().zip(m.par_iter().zip(v.par_iter())).for_each(|(p, (&m, &v))| {
            let denom = v.sqrt() / sc.bc2_sqrt + sc.eps;
            *p = *p * sc.decay + (-sc.step_size) * (m / denom);
        });
        Ok(())
    }
}

/// Elements per block of the CUDA kernel's chunk table.
#[cfg(feature = "cuda")]
const CUDA_CHUNK: usize = 65_536;

/// One launch over every slot: pointer tables and a (tensor, start) chunk table on the device.
#[cfg(feature = "cuda")]
fn cuda_step(slots: &[AdamWSlot<'_>], hp: &AdamWStep) -> Result<()> {
    use super::cuda::{self, Arg};
    use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
    let dev = match slots[0].param.device() {
        candle_core::Device::Cuda(d) => d.clone(),
        _ => bail!("adamw: expected CUDA tensors"),
    };
    let addr = |t: &Tensor, what: &str| -> Result<u64> {
        match cuda::with_storage(t, what, cuda::ptr)? {
            Arg::Ptr(p) => Ok(p),
            _ => bail!("adamw: {what} has no device address"),
        }
    };
    let (mut params, mut grads, mut ms, mut vs) = (vec![], vec![], vec![], vec![]);
    let (mut sizes, mut decays, mut step_sizes, mut bc2_sqrts) = (vec![], vec![], vec![], vec![]);
    let (mut chunk_tensor, mut chunk_start) = (vec![], vec![]);
    for (i, s) in slots.iter().enumerate() {
        // SAFETY of the writes below: the kernel writes p, m, v through these addresses while
        // no candle lock is held; the optimiser owns these tensors and nothing reads them
        // concurrently (candle orders all work of a device on one stream).
        params.push(addr(s.param, "param")?);
        grads.push(addr(s.grad, "grad")?);
        ms.push(addr(s.exp_avg, "exp_avg")?);
        vs.push(addr(s.exp_avg_sq, "exp_avg_sq")?);
        let n = s.param.elem_count();
        sizes.push(n as i64);
        let sc = Scalars::of(hp, s);
        decays.push(sc.decay);
        step_sizes.push(sc.step_size);
        bc2_sqrts.push(sc.bc2_sqrt);
        for start in (0..n).step_by(CUDA_CHUNK) {
            chunk_tensor.push(i as i32);
            chunk_start.push(start as i64);
        }
    }
    if chunk_tensor.is_empty() {
        return Ok(());
    }
    let sc = Scalars::of(hp, &slots[0]); // the group-wide scalars
    let tables = (
        dev.clone_htod(&params)?,
        dev.clone_htod(&grads)?,
        dev.clone_htod(&ms)?,
        dev.clone_htod(&vs)?,
        dev.clone_htod(&sizes)?,
        dev.clone_htod(&decays)?,
        dev.clone_htod(&chunk_tensor)?,
        dev.clone_htod(&chunk_start)?,
        dev.clone_htod(&step_sizes)?,
        dev.clone_htod(&bc2_sqrts)?,
    );
    let args = [
        cuda::slice_ptr(&dev, &tables.0),
        cuda::slice_ptr(&dev, &tables.1),
        cuda::slice_ptr(&dev, &tables.2),
        cuda::slice_ptr(&dev, &tables.3),
        cuda::slice_ptr(&dev, &tables.4),
        cuda::slice_ptr(&dev, &tables.5),
        cuda::slice_ptr(&dev, &tables.6),
        cuda::slice_ptr(&dev, &tables.7),
        cuda::slice_ptr(&dev, &tables.8),
        cuda::slice_ptr(&dev, &tables.9),
        Arg::I32(CUDA_CHUNK as i32),
        Arg::F32(sc.w1),
        Arg::F32(sc.beta2),
        Arg::F32(sc.w2),
        Arg::F32(sc.eps),
    ];
    let cfg = LaunchConfig { grid_dim: (chunk_tensor.len() as u32, 1, 1), block_dim: (512, 1, 1), shared_mem_bytes: 0 };
    cuda::launch(&dev, &cuda::ADAMW, "adamw_multi_f32", cfg, &args)?;
    // The tables must outlive the kernel: freeing is stream-ordered, so dropping them after
    // the launch is safe.
    drop(tables);
    Ok(())
}

fn f32_ref<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("adamw: expected a contiguous f32 tensor"),
    }
}

fn f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => bail!("adamw: expected a contiguous f32 tensor"),
    }
}
