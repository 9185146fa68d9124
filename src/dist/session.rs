//! The start and end of a run's participation in a multi-rank job: the world from the
//! launcher, the handshake (same config, same binary, everyone arrived), the watchdog, and
//! per-rank statistics for the logs. With one process none of this does anything.
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::handshake::{describe_peers, handshake};
use super::watchdog::{PeerId, Watchdog};
use super::{Launch, ParallelConfig, World};

/// Where ranks leave their arrival notes and heartbeats, under the run directory.
pub const RANKS_DIR: &str = "ranks";

/// A run's place in the job.
pub struct Session {
    pub world: World,
    watchdog: Option<Watchdog>,
}

impl Session {
    /// One process.
    pub fn single() -> Self {
        Self { world: World::single(), watchdog: None }
    }

    /// Joins the job the launcher started (or runs alone): `device` is this rank's device,
    /// `config_json` the resolved config every rank must share.
    pub fn start(launch: Launch, device: &Device, parallel: &ParallelConfig, run_dir: &Path, config_json: &[u8]) -> Result<Self> {
        let world = World::init(launch, device, parallel)?;
        if world.size() == 1 {
            return Ok(Self { world, watchdog: None });
        }
        let dir = run_dir.join(RANKS_DIR);
        let timeout = Duration::from_secs_f64(parallel.timeout_s);
        let started = handshake(&world, &dir, &super::handshake::config_hash(config_json), timeout)?;
        let me = PeerId::this_process(world.rank());
        let peers: Vec<PeerId> = started.peers.iter().filter(|p| p.rank != world.rank()).cloned().collect();
        let watchdog = Watchdog::start(&dir, &started.launch_id, me, peers, timeout)?;
        if world.is_main() {
            eprintln!(
                "{} ranks ({}, {} engine): {}",
                world.size(),
                world.launch.launcher.name(),
                world.comm().engine_name(),
                describe_peers(&started.peers)
            );
        }
        Ok(Self { world, watchdog: Some(watchdog) })
    }

    /// What this rank is doing (reported if it is the one lost).
    pub fn note(&self, note: impl Into<String>) {
        if let Some(w) = &self.watchdog {
            w.set_note(note);
        }
    }

    /// This rank finished its part: its peers stop watching it.
    pub fn finish(mut self) {
        if let Some(w) = self.watchdog.take() {
            w.finish();
        }
    }
}

/// Per-rank numbers of a logging window: peak memory, and communication per step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankStats {
    /// Peak memory of each rank since the previous record (bytes).
    pub peak_mem_bytes: Vec<Option<u64>>,
    /// Bytes each rank sent per step (bandwidth-optimal algorithm volumes).
    pub comm_bytes_per_step: Vec<f64>,
    /// Seconds each rank spent in collectives per step.
    pub comm_s_per_step: Vec<f64>,
}

impl RankStats {
    /// Gathers every rank's numbers (a collective: every rank calls it at the same step).
    pub fn gather(world: &World, peak: Option<u64>, comm_bytes: f64, comm_s: f64) -> Result<Self> {
        let mine = serde_json::to_vec(&(peak, comm_bytes, comm_s))?;
        let mut out = RankStats::default();
        for bytes in world.comm().all_gather_vec(&mine)? {
            let (p, b, s): (Option<u64>, f64, f64) = serde_json::from_slice(&bytes)?;
            out.peak_mem_bytes.push(p);
            out.comm_bytes_per_step.push(b);
            out.comm_s_per_step.push(s);
        }
        Ok(out)
    }
}
