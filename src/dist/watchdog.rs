//! Lost ranks end the run instead of hanging it.
//!
//! Every rank writes a small heartbeat file under `<run dir>/ranks/` from a thread of its
//! own and reads the others'. A peer is lost when its file says it failed (an error or a
//! panic: seen within one poll), when its process is gone (peers on the same host: seen
//! within one poll), or when its heartbeat has not changed for `timeout` (any host). A rank
//! that sees a lost peer prints which one and why, marks itself failed (so its own peers
//! learn at once) and exits with status [`EXIT_LOST_PEER`], even if its main thread is
//! blocked inside a collective that will never complete. Checkpoints are committed by a
//! rename, so nothing complete is touched.
//!
//! Launchers usually end the other ranks themselves (mpiexec and torchrun do when one
//! exits abnormally); the watchdog covers the cases where they do not, and names the rank.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Exit status of a rank that ended because a peer was lost (EX_TEMPFAIL: a scheduler may
/// requeue the job, and `--resume` continues it).
pub const EXIT_LOST_PEER: i32 = 75;

/// Where a rank runs: what the others need to find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerId {
    pub rank: usize,
    pub pid: u32,
    pub host: String,
}

impl PeerId {
    pub fn this_process(rank: usize) -> Self {
        Self { rank, pid: std::process::id(), host: hostname() }
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} (pid {} on {})", self.rank, self.pid, self.host)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeatState {
    Running,
    Failed,
    Done,
}

/// The content of a heartbeat file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beat {
    /// Which launch wrote it (files of an earlier launch in the same run directory are
    /// ignored).
    pub launch: String,
    #[serde(flatten)]
    pub peer: PeerId,
    pub count: u64,
    pub state: BeatState,
    /// What the rank is doing (`step 12`, `checkpoint`), or why it failed.
    pub note: String,
}

pub fn heartbeat_path(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!("rank-{rank:05}.json"))
}

/// Writes `beat` under a temporary name and renames it into place (no fsync: a heartbeat
/// only has to be readable, not durable).
pub fn write_beat(dir: &Path, beat: &Beat) -> Result<()> {
    let path = heartbeat_path(dir, beat.peer.rank);
    let tmp = dir.join(format!("rank-{:05}.json.tmp-{}", beat.peer.rank, beat.peer.pid));
    std::fs::write(&tmp, serde_json::to_vec(beat)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", tmp.display()))
}

pub fn read_beat(dir: &Path, rank: usize) -> Option<Beat> {
    let bytes = std::fs::read(heartbeat_path(dir, rank)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

struct Shared {
    dir: PathBuf,
    launch: String,
    me: PeerId,
    count: u64,
    state: BeatState,
    note: String,
}

impl Shared {
    fn beat(&mut self) -> Beat {
        self.count += 1;
        Beat { launch: self.launch.clone(), peer: self.me.clone(), count: self.count, state: self.state, note: self.note.clone() }
    }

    fn write(&mut self) {
        let beat = self.beat();
        // A full disk or a vanished directory must not end the run by itself; the peers
        // time out on us if we really stop.
        let _ = write_beat(&self.dir, &beat);
    }
}

/// The running watchdog of this rank.
pub struct Watchdog {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The watchdog the panic hook and the error path report to.
static CURRENT: OnceLock<Arc<Mutex<Shared>>> = OnceLock::new();

/// How often heartbeats are written and read.
pub fn poll_interval(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

impl Watchdog {
    /// Starts beating for `me` and watching `peers` (every other rank of the launch).
    pub fn start(dir: &Path, launch: &str, me: PeerId, peers: Vec<PeerId>, timeout: Duration) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let shared = Arc::new(Mutex::new(Shared {
            dir: dir.to_path_buf(),
            launch: launch.to_string(),
            me: me.clone(),
            count: 0,
            state: BeatState::Running,
            note: "starting".to_string(),
        }));
        shared.lock().expect("fresh lock").write();
        let _ = CURRENT.set(Arc::clone(&shared));
        install_panic_hook();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            let dir = dir.to_path_buf();
            let launch = launch.to_string();
            std::thread::Builder::new()
                .name("cpt-watchdog".into())
                .spawn(move || watch(&dir, &launch, &shared, &stop, &peers, timeout))
                .context("starting the watchdog thread")?
        };
        Ok(Self { shared, stop, thread: Some(thread) })
    }

    /// What this rank is doing now (shown when it is the one lost).
    pub fn set_note(&self, note: impl Into<String>) {
        if let Ok(mut s) = self.shared.lock() {
            s.note = note.into();
        }
    }

    /// This rank completed: peers stop expecting heartbeats from it.
    pub fn finish(mut self) {
        self.stop_thread();
        if let Ok(mut s) = self.shared.lock() {
            s.state = BeatState::Done;
            s.note = "finished".into();
            s.write();
        }
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Marks this rank failed with `message` so its peers end at once instead of after the
/// timeout (the error path of `cpt train` calls it; so does the panic hook).
pub fn report_failure(message: &str) {
    if let Some(shared) = CURRENT.get() {
        if let Ok(mut s) = shared.lock() {
            s.state = BeatState::Failed;
            s.note = message.to_string();
            s.write();
        }
    }
}

fn install_panic_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report_failure(&format!("panicked: {info}"));
            previous(info);
        }));
    });
}

/// What the watcher knows of one peer.
struct PeerWatch {
    id: PeerId,
    last_count: Option<u64>,
    last_change: Instant,
    done: bool,
}

fn watch(dir: &Path, launch: &str, shared: &Mutex<Shared>, stop: &AtomicBool, peers: &[PeerId], timeout: Duration) {
    let poll = poll_interval(timeout);
    let start = Instant::now();
    let my_host = hostname();
    let mut watched: Vec<PeerWatch> =
        peers.iter().map(|p| PeerWatch { id: p.clone(), last_count: None, last_change: start, done: false }).collect();
    while !stop.load(Ordering::SeqCst) {
        sleep_unless_stopped(poll, stop);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut s) = shared.lock() {
            s.write();
        }
        for peer in watched.iter_mut().filter(|p| !p.done) {
            let lost = match assess(dir, launch, peer, &my_host, timeout) {
                Some(reason) => reason,
                None => continue,
            };
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let me = shared.lock().map(|s| s.me.rank).unwrap_or(usize::MAX);
            let message = format!("lost {}: {lost}", peer.id);
            eprintln!("error: rank {me}: {message}; ending this rank too (exit status {EXIT_LOST_PEER}); `cpt train --resume` continues from the newest complete checkpoint");
            report_failure(&message);
            // The main thread may be blocked in a collective that never completes: leave
            // without running destructors or atexit handlers (which could block as well).
            unsafe { libc::_exit(EXIT_LOST_PEER) };
        }
    }
}

/// Why `peer` counts as lost, if it does.
fn assess(dir: &Path, launch: &str, peer: &mut PeerWatch, my_host: &str, timeout: Duration) -> Option<String> {
    if let Some(beat) = read_beat(dir, peer.id.rank).filter(|b| b.launch == launch && b.peer == peer.id) {
        match beat.state {
            BeatState::Failed => return Some(format!("it failed: {}", beat.note)),
            BeatState::Done => {
                peer.done = true;
                return None;
            }
            BeatState::Running => {
                if peer.last_count != Some(beat.count) {
                    peer.last_count = Some(beat.count);
                    peer.last_change = Instant::now();
                }
            }
        }
    }
    if peer.id.host == my_host && !process_alive(peer.id.pid) {
        return Some("its process is gone (killed, out of memory, or crashed)".to_string());
    }
    let silent = peer.last_change.elapsed();
    if silent > timeout {
        return Some(format!(
            "no heartbeat for {:.0} s (parallel.timeout_s is {:.0}): its process or host stopped",
            silent.as_secs_f64(),
            timeout.as_secs_f64()
        ));
    }
    None
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let until = Instant::now() + total;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(step.min(until.saturating_duration_since(Instant::now())));
    }
}

/// Whether a process of this host is still running (a zombie counts as gone).
pub fn process_alive(pid: u32) -> bool {
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => !matches!(stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()), Some('Z') | Some('X')),
        Err(_) => true,
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) } == 0;
    if !ok {
        return "unknown-host".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_on_this_host_is_lost_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = PeerId { rank: 1, pid: child.id(), host: hostname() };
        let mut peer = PeerWatch { id: id.clone(), last_count: None, last_change: Instant::now(), done: false };
        assert_eq!(assess(dir.path(), "L", &mut peer, &hostname(), Duration::from_secs(60)), None);
        child.kill().unwrap();
        // Not yet reaped: a zombie, which counts as gone.
        std::thread::sleep(Duration::from_millis(100));
        let why = assess(dir.path(), "L", &mut peer, &hostname(), Duration::from_secs(60)).expect("lost");
        assert!(why.contains("process is gone"), "{why}");
        child.wait().unwrap();
    }

    #[test]
    fn a_silent_remote_peer_is_lost_after_the_timeout_and_a_failed_one_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let remote = PeerId { rank: 2, pid: 1, host: "another-host".into() };
        let mut peer = PeerWatch { id: remote.clone(), last_count: None, last_change: Instant::now(), done: false };
        let timeout = Duration::from_millis(300);
        let beat = |count, state, note: &str| Beat { launch: "L".into(), peer: remote.clone(), count, state, note: note.into() };
        write_beat(dir.path(), &beat(1, BeatState::Running, "step 1")).unwrap();
        assert_eq!(assess(dir.path(), "L", &mut peer, "here", timeout), None);
        std::thread::sleep(Duration::from_millis(200));
        write_beat(dir.path(), &beat(2, BeatState::Running, "step 2")).unwrap();
        assert_eq!(assess(dir.path(), "L", &mut peer, "here", timeout), None, "a changing heartbeat keeps it alive");
        std::thread::sleep(Duration::from_millis(400));
        let why = assess(dir.path(), "L", &mut peer, "here", timeout).expect("silent too long");
        assert!(why.contains("no heartbeat"), "{why}");
        // A file from another launch does not count; a failure of this one does.
        let mut fresh = PeerWatch { id: remote.clone(), last_count: None, last_change: Instant::now(), done: false };
        let mut old = beat(9, BeatState::Failed, "old failure");
        old.launch = "OLD".into();
        write_beat(dir.path(), &old).unwrap();
        assert_eq!(assess(dir.path(), "L", &mut fresh, "here", timeout), None);
        write_beat(dir.path(), &beat(3, BeatState::Failed, "out of memory")).unwrap();
        let why = assess(dir.path(), "L", &mut fresh, "here", timeout).expect("failed");
        assert!(why.contains("out of memory"), "{why}");
    }

    #[test]
    fn a_finished_peer_is_no_longer_watched() {
        let dir = tempfile::tempdir().unwrap();
        let remote = PeerId { rank: 1, pid: 1, host: "another-host".into() };
        let mut peer = PeerWatch { id: remote.clone(), last_count: None, last_change: Instant::now(), done: false };
        write_beat(dir.path(), &Beat { launch: "L".into(), peer: remote, count: 5, state: BeatState::Done, note: "finished".into() }).unwrap();
        assert_eq!(assess(dir.path(), "L", &mut peer, "here", Duration::from_millis(1)), None);
        assert!(peer.done);
    }
}
