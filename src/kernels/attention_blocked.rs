//! Causal attention by query blocks, on the matmul units: for each block of `q_block` query
//! rows, cuBLAS (or the CPU matmul) computes the score slab against the block's visible key
//! prefix, one fused row kernel turns it into probabilities (saving the per-row
//! log-sum-exp), and a second matmul applies them to V. The full `[T, T]` matrix never
//! exists: at most one `[B, H, q_block, T]` slab does, and the backward recomputes each slab
//! from the saved log-sum-exp (`dS = P * (dP - rowsum(dO * O)) * scale`) instead of keeping
//! probabilities. Same meaning and layouts as [`super::attention::flash_attention`]
//! (document mask by segment ids, GQA without repeated k/v); the difference is where the
//! arithmetic runs: here on tensor cores, there in a hand-written tiled kernel.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::attention::check_qkv;
use super::host::{from_f32_vec, tensor_f32_cpu, tensor_u32_cpu, to_f32_vec};
use super::precomputed::Precomputed;

/// Attention of `q` (`[B, Hq, T, D]`) over `k`, `v` (`[B, Hkv, T, D]`), causal, with an
/// optional document mask (`segments` `[B, T]` u32), computed `q_block` query rows at a time.
pub fn blocked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: Option<&Tensor>,
    scale: f32,
    q_block: usize,
) -> Result<Tensor> {
    let (b, hq, hkv, t, d) = check_qkv(q, k, v)?;
    if q_block == 0 {
        bail!("attention: q_block must be positive")
    }
    let segments = match segments {
        Some(s) if s.dims() == [b, t] && s.dtype() == DType::U32 => s.contiguous()?,
        Some(s) => bail!("attention: segments must be [B, T] = [{b}, {t}] u32, got {:?} {:?}", s.dims(), s.dtype()),
        None => Tensor::zeros((b, t), DType::U32, q.device())?,
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let plan = Plan { b, hq, hkv, t, d, scale, q_block, segments };
    let (qd, kd, vd) = (q.detach(), k.detach(), v.detach());
    let mut outs = Vec::new();
    let mut lses = Vec::new();
    for blk in plan.blocks() {
        let s = plan.scores(&qd, &kd, blk)?;
        let lse = s.apply_op1_no_bwd(&RowLse { slab: plan.slab(blk), segments: plan.segments.clone() })?;
        let p = s.apply_op2_no_bwd(&lse, &Probs { slab: plan.slab(blk), segments: plan.segments.clone() })?;
        drop(s);
        let o = p.matmul(&plan.prefix(&vd, blk)?)?;
        outs.push(o.reshape((b, hq, blk.len, d))?);
        lses.push(lse);
    }
    let out = Tensor::cat(&outs, 2)?;
    q.apply_op3(&k, &v, BlockedAttention { plan, out: Precomputed::new("blocked attention", out), lses })
}

#[derive(Clone)]
struct Plan {
    b: usize,
    hq: usize,
    hkv: usize,
    t: usize,
    d: usize,
    scale: f32,
    q_block: usize,
    segments: Tensor,
}

/// Query rows `q0..q0 + len`; visible keys `0..q0 + len`.
#[derive(Clone, Copy)]
struct Block {
    q0: usize,
    len: usize,
}

/// What the row kernels need to map a slab element to (batch, query, key).
#[derive(Clone, Copy)]
struct Slab {
    /// columns: the key prefix length
    n: usize,
    len: usize,
    q0: usize,
    /// Hkv * group: rows per (batch, query index) pair
    hg: usize,
    t: usize,
    scale: f32,
}

impl Plan {
    fn blocks(&self) -> impl Iterator<Item = Block> + '_ {
        (0..self.t).step_by(self.q_block).map(|q0| Block { q0, len: self.q_block.min(self.t - q0) })
    }

    fn group(&self) -> usize {
        self.hq / self.hkv
    }

    fn slab(&self, blk: Block) -> Slab {
        Slab { n: blk.q0 + blk.len, len: blk.len, q0: blk.q0, hg: self.hq, t: self.t, scale: self.scale }
    }

    /// Rows `q0..q0+len` of a `[B, Hq, T, D]` tensor as `[B, Hkv, group * len, D]`: query
    /// head `kv * group + g` sits in kv head `kv`'s rows (transformers' `repeat_kv` order).
    fn query_rows(&self, x: &Tensor, blk: Block) -> Result<Tensor> {
        x.narrow(2, blk.q0, blk.len)?.contiguous()?.reshape((self.b, self.hkv, self.group() * blk.len, self.d))
    }

    /// Keys or values `0..q0+len`, `[B, Hkv, n, D]`.
    fn prefix(&self, x: &Tensor, blk: Block) -> Result<Tensor> {
        x.narrow(2, 0, blk.q0 + blk.len)?.contiguous()
    }

    /// Unscaled scores `[B, Hkv, group * len, n]` in the compute dtype.
    fn scores(&self, q: &Tensor, k: &Tensor, blk: Block) -> Result<Tensor> {
        self.query_rows(q, blk)?.matmul(&self.prefix(k, blk)?.t()?)
    }
}

/// Identity over the precomputed output; the backward recomputes slab by slab.
struct BlockedAttention {
    plan: Plan,
    /// The output, handed to candle once by the op's forward.
    out: Precomputed,
    lses: Vec<Tensor>,
}

impl CustomOp3 for BlockedAttention {
    fn name(&self) -> &'static str {
        "cpt-blocked-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.out.cpu()
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
        self.out.cuda()
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let p = &self.plan;
        let (q, k, v) = (q.detach(), k.detach(), v.detach());
        let dout = dout.detach().to_dtype(q.dtype())?.contiguous()?;
        // delta = rowsum(dO * O), [B, Hq, T] f32
        let delta = (dout.to_dtype(DType::F32)? * out.detach().to_dtype(DType::F32)?)?.sum(D::Minus1)?;
        let mut dq = Vec::new();
        let mut dk = Tensor::zeros((p.b, p.hkv, p.t, p.d), DType::F32, q.device())?;
        let mut dv = dk.clone();
        for (blk, lse) in p.blocks().zip(&self.lses) {
            let n = blk.q0 + blk.len;
            let s = p.scores(&q, &k, blk)?;
            let probs = s.apply_op2_no_bwd(lse, &Probs { slab: p.slab(blk), segments: p.segments.clone() })?;
            let do_rows = p.query_rows(&dout, blk)?;
            let v_pre = p.prefix(&v, blk)?;
            let dv_pre = probs.t()?.matmul(&do_rows)?;
            drop(probs);
            let dp = do_rows.matmul(&v_pre.t()?)?;
            let delta_blk = delta.narrow(2, blk.q0, blk.len)?.contiguous()?;
            let ds = s.apply_op2_no_bwd(
                &dp,
                &DScores { slab: p.slab(blk), segments: p.segments.clone(), lse: lse.clone(), delta: delta_blk },
            )?;
            drop((s, dp));
            dq.push(ds.matmul(&p.prefix(&k, blk)?)?.reshape((p.b, p.hq, blk.len, p.d))?);
            let dk_pre = ds.t()?.matmul(&p.query_rows(&q, blk)?)?;
            let pad = p.t - n;
            dk = (dk + dk_pre.to_dtype(DType::F32)?.pad_with_zeros(2, 0, pad)?)?;
            dv = (dv + dv_pre.to_dtype(DType::F32)?.pad_with_zeros(2, 0, pad)?)?;
        }
        let dtype = q.dtype();
        Ok((Some(Tensor::cat(&dq, 2)?), Some(dk.to_dtype(dtype)?), Some(dv.to_dtype(dtype)?)))
    }
}

/// Slab element `(row, j)`: is key j visible to the row's query?
fn visible(slab: &Slab, seg: &[u32], row: usize, j: usize) -> bool {
    let b = row / (slab.hg * slab.len);
    let qi = slab.q0 + row % slab.len;
    j <= qi && seg[b * slab.t + j] == seg[b * slab.t + qi]
}

/// Per-row log-sum-exp of the visible scaled scores, `[rows]` f32 (shape: the slab's
/// leading dims).
struct RowLse {
    slab: Slab,
    segments: Tensor,
}

/// Probabilities `exp(scale * S - lse)` on visible entries, 0 elsewhere, in S's dtype.
struct Probs {
    slab: Slab,
    segments: Tensor,
}

/// `P * (dP - delta) * scale` on visible entries (P recomputed from S and lse).
struct DScores {
    slab: Slab,
    segments: Tensor,
    lse: Tensor,
    delta: Tensor,
}

fn lead_shape(l: &Layout) -> Shape {
    let dims = l.dims();
    Shape::from(dims[..dims.len() - 1].to_vec())
}

impl CustomOp1 for RowLse {
    fn name(&self) -> &'static str {
        "cpt-attention-row-lse"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let scores = to_f32_vec(s, l, "attention scores")?;
        let seg = tensor_u32_cpu(&self.segments, "attention segments")?;
        let n = self.slab.n;
        let lse: Vec<f32> = scores
            .par_chunks(n)
            .enumerate()
            .map(|(row, sr)| {
                let vis = |j: &usize| visible(&self.slab, &seg, row, *j);
                let m = (0..n).filter(vis).map(|j| sr[j] * self.slab.scale).fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = (0..n).filter(vis).map(|j| (sr[j] * self.slab.scale - m).exp()).sum();
                m + sum.ln()
            })
            .collect();
        Ok((CpuStorage::F32(lse), lead_shape(l)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda;
        use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
        let dev = s.device().clone();
        let rows = l.shape().elem_count() / self.slab.n;
        let out = cuda::zeros(&dev, DType::F32, rows)?;
        let mut args = vec![
            cuda::ptr(s, l)?,
            cuda::with_storage(&self.segments, "attention segments", cuda::ptr)?,
            cuda::ptr_all(&out)?,
        ];
        args.extend(slab_args(&self.slab));
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let name = format!("attn_row_lse_{}", cuda::suffix(s.dtype())?);
        cuda::launch(&dev, &cuda::ATTENTION_BLOCKED, &name, cfg, &args)?;
        Ok((out, lead_shape(l)))
    }
}

impl CustomOp2 for Probs {
    fn name(&self) -> &'static str {
        "cpt-attention-probs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout, lse_s: &CpuStorage, lse_l: &Layout) -> Result<(CpuStorage, Shape)> {
        let scores = to_f32_vec(s, l, "attention scores")?;
        let lse = to_f32_vec(lse_s, lse_l, "attention lse")?;
        let seg = tensor_u32_cpu(&self.segments, "attention segments")?;
        let n = self.slab.n;
        let mut p = vec![0f32; scores.len()];
        p.par_chunks_mut(n).zip(scores.par_chunks(n)).enumerate().for_each(|(row, (pr, sr))| {
            for j in 0..n {
                if visible(&self.slab, &seg, row, j) {
                    pr[j] = (sr[j] * self.slab.scale - lse[row]).exp();
                }
            }
        });
        Ok((from_f32_vec(p, s.dtype())?, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
        lse_s: &candle_core::CudaStorage,
        lse_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        let dev = s.device().clone();
        let total = l.shape().elem_count();
        let out = cuda::zeros(&dev, s.dtype(), total)?;
        let mut args = vec![
            cuda::ptr(s, l)?,
            cuda::ptr(lse_s, lse_l)?,
            cuda::with_storage(&self.segments, "attention segments", cuda::ptr)?,
            cuda::ptr_all(&out)?,
        ];
        args.extend(slab_args(&self.slab));
        args.push(Arg::I64(total as i64));
        let name = format!("attn_probs_{}", cuda::suffix(s.dtype())?);
        cuda::launch(&dev, &cuda::ATTENTION_BLOCKED, &name, cuda::grid_1d(total, 256), &args)?;
        Ok((out, l.shape().clone()))
    }
}

impl CustomOp2 for DScores {
    fn name(&self) -> &'static str {
        "cpt-attention-dscores"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout, dp_s: &CpuStorage, dp_l: &Layout) -> Result<(CpuStorage, Shape)> {
        let scores = to_f32_vec(s, l, "attention scores")?;
        let dp = to_f32_vec(dp_s, dp_l, "attention dP")?;
        let lse = tensor_f32_cpu(&self.lse, "attention lse")?;
        let delta = tensor_f32_cpu(&self.delta, "attention delta")?;
        let seg = tensor_u32_cpu(&self.segments, "attention segments")?;
        let (n, scale) = (self.slab.n, self.slab.scale);
        let mut ds = vec![0f32; scores.len()];
        ds.par_chunks_mut(n).enumerate().for_each(|(row, dsr)| {
            for j in 0..n {
                if visible(&self.slab, &seg, row, j) {
                    let i = row * n + j;
                    let p = (scores[i] * scale - lse[row]).exp();
                    dsr[j] = p * (dp[i] - delta[row]) * scale;
                }
            }
        });
        Ok((from_f32_vec(ds, s.dtype())?, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
        dp_s: &candle_core::CudaStorage,
        dp_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Arg};
        let dev = s.device().clone();
        let total = l.shape().elem_count();
        let out = cuda::zeros(&dev, s.dtype(), total)?;
        let mut args = vec![
            cuda::ptr(s, l)?,
            cuda::ptr(dp_s, dp_l)?,
            cuda::with_storage(&self.lse, "attention lse", cuda::ptr)?,
            cuda::with_storage(&self.delta, "attention delta", cuda::ptr)?,
            cuda::with_storage(&self.segments, "attention segments", cuda::ptr)?,
            cuda::ptr_all(&out)?,
        ];
        args.extend(slab_args(&self.slab));
        args.push(Arg::I64(total as i64));
        let name = format!("attn_dscores_{}", cuda::suffix(s.dtype())?);
        cuda::launch(&dev, &cuda::ATTENTION_BLOCKED, &name, cuda::grid_1d(total, 256), &args)?;
        Ok((out, l.shape().clone()))
    }
}

#[cfg(feature = "cuda")]
fn slab_args(s: &Slab) -> Vec<super::cuda::Arg> {
    use super::cuda::Arg;
    vec![
        Arg::I32(s.n as i32),
        Arg::I32(s.len as i32),
        Arg::I32(s.q0 as i32),
        Arg::I32(s.hg as i32),
        Arg::I32(s.t as i32),
        Arg::F32(s.scale),
    ]
}
