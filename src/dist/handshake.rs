//! The start of a multi-rank run: every rank says who it is and what it runs (a hash of
//! the resolved config and of the binary), and the run starts only when all ranks arrived
//! and agree. A rank that never arrives ends the others after `parallel.timeout_s` with the
//! list of ranks that did arrive; mismatched configs or binaries are refused on every rank.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::watchdog::{hostname, PeerId, EXIT_LOST_PEER};
use super::World;

/// What each rank brings to the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    #[serde(flatten)]
    pub peer: PeerId,
    /// The launcher's job identity, when it gives one.
    pub job_key: Option<String>,
    /// Seconds since the epoch when this rank arrived.
    pub arrived_unix: u64,
    /// xxh3 of the resolved training config (after `--set`).
    pub config_hash: String,
    /// xxh3 of the running executable, and the cpt version.
    pub binary_hash: String,
    pub version: String,
}

/// The agreed start: every rank's identity, and an id of this launch.
#[derive(Debug, Clone)]
pub struct Started {
    pub peers: Vec<PeerId>,
    pub launch_id: String,
}

pub fn arrival_path(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!("arrived-{rank:05}.json"))
}

/// The hash the handshake compares for configs.
pub fn config_hash(resolved: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(resolved))
}

/// xxh3 of the running executable's bytes.
pub fn binary_hash() -> Result<String> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("reading {} to hash it", exe.display()))?;
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs the handshake. `dir` (shared by all ranks, e.g. `<run dir>/ranks`) receives an
/// arrival note per rank, so a rank that never arrives can be named.
pub fn handshake(world: &World, dir: &Path, config_hash: &str, timeout: Duration) -> Result<Started> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(delay) = test_delay(world.rank()) {
        std::thread::sleep(delay);
    }
    let me = Arrival {
        peer: PeerId::this_process(world.rank()),
        job_key: world.launch.job_key.clone(),
        arrived_unix: now_unix(),
        config_hash: config_hash.to_string(),
        binary_hash: binary_hash()?,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    crate::util::atomic::write_file_atomic(&arrival_path(dir, me.peer.rank), &serde_json::to_vec_pretty(&me)?)?;

    let arrived = Arc::new(AtomicBool::new(false));
    let timer = {
        let (arrived, dir, me, size) = (Arc::clone(&arrived), dir.to_path_buf(), me.clone(), world.size());
        std::thread::spawn(move || {
            let until = std::time::Instant::now() + timeout;
            while std::time::Instant::now() < until {
                if arrived.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !arrived.load(Ordering::SeqCst) {
                eprintln!("error: {}", not_all_arrived(&dir, &me, size, timeout));
                unsafe { libc::_exit(EXIT_LOST_PEER) };
            }
        })
    };
    let gathered = world.comm().all_gather_vec(&serde_json::to_vec(&me)?);
    arrived.store(true, Ordering::SeqCst);
    let _ = timer.join();
    let all: Vec<Arrival> = gathered?
        .iter()
        .enumerate()
        .map(|(r, bytes)| serde_json::from_slice(bytes).with_context(|| format!("rank {r} sent an unreadable handshake")))
        .collect::<Result<_>>()?;
    check_agreement(&all)?;
    let mut key = Vec::new();
    for a in &all {
        key.extend_from_slice(format!("{}:{}:{}:{};", a.peer.rank, a.peer.pid, a.peer.host, a.arrived_unix).as_bytes());
    }
    Ok(Started { peers: all.into_iter().map(|a| a.peer).collect(), launch_id: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&key)) })
}

/// Refuses ranks whose config, binary or version differ from rank 0's.
pub fn check_agreement(all: &[Arrival]) -> Result<()> {
    let first = &all[0];
    let differ = |f: fn(&Arrival) -> &str| -> Vec<usize> {
        all.iter().filter(|a| f(a) != f(first)).map(|a| a.peer.rank).collect()
    };
    let configs = differ(|a| &a.config_hash);
    if !configs.is_empty() {
        bail!(
            "rank(s) {configs:?} were started with a different training config than rank 0 (config hash {} vs {}): every rank must run the same config file with the same --set overrides",
            all[configs[0]].config_hash,
            first.config_hash
        );
    }
    let binaries = differ(|a| &a.binary_hash);
    let versions = differ(|a| &a.version);
    if !binaries.is_empty() || !versions.is_empty() {
        let r = *binaries.first().or(versions.first()).expect("one differs");
        bail!(
            "rank(s) {:?} run a different cpt binary than rank 0 ({} {} on {} vs {} {} on {}): install the same build on every node",
            if binaries.is_empty() { &versions } else { &binaries },
            all[r].version,
            all[r].binary_hash,
            all[r].peer.host,
            first.version,
            first.binary_hash,
            first.peer.host
        );
    }
    Ok(())
}

/// The message of a handshake that timed out: which ranks left an arrival note for this
/// launch and which did not.
fn not_all_arrived(dir: &Path, me: &Arrival, size: usize, timeout: Duration) -> String {
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for rank in 0..size {
        let note: Option<Arrival> = std::fs::read(arrival_path(dir, rank)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        // A note of this launch: the same job key where the launcher gives one, else one
        // written since this rank could have been started.
        let ours = note.filter(|n| match (&n.job_key, &me.job_key) {
            (Some(a), Some(b)) => a == b,
            _ => n.arrived_unix + timeout.as_secs() + 5 >= me.arrived_unix,
        });
        match ours {
            Some(n) => present.push(format!("{}", n.peer)),
            None => missing.push(rank),
        }
    }
    format!(
        "rank {}: not all {size} ranks arrived within {:.0} s (parallel.timeout_s); missing: rank(s) {missing:?}; arrived: {}. \
         Check that every rank was started (same world size on every node) and can reach the others",
        me.peer.rank,
        timeout.as_secs_f64(),
        present.join(", ")
    )
}

/// Test hook: `CPT_TEST_DELAY_START=RANK:SECONDS` holds that rank back before the handshake
/// (a rank that never arrives).
fn test_delay(rank: usize) -> Option<Duration> {
    let spec = std::env::var("CPT_TEST_DELAY_START").ok()?;
    let (r, s) = spec.split_once(':')?;
    (r.trim().parse::<usize>().ok()? == rank).then(|| Duration::from_secs_f64(s.trim().parse().unwrap_or(0.0)))
}

/// A summary line of the ranks, printed by rank 0 at start (maps launcher messages that
/// name a pid back to a rank).
pub fn describe_peers(peers: &[PeerId]) -> String {
    let host = hostname();
    let mut parts: Vec<String> = peers.iter().map(|p| if p.host == host { format!("{}=pid {}", p.rank, p.pid) } else { format!("{}=pid {}@{}", p.rank, p.pid, p.host) }).collect();
    if parts.len() > 16 {
        let n = parts.len();
        parts.truncate(16);
        parts.push(format!("... ({n} ranks)"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(rank: usize, config: &str, binary: &str) -> Arrival {
        Arrival {
            peer: PeerId { rank, pid: 100 + rank as u32, host: "h".into() },
            job_key: None,
            arrived_unix: 0,
            config_hash: config.into(),
            binary_hash: binary.into(),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn different_configs_or_binaries_are_refused_naming_the_ranks() {
        assert!(check_agreement(&[arrival(0, "a", "x"), arrival(1, "a", "x")]).is_ok());
        let e = check_agreement(&[arrival(0, "a", "x"), arrival(1, "a", "x"), arrival(2, "b", "x")]).unwrap_err().to_string();
        assert!(e.contains("rank(s) [2]") && e.contains("different training config"), "{e}");
        let e = check_agreement(&[arrival(0, "a", "x"), arrival(1, "a", "y")]).unwrap_err().to_string();
        assert!(e.contains("rank(s) [1]") && e.contains("different cpt binary"), "{e}");
    }

    #[test]
    fn a_missing_rank_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut me = arrival(0, "a", "x");
        me.arrived_unix = now_unix();
        crate::util::atomic::write_file_atomic(&arrival_path(dir.path(), 0), &serde_json::to_vec(&me).unwrap()).unwrap();
        // A stale note of rank 1 from long ago does not count.
        let mut old = arrival(1, "a", "x");
        old.arrived_unix = me.arrived_unix - 3600;
        crate::util::atomic::write_file_atomic(&arrival_path(dir.path(), 1), &serde_json::to_vec(&old).unwrap()).unwrap();
        let msg = not_all_arrived(dir.path(), &me, 3, Duration::from_secs(10));
        assert!(msg.contains("missing: rank(s) [1, 2]"), "{msg}");
        assert!(msg.contains("rank 0 (pid 100 on h)"), "{msg}");
    }
}
