//! Causal self-attention, flash-style, as one op with a backward.
//!
//! Keys and values stream in tiles; each query row keeps a running max and sum (online
//! softmax), so the `[T, T]` score matrix is never stored, in the forward or the backward.
//! The forward saves the per-row log-sum-exp; the backward recomputes probabilities from it
//! (FlashAttention-2's algorithm): `dS = P * (dP - rowsum(dO * O))`.
//!
//! Visibility: key `j` is seen by query `i` when `j <= i` and `segments[j] == segments[i]`
//! (the document mask of packed sequences). Grouped-query attention: query head `h` uses
//! key/value head `h / (Hq / Hkv)`; no repeated k/v is materialised.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::host::{check_float, from_f32_vec, tensor_f32_cpu, tensor_u32_cpu, to_f32_vec};

/// Keys per tile in the CPU version (the CUDA kernels use 32, one per lane).
const CPU_TILE: usize = 64;

/// Checks q `[B, Hq, T, D]` against k, v `[B, Hkv, T, D]` (GQA: Hkv divides Hq; one float
/// dtype) and returns `(B, Hq, Hkv, T, D)`. Shared by both attention kernels.
pub(crate) fn check_qkv(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(usize, usize, usize, usize, usize)> {
    check_float(q.dtype(), "attention query")?;
    let (b, hq, t, d) = q.dims4()?;
    let (kb, hkv, kt, kd) = k.dims4()?;
    if (kb, kt, kd) != (b, t, d) || v.dims() != k.dims() {
        bail!("attention: q {:?}, k {:?}, v {:?} do not fit [B,Hq,T,D] / [B,Hkv,T,D]", q.dims(), k.dims(), v.dims())
    }
    if hkv == 0 || hq % hkv != 0 {
        bail!("attention: {hq} query heads are not a multiple of {hkv} key/value heads")
    }
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        bail!("attention: q, k, v dtypes differ ({:?}, {:?}, {:?})", q.dtype(), k.dtype(), v.dtype())
    }
    Ok((b, hq, hkv, t, d))
}

/// Attention of `q` (`[B, Hq, T, D]`) over `k`, `v` (`[B, Hkv, T, D]`), causal, with an
/// optional document mask `segments` (`[B, T]` u32, equal ids = same document).
/// `scale` multiplies the scores (usually `1 / sqrt(D)`). Returns `[B, Hq, T, D]`.
pub fn flash_attention(q: &Tensor, k: &Tensor, v: &Tensor, segments: Option<&Tensor>, scale: f32) -> Result<Tensor> {
    let (b, _, _, t, _) = check_qkv(q, k, v)?;
    let segments = match segments {
        Some(s) => {
            if s.dims() != [b, t] || s.dtype() != DType::U32 {
                bail!("attention: segments must be [B, T] = [{b}, {t}] u32, got {:?} {:?}", s.dims(), s.dtype())
            }
            s.contiguous()?
        }
        None => Tensor::zeros((b, t), DType::U32, q.device())?,
    };
    let op = FlashAttention { scale, segments, lse: Arc::new(OnceLock::new()) };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// Per-row log-sum-exp saved by the forward for the backward (`[B, Hq, T]` f32).
enum Lse {
    Cpu(Vec<f32>),
    #[cfg(feature = "cuda")]
    Cuda(candle_core::CudaStorage),
}

struct FlashAttention {
    scale: f32,
    segments: Tensor,
    lse: Arc<OnceLock<Lse>>,
}

/// Computes dq, dk, dv packed in one flat buffer (dq, then dk, then dv).
struct FlashAttentionBackward {
    scale: f32,
    segments: Tensor,
    out: Tensor,
    dout: Tensor,
    lse: Arc<OnceLock<Lse>>,
}

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    t: usize,
    d: usize,
}

impl Dims {
    fn of(ql: &Layout, kl: &Layout) -> Result<Self> {
        let (b, hq, t, d) = ql.shape().dims4()?;
        let hkv = kl.shape().dims4()?.1;
        Ok(Self { b, hq, hkv, t, d })
    }
    fn group(&self) -> usize {
        self.hq / self.hkv
    }
    fn q_len(&self) -> usize {
        self.b * self.hq * self.t * self.d
    }
    fn k_len(&self) -> usize {
        self.b * self.hkv * self.t * self.d
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// CPU forward: one query row at a time, key tiles of `CPU_TILE`, online softmax.
fn cpu_forward(q: &[f32], k: &[f32], v: &[f32], seg: &[u32], n: Dims, scale: f32) -> (Vec<f32>, Vec<f32>) {
    let Dims { hq, hkv, t, d, .. } = n;
    let mut out = vec![0f32; q.len()];
    let mut lse = vec![0f32; q.len() / d];
    out.par_chunks_mut(d).zip(lse.par_iter_mut()).enumerate().for_each(|(row, (orow, lse_row))| {
        let (i, h, b) = (row % t, (row / t) % hq, row / (t * hq));
        let kv_head = (b * hkv + h / n.group()) * t;
        let seg_i = seg[b * t + i];
        let qrow = &q[row * d..(row + 1) * d];
        let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
        let mut acc = vec![0f32; d];
        let mut scores = [0f32; CPU_TILE];
        for k0 in (0..=i).step_by(CPU_TILE) {
            let k1 = (k0 + CPU_TILE).min(i + 1);
            let mut tile_max = f32::NEG_INFINITY;
            for j in k0..k1 {
                let s = if seg[b * t + j] == seg_i {
                    dot(qrow, &k[(kv_head + j) * d..(kv_head + j + 1) * d]) * scale
                } else {
                    f32::NEG_INFINITY
                };
                scores[j - k0] = s;
                tile_max = tile_max.max(s);
            }
            let m_new = m.max(tile_max);
            if m_new == f32::NEG_INFINITY {
                continue; // nothing visible yet
            }
            let corr = (m - m_new).exp();
            l *= corr;
            acc.iter_mut().for_each(|a| *a *= corr);
            for j in k0..k1 {
                let p = (scores[j - k0] - m_new).exp();
                if p == 0.0 {
                    continue;
                }
                l += p;
                let vrow = &v[(kv_head + j) * d..(kv_head + j + 1) * d];
                acc.iter_mut().zip(vrow).for_each(|(a, x)| *a += p * x);
            }
            m = m_new;
        }
        orow.iter_mut().zip(&acc).for_each(|(o, a)| *o = a / l);
        *lse_row = m + l.ln();
    });
    (out, lse)
}

/// CPU backward: dq row by row, dk/dv key row by key row (over the group's query heads);
/// probabilities recomputed from the saved log-sum-exp. Returns dq, dk, dv concatenated.
#[allow(clippy::too_many_arguments)]
fn cpu_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    dout: &[f32],
    lse: &[f32],
    seg: &[u32],
    n: Dims,
    scale: f32,
) -> Vec<f32> {
    let Dims { hq, hkv, t, d, .. } = n;
    let delta: Vec<f32> = out.par_chunks(d).zip(dout.par_chunks(d)).map(|(o, g)| dot(o, g)).collect();
    let mut grads = vec![0f32; n.q_len() + 2 * n.k_len()];
    let (dq, dkv) = grads.split_at_mut(n.q_len());
    let (dk, dv) = dkv.split_at_mut(n.k_len());
    dq.par_chunks_mut(d).enumerate().for_each(|(row, dq_row)| {
        let (i, h, b) = (row % t, (row / t) % hq, row / (t * hq));
        let kv_head = (b * hkv + h / n.group()) * t;
        let (qrow, grow) = (&q[row * d..(row + 1) * d], &dout[row * d..(row + 1) * d]);
        for j in 0..=i {
            if seg[b * t + j] != seg[b * t + i] {
                continue;
            }
            let (krow, vrow) = (&k[(kv_head + j) * d..(kv_head + j + 1) * d], &v[(kv_head + j) * d..(kv_head + j + 1) * d]);
            let p = (dot(qrow, krow) * scale - lse[row]).exp();
            let ds = p * (dot(grow, vrow) - delta[row]);
            dq_row.iter_mut().zip(krow).for_each(|(a, x)| *a += ds * x);
        }
        dq_row.iter_mut().for_each(|a| *a *= scale);
    });
    dk.par_chunks_mut(d).zip(dv.par_chunks_mut(d)).enumerate().for_each(|(krow_idx, (dk_row, dv_row))| {
        let (j, hk, b) = (krow_idx % t, (krow_idx / t) % hkv, krow_idx / (t * hkv));
        let (krow, vrow) = (&k[krow_idx * d..(krow_idx + 1) * d], &v[krow_idx * d..(krow_idx + 1) * d]);
        for h in hk * n.group()..(hk + 1) * n.group() {
            let head = (b * hq + h) * t;
            for i in j..t {
                if seg[b * t + i] != seg[b * t + j] {
                    continue;
                }
                let row = head + i;
                let (qrow, grow) = (&q[row * d..(row + 1) * d], &dout[row * d..(row + 1) * d]);
                let p = (dot(qrow, krow) * scale - lse[row]).exp();
                let ds = p * (dot(grow, vrow) - delta[row]);
                dv_row.iter_mut().zip(grow).for_each(|(a, x)| *a += p * x);
                dk_row.iter_mut().zip(qrow).for_each(|(a, x)| *a += ds * x);
            }
        }
        dk_row.iter_mut().for_each(|a| *a *= scale);
    });
    grads
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "cpt-flash-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = Dims::of(ql, kl)?;
        let q = to_f32_vec(qs, ql, "attention query")?;
        let k = to_f32_vec(ks, kl, "attention key")?;
        let v = to_f32_vec(vs, vl, "attention value")?;
        let seg = tensor_u32_cpu(&self.segments, "attention segments")?;
        let (out, lse) = cpu_forward(&q, &k, &v, &seg, n, self.scale);
        // A second forward of the same op instance keeps the first statistics; it would
        // compute identical values.
        let _ = self.lse.set(Lse::Cpu(lse));
        Ok((from_f32_vec(out, qs.dtype())?, ql.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
        let n = Dims::of(ql, kl)?;
        check_cuda_head_dim(n.d)?;
        let dev = qs.device().clone();
        let out = cuda::zeros(&dev, qs.dtype(), n.q_len())?;
        let lse = cuda::zeros(&dev, DType::F32, n.b * n.hq * n.t)?;
        let seg = cuda::with_storage(&self.segments, "attention segments", cuda::ptr)?;
        let args = [
            cuda::ptr(qs, ql)?,
            cuda::ptr(ks, kl)?,
            cuda::ptr(vs, vl)?,
            seg,
            cuda::ptr_all(&out)?,
            cuda::ptr_all(&lse)?,
            Arg::I32(n.b as i32),
            Arg::I32(n.hq as i32),
            Arg::I32(n.hkv as i32),
            Arg::I32(n.t as i32),
            Arg::I32(n.d as i32),
            Arg::F32(self.scale),
        ];
        let cfg = LaunchConfig {
            grid_dim: (n.t.div_ceil(FWD_ROWS) as u32, (n.b * n.hq) as u32, 1),
            block_dim: (32 * FWD_ROWS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        cuda::launch(&dev, &cuda::ATTENTION, &format!("attn_fwd_{}", cuda::suffix(qs.dtype())?), cfg, &args)?;
        let _ = self.lse.set(Lse::Cuda(lse));
        Ok((out, ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = FlashAttentionBackward {
            scale: self.scale,
            segments: self.segments.clone(),
            out: out.contiguous()?,
            dout: dout.contiguous()?,
            lse: self.lse.clone(),
        };
        let grads = q.apply_op3_no_bwd(k, v, &op)?;
        let (nq, nk) = (q.elem_count(), k.elem_count());
        let dq = grads.narrow(0, 0, nq)?.reshape(q.shape())?;
        let dk = grads.narrow(0, nq, nk)?.reshape(k.shape())?;
        let dv = grads.narrow(0, nq + nk, nk)?.reshape(v.shape())?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

impl CustomOp3 for FlashAttentionBackward {
    fn name(&self) -> &'static str {
        "cpt-flash-attention-backward"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = Dims::of(ql, kl)?;
        let q = to_f32_vec(qs, ql, "attention query")?;
        let k = to_f32_vec(ks, kl, "attention key")?;
        let v = to_f32_vec(vs, vl, "attention value")?;
        let out = tensor_f32_cpu(&self.out, "attention output")?;
        let dout = tensor_f32_cpu(&self.dout, "attention output gradient")?;
        let seg = tensor_u32_cpu(&self.segments, "attention segments")?;
        let Some(Lse::Cpu(lse)) = self.lse.get() else {
            bail!("attention backward: the forward's CPU statistics are missing")
        };
        let grads = cpu_backward(&q, &k, &v, &out, &dout, lse, &seg, n, self.scale);
        let len = grads.len();
        Ok((from_f32_vec(grads, qs.dtype())?, Shape::from(len)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
        let n = Dims::of(ql, kl)?;
        let dev = qs.device().clone();
        let Some(Lse::Cuda(lse)) = self.lse.get() else {
            bail!("attention backward: the forward's CUDA statistics are missing")
        };
        let len = n.q_len() + 2 * n.k_len();
        let grads = cuda::zeros(&dev, qs.dtype(), len)?;
        let delta = cuda::zeros(&dev, DType::F32, n.b * n.hq * n.t)?;
        let esize = qs.dtype().size_in_bytes();
        let Arg::Ptr(base) = cuda::ptr_all(&grads)? else { bail!("attention backward: bad gradient buffer") };
        let dq = Arg::Ptr(base);
        let dk = Arg::Ptr(base + (n.q_len() * esize) as u64);
        let dv = Arg::Ptr(base + ((n.q_len() + n.k_len()) * esize) as u64);
        let seg = || cuda::with_storage(&self.segments, "attention segments", cuda::ptr);
        let out = cuda::with_storage(&self.out, "attention output", cuda::ptr)?;
        let dims = || {
            [
                Arg::I32(n.b as i32),
                Arg::I32(n.hq as i32),
                Arg::I32(n.hkv as i32),
                Arg::I32(n.t as i32),
                Arg::I32(n.d as i32),
                Arg::F32(self.scale),
            ]
        };
        let dout = || cuda::with_storage(&self.dout, "attention output gradient", cuda::ptr);
        let sfx = cuda::suffix(qs.dtype())?;
        let cfg = |heads: usize| LaunchConfig {
            grid_dim: (n.t.div_ceil(BWD_ROWS) as u32, (n.b * heads) as u32, 1),
            block_dim: (32 * BWD_ROWS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut args = vec![
            cuda::ptr(qs, ql)?,
            cuda::ptr(ks, kl)?,
            cuda::ptr(vs, vl)?,
            seg()?,
            out,
            dout()?,
            cuda::ptr_all(lse)?,
            cuda::ptr_all(&delta)?,
            dq,
        ];
        args.extend(dims());
        cuda::launch(&dev, &cuda::ATTENTION, &format!("attn_bwd_dq_{sfx}"), cfg(n.hq), &args)?;
        let mut args = vec![
            cuda::ptr(qs, ql)?,
            cuda::ptr(ks, kl)?,
            cuda::ptr(vs, vl)?,
            seg()?,
            dout()?,
            cuda::ptr_all(lse)?,
            cuda::ptr_all(&delta)?,
            dk,
            dv,
        ];
        args.extend(dims());
        cuda::launch(&dev, &cuda::ATTENTION, &format!("attn_bwd_dkdv_{sfx}"), cfg(n.hkv), &args)?;
        Ok((grads, Shape::from(len)))
    }
}

/// Query rows per block of the CUDA forward and backward kernels (`FWD_ROWS`, `BWD_ROWS`
/// in attention.cu).
#[cfg(feature = "cuda")]
const FWD_ROWS: usize = 16;
#[cfg(feature = "cuda")]
const BWD_ROWS: usize = 8;

#[cfg(feature = "cuda")]
fn check_cuda_head_dim(d: usize) -> Result<()> {
    if d == 0 || d % 32 != 0 || d > 128 {
        bail!("attention: the CUDA kernel needs a head dim that is a multiple of 32 and at most 128, got {d}")
    }
    Ok(())
}
