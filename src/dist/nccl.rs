//! The NCCL engine (cudarc's `nccl` module, turned on by candle's `nccl` feature) for CUDA
//! tensors.
//!
//! The communicator runs on candle's own CUDA stream of this rank's device, so NCCL work is
//! ordered with the compute around it. Tensor collectives are candle custom ops (the
//! output is a fresh device buffer; nothing leaves the GPU). Small host values (the
//! handshake, per-step scalars) travel through MPI where the run has it, else through
//! one-element device buffers.
//!
//! The unique id that joins the ranks comes from (`parallel.nccl_bootstrap`):
//! - `mpi`: rank 0 creates it and broadcasts its 128 bytes over MPI (mpiexec, srun);
//! - `env`: NCCL's own bootstrap from `NCCL_COMM_ID=host:port`, which every rank turns into
//!   the same id; under torchrun it is set from MASTER_ADDR and MASTER_PORT + 1 when unset
//!   (torchrun's own agent may listen on MASTER_PORT itself);
//! - `file`: rank 0 writes it to `parallel.nccl_id_file` (temporary name, then rename); the
//!   others wait for the file.
//!
//! A `Comm` must stay on the thread that created it: every call checks that it does.
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm as NcclComm, Id, ReduceOp};
use candle_core::cuda_backend::cudarc::nccl::NcclType;
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use super::comm::{Comm, Engine};
use super::config::{NcclBootstrap, ParallelConfig};
use super::launcher::{Launch, Launcher};

/// The NCCL communicator of this rank, with the thread it belongs to.
struct Handle {
    comm: NcclComm,
    device: CudaDevice,
    owner: ThreadId,
}

// SAFETY: the communicator is only ever used from the thread that created it (checked by
// `Handle::get` before every call); the handle itself is moved, never shared concurrently.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Handle {
    fn get(&self) -> candle_core::Result<&NcclComm> {
        if std::thread::current().id() != self.owner {
            candle_core::bail!("the NCCL communicator was used from another thread than the one that created it");
        }
        Ok(&self.comm)
    }
}

fn nccl_err(e: impl std::fmt::Debug) -> candle_core::Error {
    candle_core::Error::Msg(format!("NCCL: {e:?}"))
}

pub struct NcclEngine {
    handle: Arc<Handle>,
    rank: usize,
    size: usize,
    /// MPI for host values, when the run was started by mpiexec or srun and built with it.
    host: Option<Box<dyn Engine>>,
}

/// Joins the NCCL communicator of all ranks on `device` (this rank's `cuda:LOCAL_RANK`).
pub fn init(launch: &Launch, parallel: &ParallelConfig, device: &Device) -> Result<Comm> {
    let Device::Cuda(cuda) = device else { bail!("NCCL needs a CUDA device, got {device:?}") };
    let host = host_engine(launch)?;
    let bootstrap = match parallel.nccl_bootstrap {
        NcclBootstrap::Auto if host.is_some() => NcclBootstrap::Mpi,
        NcclBootstrap::Auto => NcclBootstrap::Env,
        other => other,
    };
    let id = match bootstrap {
        NcclBootstrap::Mpi => {
            let Some(mpi) = host.as_deref() else {
                bail!("parallel.nccl_bootstrap: mpi needs a build with --features mpi started by mpiexec or srun");
            };
            let mut bytes = [0u8; 128];
            if launch.rank == 0 {
                bytes = id_bytes(&Id::new().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?);
            }
            mpi.broadcast_bytes(&mut bytes, 0)?;
            id_from(&bytes)
        }
        NcclBootstrap::Env => {
            if std::env::var_os("NCCL_COMM_ID").is_none() {
                let (Some(addr), Some(port)) = (&launch.master_addr, launch.master_port) else {
                    bail!("parallel.nccl_bootstrap: env needs NCCL_COMM_ID=host:port, or MASTER_ADDR and MASTER_PORT (torchrun)");
                };
                ensure!(launch.launcher == Launcher::Torchrun || port > 0, "MASTER_PORT is 0");
                // SAFETY: set once at start-up, before any other thread reads the environment.
                unsafe { std::env::set_var("NCCL_COMM_ID", format!("{addr}:{}", port.wrapping_add(1))) };
            }
            // With NCCL_COMM_ID set, every rank computes the same id; rank 0 hosts the root.
            Id::new().map_err(|e| anyhow!("ncclGetUniqueId with NCCL_COMM_ID: {e:?}"))?
        }
        NcclBootstrap::File => {
            let path = parallel.nccl_id_file.as_ref().context("parallel.nccl_id_file is required")?;
            if launch.rank == 0 {
                let id = Id::new().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?;
                crate::util::atomic::write_file_atomic(path, &id_bytes(&id))?;
                id
            } else {
                let deadline = Instant::now() + Duration::from_secs_f64(parallel.timeout_s);
                loop {
                    match std::fs::read(path) {
                        Ok(bytes) if bytes.len() == 128 => break id_from(&bytes),
                        _ if Instant::now() > deadline => bail!(
                            "parallel.nccl_id_file {}: rank 0 did not write the NCCL id within {} s",
                            path.display(),
                            parallel.timeout_s
                        ),
                        _ => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            }
        }
        NcclBootstrap::Auto => unreachable!("resolved above"),
    };
    let comm = NcclComm::from_rank(cuda.cuda_stream(), launch.rank, launch.world_size, id)
        .map_err(|e| anyhow!("ncclCommInitRank (rank {} of {}): {e:?}", launch.rank, launch.world_size))?;
    let handle = Arc::new(Handle { comm, device: cuda.clone(), owner: std::thread::current().id() });
    Ok(Comm::new(Box::new(NcclEngine { handle, rank: launch.rank, size: launch.world_size, host })))
}

#[cfg(feature = "mpi")]
fn host_engine(launch: &Launch) -> Result<Option<Box<dyn Engine>>> {
    if launch.launcher.provides_mpi() {
        Ok(Some(Box::new(super::mpi::MpiEngine::init()?)))
    } else {
        Ok(None)
    }
}

#[cfg(not(feature = "mpi"))]
fn host_engine(_launch: &Launch) -> Result<Option<Box<dyn Engine>>> {
    Ok(None)
}

fn id_bytes(id: &Id) -> [u8; 128] {
    let mut out = [0u8; 128];
    for (o, c) in out.iter_mut().zip(id.internal().iter()) {
        *o = *c as u8;
    }
    out
}

fn id_from(bytes: &[u8]) -> Id {
    let mut internal = [0 as std::ffi::c_char; 128];
    for (i, b) in internal.iter_mut().zip(bytes) {
        *i = *b as std::ffi::c_char;
    }
    Id::uninit(internal)
}

/// Which collective a [`Collective`] op runs.
#[derive(Clone, Copy)]
enum Kind {
    AllReduce,
    ReduceScatter,
    AllGather,
}

/// A collective as a candle op on a contiguous 1-D (or any, for all-reduce) CUDA tensor.
struct Collective {
    handle: Arc<Handle>,
    kind: Kind,
    size: usize,
}

impl Collective {
    fn run<T: NcclType + DeviceRepr + candle_core::cuda_backend::CudaDType>(
        &self,
        s: &CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (start, end) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("NCCL: input must be contiguous".into()))?;
        let n = end - start;
        let comm = self.handle.get()?;
        let src = s.as_cuda_slice::<T>()?.slice(start..end);
        let device = self.handle.device.clone();
        let (out_len, shape) = match self.kind {
            Kind::AllReduce => (n, l.shape().clone()),
            Kind::ReduceScatter => (n / self.size, Shape::from(n / self.size)),
            Kind::AllGather => (n * self.size, Shape::from(n * self.size)),
        };
        // SAFETY: every element is written by the collective before anyone reads it.
        let mut dst = unsafe { device.alloc::<T>(out_len)? };
        match self.kind {
            Kind::AllReduce => comm.all_reduce(&src, &mut dst, &ReduceOp::Sum).map_err(nccl_err)?,
            Kind::ReduceScatter => comm.reduce_scatter(&src, &mut dst, &ReduceOp::Sum).map_err(nccl_err)?,
            Kind::AllGather => comm.all_gather(&src, &mut dst).map_err(nccl_err)?,
        };
        Ok((CudaStorage::wrap_cuda_slice(dst, device), shape))
    }
}

impl CustomOp1 for Collective {
    fn name(&self) -> &'static str {
        "cpt-nccl"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("NCCL collectives need CUDA tensors")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        match s.dtype() {
            DType::F32 => self.run::<f32>(s, l),
            DType::BF16 => self.run::<half::bf16>(s, l),
            DType::F16 => self.run::<half::f16>(s, l),
            DType::F64 => self.run::<f64>(s, l),
            DType::U8 => self.run::<u8>(s, l),
            other => candle_core::bail!("NCCL: no collective for {other:?}"),
        }
    }
}

impl NcclEngine {
    fn apply(&self, t: &Tensor, kind: Kind) -> Result<Tensor> {
        ensure!(t.device().is_cuda(), "the NCCL engine needs CUDA tensors (got a {:?} tensor)", t.device());
        Ok(t.contiguous()?.apply_op1_no_bwd(&Collective { handle: Arc::clone(&self.handle), kind, size: self.size })?)
    }

    fn device(&self) -> Device {
        Device::Cuda(self.handle.device.clone())
    }

    /// A host vector through a device collective and back.
    fn host_round_trip<T: candle_core::WithDType>(&self, v: &[T], kind: Kind) -> Result<Vec<T>> {
        let t = Tensor::from_slice(v, v.len(), &self.device())?;
        Ok(self.apply(&t, kind)?.to_vec1::<T>()?)
    }
}

impl Engine for NcclEngine {
    fn name(&self) -> &'static str {
        "nccl"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn barrier(&self) -> Result<()> {
        if let Some(host) = &self.host {
            return host.barrier();
        }
        self.host_round_trip(&[0f32], Kind::AllReduce)?;
        Ok(())
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        if let Some(host) = &self.host {
            return host.broadcast_bytes(buf, root);
        }
        // An all-gather, keeping the root's part (NCCL broadcast needs a root buffer of the
        // same type on every rank; this keeps one code path for host bytes).
        let all = self.host_round_trip(buf, Kind::AllGather)?;
        buf.copy_from_slice(&all[root * buf.len()..(root + 1) * buf.len()]);
        Ok(())
    }

    fn all_gather_bytes(&self, mine: &[u8], all: &mut [u8]) -> Result<()> {
        if let Some(host) = &self.host {
            return host.all_gather_bytes(mine, all);
        }
        all.copy_from_slice(&self.host_round_trip(mine, Kind::AllGather)?);
        Ok(())
    }

    fn all_gather_f32(&self, mine: &[f32], all: &mut [f32]) -> Result<()> {
        all.copy_from_slice(&self.host_round_trip(mine, Kind::AllGather)?);
        Ok(())
    }

    fn all_gather_u16(&self, mine: &[u16], all: &mut [u16]) -> Result<()> {
        let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
        let gathered = self.host_round_trip(&bytes, Kind::AllGather)?;
        for (o, c) in all.iter_mut().zip(gathered.chunks_exact(2)) {
            *o = u16::from_le_bytes([c[0], c[1]]);
        }
        Ok(())
    }

    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()> {
        buf.copy_from_slice(&self.host_round_trip(buf, Kind::AllReduce)?);
        Ok(())
    }

    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(&self.host_round_trip(send, Kind::ReduceScatter)?);
        Ok(())
    }

    fn all_reduce_tensor(&self, t: &Tensor) -> Result<Tensor> {
        self.apply(t, Kind::AllReduce)
    }

    fn reduce_scatter_tensor(&self, t: &Tensor) -> Result<Tensor> {
        self.apply(t, Kind::ReduceScatter)
    }

    fn all_gather_tensor(&self, t: &Tensor) -> Result<Tensor> {
        self.apply(t, Kind::AllGather)
    }

    fn abort(&self, code: i32) {
        if let Some(host) = &self.host {
            host.abort(code);
        }
    }
}
