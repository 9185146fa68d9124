//! The collectives a data-parallel run needs, behind one small interface: an [`Engine`]
//! (MPI for CPU tensors, NCCL for CUDA tensors, or the identity for one process) does the
//! communication; [`Comm`] adds what every engine shares: the accounting of bytes and time
//! for the step records, and reductions of small host values that give every rank the
//! same bits (so every rank takes the same decisions).
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use half::slice::HalfFloatSliceExt;

/// What an engine implements. Host-slice operations are required; the tensor operations
/// default to a round trip through host memory (right for MPI; NCCL overrides them for
/// CUDA tensors).
pub trait Engine: Send + Sync {
    fn name(&self) -> &'static str;
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Every rank has arrived. Long waits (a rank tokenising the corpus or writing a
    /// checkpoint) should sleep rather than spin.
    fn barrier(&self) -> Result<()>;
    /// `buf` of `root` to every rank (same length everywhere).
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()>;
    /// Each rank's `mine` (same length everywhere) into `all`, in rank order.
    fn all_gather_bytes(&self, mine: &[u8], all: &mut [u8]) -> Result<()>;
    fn all_gather_f32(&self, mine: &[f32], all: &mut [f32]) -> Result<()>;
    fn all_gather_u16(&self, mine: &[u16], all: &mut [u16]) -> Result<()>;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()>;
    /// `send` (size x n) summed over ranks; block `rank` of the sum lands in `recv` (n).
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;

    fn all_reduce_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let mut host = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        self.all_reduce_f32(&mut host)?;
        Ok(Tensor::from_vec(host, t.shape(), t.device())?)
    }

    fn reduce_scatter_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count() / self.size();
        let host = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut out = vec![0f32; n];
        self.reduce_scatter_f32(&host, &mut out)?;
        Ok(Tensor::from_vec(out, n, t.device())?)
    }

    fn all_gather_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count();
        let total = n * self.size();
        let device = t.device();
        Ok(match t.dtype() {
            DType::F32 => {
                let mut all = vec![0f32; total];
                self.all_gather_f32(&t.to_vec1::<f32>()?, &mut all)?;
                Tensor::from_vec(all, total, device)?
            }
            DType::BF16 => {
                let mine = t.to_vec1::<half::bf16>()?;
                let mut all = vec![half::bf16::ZERO; total];
                self.all_gather_u16(mine.reinterpret_cast(), all.reinterpret_cast_mut())?;
                Tensor::from_vec(all, total, device)?
            }
            DType::F16 => {
                let mine = t.to_vec1::<half::f16>()?;
                let mut all = vec![half::f16::ZERO; total];
                self.all_gather_u16(mine.reinterpret_cast(), all.reinterpret_cast_mut())?;
                Tensor::from_vec(all, total, device)?
            }
            other => bail!("all-gather of {other:?} tensors is not supported"),
        })
    }

    /// Ends every rank of the job at once (the engine's abort), where the engine has one.
    fn abort(&self, _code: i32) {}
}

/// Bytes handed to collectives and time spent in them, since the last `take`.
#[derive(Debug, Default)]
pub struct CommStats {
    bytes: AtomicU64,
    nanos: AtomicU64,
    calls: AtomicU64,
}

/// A snapshot of [`CommStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommTotals {
    /// Bytes each rank sends, by the standard bandwidth-optimal algorithms: all-reduce
    /// 2(W-1)/W x S, reduce-scatter and all-gather (W-1)/W x S, S the full buffer
    /// (NCCL's "bus bytes"). Zero for one process.
    pub bytes: u64,
    pub seconds: f64,
    pub calls: u64,
}

impl CommStats {
    fn record(&self, bytes: u64, started: Instant) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals since the previous call; resets them.
    pub fn take(&self) -> CommTotals {
        CommTotals {
            bytes: self.bytes.swap(0, Ordering::Relaxed),
            seconds: self.nanos.swap(0, Ordering::Relaxed) as f64 * 1e-9,
            calls: self.calls.swap(0, Ordering::Relaxed),
        }
    }
}

/// The communicator a run uses: an engine plus accounting and deterministic host
/// reductions.
pub struct Comm {
    engine: Box<dyn Engine>,
    stats: CommStats,
}

impl Comm {
    pub fn new(engine: Box<dyn Engine>) -> Self {
        Self { engine, stats: CommStats::default() }
    }

    /// One process: every collective is the identity.
    pub fn single() -> Self {
        Self::new(Box::new(SingleProcess))
    }

    pub fn rank(&self) -> usize {
        self.engine.rank()
    }

    pub fn size(&self) -> usize {
        self.engine.size()
    }

    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    pub fn stats(&self) -> &CommStats {
        &self.stats
    }

    /// The engine itself, without the one-rank short-cuts of `Comm` (tests of an engine).
    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// (W-1)/W x `bytes`: what one rank sends in a ring all-gather or reduce-scatter of a
    /// `bytes` buffer.
    fn ring_share(&self, bytes: usize) -> u64 {
        let w = self.size() as u64;
        (bytes as u64) * (w - 1) / w
    }

    pub fn barrier(&self) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let t = Instant::now();
        self.engine.barrier().context("barrier")?;
        self.stats.record(0, t);
        Ok(())
    }

    /// `bytes` of `root`, of any length, to every rank.
    pub fn broadcast_vec(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let t = Instant::now();
        let mut len = (bytes.len() as u64).to_le_bytes();
        self.engine.broadcast_bytes(&mut len, root).context("broadcast")?;
        bytes.resize(u64::from_le_bytes(len) as usize, 0);
        self.engine.broadcast_bytes(bytes, root).context("broadcast")?;
        self.stats.record(bytes.len() as u64, t);
        Ok(())
    }

    /// Every rank's `mine` (any length), in rank order.
    pub fn all_gather_vec(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        if self.size() == 1 {
            return Ok(vec![mine.to_vec()]);
        }
        let t = Instant::now();
        let w = self.size();
        let mut lens = vec![0u8; 8 * w];
        self.engine.all_gather_bytes(&(mine.len() as u64).to_le_bytes(), &mut lens).context("all-gather")?;
        let lens: Vec<usize> = lens.chunks(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize).collect();
        let width = lens.iter().copied().max().unwrap_or(0);
        let mut padded = mine.to_vec();
        padded.resize(width, 0);
        let mut all = vec![0u8; width * w];
        self.engine.all_gather_bytes(&padded, &mut all).context("all-gather")?;
        self.stats.record(self.ring_share(all.len()), t);
        Ok(all.chunks(width.max(1)).zip(&lens).map(|(c, &n)| c[..n].to_vec()).take(w).collect())
    }

    /// Sums small host values over ranks. Every rank adds the gathered values in rank
    /// order, so all ranks hold the same bits whatever the engine's reduction order.
    pub fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let mine: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let all = self.all_gather_vec(&mine)?;
        for (i, v) in values.iter_mut().enumerate() {
            let mut sum = 0.0;
            for (rank, bytes) in all.iter().enumerate() {
                ensure!(bytes.len() == mine.len(), "rank {rank} reduced {} values where this rank has {}", bytes.len() / 8, values.len());
                sum += f64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
            }
            *v = sum;
        }
        Ok(())
    }

    /// The largest of each value over ranks (same on every rank).
    pub fn max_f64(&self, values: &mut [f64]) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let mine: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let all = self.all_gather_vec(&mine)?;
        for (i, v) in values.iter_mut().enumerate() {
            *v = all
                .iter()
                .map(|b| f64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes")))
                .fold(f64::NEG_INFINITY, f64::max);
        }
        Ok(())
    }

    /// Element-wise sum of an f32 tensor over ranks.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        if self.size() == 1 {
            return Ok(t.clone());
        }
        ensure!(t.dtype() == DType::F32, "all-reduce expects f32, got {:?}", t.dtype());
        let started = Instant::now();
        let out = self.engine.all_reduce_tensor(&t.contiguous()?).context("all-reduce")?;
        self.stats.record(2 * self.ring_share(t.elem_count() * 4), started);
        Ok(out)
    }

    /// A 1-D f32 tensor of size x n summed over ranks; this rank gets block `rank` (n).
    pub fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        ensure!(t.rank() == 1 && t.dtype() == DType::F32, "reduce-scatter expects a 1-D f32 tensor");
        let w = self.size();
        ensure!(t.elem_count() % w == 0, "reduce-scatter of {} elements over {w} ranks", t.elem_count());
        if w == 1 {
            return Ok(t.clone());
        }
        let started = Instant::now();
        let out = self.engine.reduce_scatter_tensor(&t.contiguous()?).context("reduce-scatter")?;
        self.stats.record(self.ring_share(t.elem_count() * 4), started);
        Ok(out)
    }

    /// A 1-D tensor of n elements from every rank -> size x n, in rank order.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        ensure!(t.rank() == 1, "all-gather expects a 1-D tensor");
        if self.size() == 1 {
            return Ok(t.clone());
        }
        let started = Instant::now();
        let out = self.engine.all_gather_tensor(&t.contiguous()?).context("all-gather")?;
        self.stats.record(self.ring_share(out.elem_count() * t.dtype().size_in_bytes()), started);
        Ok(out)
    }

    /// Ends all ranks now (MPI_Abort where the engine has it); the caller exits afterwards.
    pub fn abort(&self, code: i32) {
        self.engine.abort(code);
    }
}

/// The engine of a one-process run.
pub struct SingleProcess;

impl Engine for SingleProcess {
    fn name(&self) -> &'static str {
        "none"
    }
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _: &mut [u8], _: usize) -> Result<()> {
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8], all: &mut [u8]) -> Result<()> {
        all.copy_from_slice(mine);
        Ok(())
    }
    fn all_gather_f32(&self, mine: &[f32], all: &mut [f32]) -> Result<()> {
        all.copy_from_slice(mine);
        Ok(())
    }
    fn all_gather_u16(&self, mine: &[u16], all: &mut [u16]) -> Result<()> {
        all.copy_from_slice(mine);
        Ok(())
    }
    fn all_reduce_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
}

/// Which device a tensor collective runs on: CPU tensors need a host engine (MPI).
pub fn check_engine_for(device: &Device, engine: &str) -> Result<()> {
    if device.is_cuda() && engine == "mpi" {
        bail!("CUDA tensors need the NCCL engine (this build has MPI only; build with --features nccl)");
    }
    if device.is_cpu() && engine == "nccl" {
        bail!("CPU tensors need the MPI engine (build with --features mpi and launch with mpiexec or srun)");
    }
    Ok(())
}
