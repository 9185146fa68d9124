//! Data parallelism: one process per device, started by torchrun, mpiexec or srun.
//!
//! [`World`] is what the rest of `cpt` sees: this process's rank, the world size, the
//! device it drives, and a [`comm::Comm`] whose engine (MPI for CPU tensors, NCCL for CUDA
//! tensors, or nothing for one process) does every collective. The pieces around it:
//! - [`launcher`]: the launcher's environment -> rank, size, local rank;
//! - [`shard`]: how parameters split into per-rank shards (ZeRO-1 and ZeRO-3);
//! - [`zero`]: the sharded optimiser (reduce-scatter, sharded AdamW, all-gather);
//! - [`layers`]: ZeRO-3's per-layer gather and reduce-scatter, used by the model;
//! - [`checkpoint`]: per-rank optimiser shards, their index, and resharding on load;
//! - [`handshake`] and [`watchdog`]: refuse mismatched ranks at start, end all ranks when
//!   one is lost;
//! - [`plan`]: the memory planner of `cpt plan`.
pub mod checkpoint;
pub mod comm;
pub mod config;
pub mod handshake;
pub mod launcher;
pub mod layers;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod optimizer;
pub mod plan;
pub mod session;
pub mod shard;
pub mod watchdog;
pub mod zero;

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::Device;

pub use comm::Comm;
pub use config::{ParallelConfig, ZeroStage};
pub use launcher::{Launch, Launcher};

/// This process's place among the ranks of a run, and the communicator they share.
#[derive(Clone)]
pub struct World {
    pub launch: Launch,
    comm: Arc<Comm>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("local_rank", &self.launch.local_rank)
            .field("engine", &self.comm.engine_name())
            .finish()
    }
}

impl World {
    /// One process, no communication: exactly the behaviour of a run without a launcher.
    pub fn single() -> Self {
        Self { launch: Launch::single(), comm: Arc::new(Comm::single()) }
    }

    /// The world the launcher describes, with the engine for `device` (this rank's device:
    /// NCCL runs on its stream). One process (no launcher, or a launcher with one rank)
    /// needs no engine.
    pub fn init(launch: Launch, device: &Device, parallel: &ParallelConfig) -> Result<Self> {
        if launch.world_size == 1 {
            return Ok(Self { launch, comm: Arc::new(Comm::single()) });
        }
        let comm = if device.is_cuda() { cuda_engine(&launch, parallel, device)? } else { cpu_engine(&launch)? };
        if comm.size() != launch.world_size || comm.rank() != launch.rank {
            bail!(
                "world size mismatch: {} says rank {} of {}, but the {} communicator has rank {} of {} \
                 (were all ranks started by the same launcher? an MPI build must be started by mpiexec or srun)",
                launch.launcher.name(),
                launch.rank,
                launch.world_size,
                comm.engine_name(),
                comm.rank(),
                comm.size()
            );
        }
        Ok(Self { launch, comm: Arc::new(comm) })
    }

    pub fn rank(&self) -> usize {
        self.launch.rank
    }

    pub fn size(&self) -> usize {
        self.launch.world_size
    }

    /// Rank 0 writes the shared outputs (metrics, the model directory, the index).
    pub fn is_main(&self) -> bool {
        self.launch.rank == 0
    }

    pub fn comm(&self) -> &Arc<Comm> {
        &self.comm
    }

    /// The device name this rank trains on: `cuda:LOCAL_RANK` for GPUs.
    pub fn cuda_device_name(&self) -> String {
        format!("cuda:{}", self.launch.local_rank)
    }

    /// Runs `f` on rank 0 only; the other ranks wait at a barrier until it is done (for
    /// work done once for all: tokenising the corpus, creating the base model).
    pub fn main_first<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        let out = if self.is_main() { Some(f()?) } else { None };
        self.comm.barrier()?;
        Ok(out)
    }
}

#[cfg(feature = "mpi")]
fn cpu_engine(_launch: &Launch) -> Result<Comm> {
    Ok(Comm::new(Box::new(mpi::MpiEngine::init()?)))
}

#[cfg(not(feature = "mpi"))]
fn cpu_engine(launch: &Launch) -> Result<Comm> {
    bail!(
        "{} started {} ranks, but this build of cpt has no MPI for CPU training: build with `--features mpi` (docs/distributed.md)",
        launch.launcher.name(),
        launch.world_size
    )
}

#[cfg(feature = "nccl")]
fn cuda_engine(launch: &Launch, parallel: &ParallelConfig, device: &Device) -> Result<Comm> {
    nccl::init(launch, parallel, device)
}

#[cfg(not(feature = "nccl"))]
fn cuda_engine(launch: &Launch, _parallel: &ParallelConfig, _device: &Device) -> Result<Comm> {
    bail!(
        "{} started {} ranks on GPUs, but this build of cpt has no NCCL: build with `--features nccl` (docs/distributed.md)",
        launch.launcher.name(),
        launch.world_size
    )
}
