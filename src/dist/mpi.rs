//! The MPI engine (the `mpi` crate over MPICH or Open MPI) for CPU tensors.
//!
//! MPI is initialised with `MPI_THREAD_SERIALIZED`: every call goes through one mutex, so
//! the recomputation op (which communicates from inside the backward) and the loop can share
//! the communicator. Waits that may last (a barrier while rank 0 tokenises the corpus or
//! writes a checkpoint) poll a non-blocking barrier with sleeps instead of spinning on the
//! cores the busy rank needs.
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::comm::Engine;

pub struct MpiEngine {
    inner: Mutex<Inner>,
    rank: usize,
    size: usize,
}

struct Inner {
    world: SimpleCommunicator,
    /// Dropping it finalises MPI; kept for the life of the engine.
    _universe: Universe,
}

// SAFETY: MPI runs at MPI_THREAD_SERIALIZED and every call holds the mutex, so no two
// threads are ever inside MPI at once; the handles are plain values MPI owns.
unsafe impl Send for MpiEngine {}
unsafe impl Sync for MpiEngine {}

impl MpiEngine {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<Self> {
        let Some((universe, threading)) = mpi::initialize_with_threading(mpi::Threading::Serialized) else {
            bail!("MPI was already initialised in this process");
        };
        ensure!(
            threading >= mpi::Threading::Serialized,
            "the MPI library offers thread level {threading:?}; cpt needs Serialized"
        );
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Self { inner: Mutex::new(Inner { world, _universe: universe }), rank, size })
    }

    fn with<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> Result<T> {
        let inner = self.inner.lock().map_err(|_| anyhow::anyhow!("the MPI communicator lock is poisoned"))?;
        Ok(f(&inner.world))
    }
}

impl Engine for MpiEngine {
    fn name(&self) -> &'static str {
        "mpi"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn barrier(&self) -> Result<()> {
        let mut wait = Duration::from_micros(50);
        let inner = self.inner.lock().map_err(|_| anyhow::anyhow!("the MPI communicator lock is poisoned"))?;
        let mut request = inner.world.immediate_barrier();
        loop {
            match request.test() {
                Ok(_) => return Ok(()),
                Err(pending) => {
                    request = pending;
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.with(|w| w.process_at_rank(root as i32).broadcast_into(buf))
    }

    fn all_gather_bytes(&self, mine: &[u8], all: &mut [u8]) -> Result<()> {
        self.with(|w| w.all_gather_into(mine, all))
    }

    fn all_gather_f32(&self, mine: &[f32], all: &mut [f32]) -> Result<()> {
        self.with(|w| w.all_gather_into(mine, all))
    }

    fn all_gather_u16(&self, mine: &[u16], all: &mut [u16]) -> Result<()> {
        self.with(|w| w.all_gather_into(mine, all))
    }

    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.with(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()))
    }

    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        ensure!(send.len() == recv.len() * self.size, "reduce-scatter: {} elements into blocks of {}", send.len(), recv.len());
        self.with(|w| w.reduce_scatter_block_into(send, recv, SystemOperation::sum()))
    }

    fn abort(&self, code: i32) {
        // The lock may be held by a thread blocked in a collective: abort without it.
        if let Ok(inner) = self.inner.try_lock() {
            inner.world.abort(code);
        }
    }
}
