//! The `parallel:` section of a training config: how the optimiser state and the weights
//! are sharded across ranks, how large the communication buckets are, and how long a rank
//! waits for a lost peer.
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// ZeRO stage: what is sharded across data-parallel ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum ZeroStage {
    /// Nothing: gradients are all-reduced, every rank holds the full optimiser.
    #[default]
    Zero0,
    /// Optimiser state (f32 master weights and moments).
    Zero1,
    /// Optimiser state and the decoder layers' weights (gathered per layer when used).
    Zero3,
}

impl TryFrom<u8> for ZeroStage {
    type Error = String;
    fn try_from(v: u8) -> std::result::Result<Self, String> {
        match v {
            0 => Ok(ZeroStage::Zero0),
            1 => Ok(ZeroStage::Zero1),
            3 => Ok(ZeroStage::Zero3),
            other => Err(format!("zero stage {other} is not supported (use 0, 1 or 3)")),
        }
    }
}

impl From<ZeroStage> for u8 {
    fn from(z: ZeroStage) -> u8 {
        match z {
            ZeroStage::Zero0 => 0,
            ZeroStage::Zero1 => 1,
            ZeroStage::Zero3 => 3,
        }
    }
}

impl ZeroStage {
    pub fn number(self) -> u8 {
        self.into()
    }

    /// Whether the optimiser state is sharded.
    pub fn shards_optimizer(self) -> bool {
        self != ZeroStage::Zero0
    }
}

/// How NCCL's communicator finds its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NcclBootstrap {
    /// `mpi` under mpiexec/srun (when built with MPI), else `env`.
    #[default]
    Auto,
    /// Rank 0 creates the unique id and broadcasts it over MPI.
    Mpi,
    /// NCCL's own bootstrap: `NCCL_COMM_ID=host:port` (set from MASTER_ADDR and
    /// MASTER_PORT + 1 under torchrun when not given).
    Env,
    /// Rank 0 writes the id to `nccl_id_file` on a shared filesystem; the others read it.
    File,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParallelConfig {
    /// 0: replicated optimiser; 1: sharded optimiser state; 3: also sharded layer weights.
    pub zero: ZeroStage,
    /// Size of one reduce-scatter / all-gather / all-reduce call (MiB of the full buffer).
    pub bucket_mb: f64,
    /// A rank that stops (killed, out of memory, crashed) ends the others within this many
    /// seconds; also the wait for every rank to arrive at start.
    pub timeout_s: f64,
    pub nccl_bootstrap: NcclBootstrap,
    /// For `nccl_bootstrap: file`: a path every rank can read (shared filesystem), fresh
    /// for each launch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nccl_id_file: Option<PathBuf>,
}

impl Default for ParallelConfig {
    fn default() -> Self {
        Self { zero: ZeroStage::Zero0, bucket_mb: 32.0, timeout_s: 120.0, nccl_bootstrap: NcclBootstrap::Auto, nccl_id_file: None }
    }
}

impl ParallelConfig {
    /// Whether the section is absent in effect (it is then left out of saved configs, so
    /// one-process runs write exactly what they wrote before the section existed).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Problems as `parallel.<field>: what`, for the config's validation.
    pub fn problems(&self, recompute: bool) -> Vec<String> {
        let mut out = Vec::new();
        if !(self.bucket_mb.is_finite() && self.bucket_mb > 0.0) {
            out.push("parallel.bucket_mb: must be > 0".to_string());
        }
        if !(self.timeout_s.is_finite() && self.timeout_s >= 1.0) {
            out.push("parallel.timeout_s: must be >= 1".to_string());
        }
        if self.zero == ZeroStage::Zero3 && !recompute {
            out.push(
                "parallel.zero: 3 gathers each layer's weights again in the backward, inside the per-layer recomputation: set kernels.recompute: true"
                    .to_string(),
            );
        }
        match (self.nccl_bootstrap, &self.nccl_id_file) {
            (NcclBootstrap::File, None) => out.push("parallel.nccl_id_file: needed with nccl_bootstrap: file".to_string()),
            (b, Some(_)) if b != NcclBootstrap::File => {
                out.push("parallel.nccl_id_file: only applies to nccl_bootstrap: file".to_string())
            }
            _ => {}
        }
        out
    }

    /// Elements of f32 per communication bucket.
    pub fn bucket_elems(&self) -> usize {
        ((self.bucket_mb * (1u64 << 20) as f64 / 4.0) as usize).max(1024)
    }

    pub fn check(&self, recompute: bool) -> Result<()> {
        let problems = self.problems(recompute);
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", problems.join("\n  "))
        }
    }
}
