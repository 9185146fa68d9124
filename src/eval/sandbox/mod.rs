//! Running model-written Python safely, for the code benchmarks.
//!
//! Each program runs in its own `python3 -I` process in a fresh temporary directory, with:
//! - a wall-clock limit, after which its whole process group is killed (SIGKILL);
//! - its own PID namespace (the program is PID 1 of it, tied to its parent by
//!   `PR_SET_PDEATHSIG`): when it dies or is killed, every process it started dies too,
//!   even one that left the process group;
//! - its own network namespace: no network, not even the host's loopback;
//! - resource limits: address space (memory), processes of its user (fork bombs), file
//!   size, CPU seconds, no core dumps; run as root, it drops to `nobody` (root ignores the
//!   process limit);
//! - Landlock: writes only beneath its temporary directory, no TCP, no signals to processes
//!   outside it (where the kernel's Landlock ABI allows);
//! - an empty environment, `/dev/null` as stdin and stdout, stderr kept (its tail).
//!
//! Where the OS refuses namespaces or has no Landlock, [`Sandbox::new`] says so in
//! [`Sandbox::warnings`] and runs without them (limits and process-group kill remain).
mod landlock;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// The user a root sandbox runs programs as.
const NOBODY: u32 = 65534;
/// Bytes of stderr kept for the report.
const STDERR_TAIL: u64 = 2000;

/// Limits of one program run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    /// Address space (RLIMIT_AS) in bytes.
    pub memory_bytes: u64,
    /// Extra processes the program may start.
    pub processes: u64,
    /// Largest file it may write (RLIMIT_FSIZE).
    pub file_bytes: u64,
}

impl Default for Limits {
    /// The harness' `code_eval` timeout (3 s), 2 GiB, 64 processes, 64 MiB files.
    fn default() -> Self {
        Self { timeout: Duration::from_secs(3), memory_bytes: 2 << 30, processes: 64, file_bytes: 64 << 20 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Exit status 0.
    Passed,
    /// Any other exit (an exception, a failed assertion, a signal, a refused resource).
    Failed,
    /// Killed at the wall-clock limit.
    TimedOut,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub verdict: Verdict,
    /// Exit status (128 + signal number for a signal).
    pub exit_code: Option<i32>,
    pub seconds: f64,
    /// The last bytes the program wrote to stderr.
    pub stderr_tail: String,
    /// The temporary directory it ran in (removed when the run ends).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// How much isolation this machine grants.
#[derive(Debug, Clone, Copy)]
struct Isolation {
    namespaces: bool,
    landlock: bool,
    drop_to_nobody: bool,
}

/// Runs Python programs under [`Limits`] with the isolation the OS grants.
pub struct Sandbox {
    python: PathBuf,
    limits: Limits,
    isolation: Isolation,
    warnings: Vec<String>,
}

impl Sandbox {
    /// Finds the Python interpreter (`$CPT_PYTHON`, else `python3` on PATH; run as root, the
    /// system's `/usr/bin/python3` when `nobody` cannot reach the first one) and probes which
    /// isolation works here.
    pub fn new(limits: Limits) -> Result<Self> {
        let candidates = python_candidates()?;
        let root = unsafe { libc::geteuid() } == 0;
        let landlock = landlock::abi_version().is_some();
        let mut last_error = None;
        for namespaces in [true, false] {
            for python in &candidates {
                let sandbox = Self {
                    python: python.clone(),
                    limits,
                    isolation: Isolation { namespaces, landlock, drop_to_nobody: root },
                    warnings: Vec::new(),
                };
                match sandbox.probe() {
                    Ok(()) => return Ok(sandbox.with_warnings(&candidates[0])),
                    Err(e) => last_error = Some(e),
                }
            }
        }
        Err(last_error.expect("at least one candidate")).context("no Python interpreter runs in the sandbox")
    }

    fn with_warnings(mut self, first_choice: &Path) -> Self {
        if !self.isolation.landlock {
            self.warnings.push(
                "Landlock is not available (Linux >= 5.13 with Landlock enabled): generated programs can write \
                 anywhere their user may"
                    .into(),
            );
        }
        if !self.isolation.namespaces {
            self.warnings.push(
                "this OS refuses new PID/network namespaces here: generated programs run without network isolation \
                 and only their process group is killed at the time limit"
                    .into(),
            );
        }
        if self.python != first_choice {
            self.warnings.push(format!(
                "{} cannot run as the sandbox's user; using {}",
                first_choice.display(),
                self.python.display()
            ));
        }
        self
    }

    fn probe(&self) -> Result<()> {
        let r = self.run("pass\n")?;
        if r.verdict != Verdict::Passed {
            bail!("`python3 -c pass` in the sandbox: {:?}, {}", r.verdict, r.stderr_tail);
        }
        Ok(())
    }

    /// What the sandbox could not do on this machine (print these to the user).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs `program` (Python source) and reports how it ended.
    pub fn run(&self, program: &str) -> Result<RunResult> {
        let dir = tempfile::Builder::new().prefix("cpt-sandbox-").tempdir().context("creating the sandbox directory")?;
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("program.py"), program).context("writing the program")?;
        let stderr_path = path.join("stderr.txt");
        let stderr = std::fs::File::create(&stderr_path).context("creating the stderr file")?;
        let iso = self.isolation;
        if iso.drop_to_nobody {
            for p in [path.as_path(), &path.join("program.py"), &stderr_path] {
                chown(p, NOBODY)?;
            }
        }
        let ruleset = if iso.landlock { Some(landlock::Ruleset::new(&path)?) } else { None };
        let uid = if iso.drop_to_nobody { NOBODY } else { unsafe { libc::getuid() } };
        let nproc = processes_of(uid) + self.limits.processes + 1;
        let limits = self.limits;
        let cpu_seconds = limits.timeout.as_secs() + 2;
        let new_user_ns = !iso.drop_to_nobody;

        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-B", "program.py"])
            .current_dir(&path)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &path)
            .env("TMPDIR", &path)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: the closure runs between fork and exec and makes only system calls
        // (no allocation, no locks): see each call.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if iso.namespaces {
                    enter_namespaces(new_user_ns)?;
                }
                set_limit(libc::RLIMIT_AS, limits.memory_bytes)?;
                set_limit(libc::RLIMIT_FSIZE, limits.file_bytes)?;
                set_limit(libc::RLIMIT_CORE, 0)?;
                set_limit(libc::RLIMIT_CPU, cpu_seconds)?;
                set_limit(libc::RLIMIT_NPROC, nproc)?;
                if iso.drop_to_nobody
                    && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                // After the uid change, which clears it: die with the process we forked from.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(r) = &ruleset {
                    r.restrict_self()?;
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {}", self.python.display()))?;
        let pid = child.id() as i32;
        let deadline = started + limits.timeout;
        let (status, timed_out) = loop {
            if let Some(status) = child.try_wait()? {
                break (status, false);
            }
            if Instant::now() >= deadline {
                // The group first (everything that stayed in it), then the leader; the
                // namespace's PID 1 dies with its parent, and the namespace with it.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
                break (child.wait()?, true);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let seconds = started.elapsed().as_secs_f64();
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status.code().or(status.signal().map(|s| 128 + s));
        let verdict = match (timed_out, exit_code) {
            (true, _) => Verdict::TimedOut,
            (false, Some(0)) => Verdict::Passed,
            _ => Verdict::Failed,
        };
        Ok(RunResult { verdict, exit_code, seconds, stderr_tail: read_tail(&stderr_path), dir: path })
    }
}

/// New PID and network namespaces (and a user namespace when not root, which the others
/// need then). A PID namespace holds only the children of the caller, so the caller forks:
/// the child becomes PID 1 and goes on to `exec`; this process waits for it and exits with
/// its status, never returning.
unsafe fn enter_namespaces(new_user_ns: bool) -> std::io::Result<()> {
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWNET;
    if new_user_ns {
        flags |= libc::CLONE_NEWUSER;
    }
    if libc::unshare(flags) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let pid = libc::fork();
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        // Close every inherited descriptor (among them the pipe that tells the spawner
        // whether exec worked: only the real program may hold it).
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
        libc::_exit(code);
    }
    Ok(())
}

unsafe fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    if libc::setrlimit(resource, &lim) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn chown(path: &Path, uid: u32) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    if unsafe { libc::chown(c.as_ptr(), uid, uid) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("chown {}", path.display()));
    }
    Ok(())
}

/// Processes whose real user is `uid` now (RLIMIT_NPROC counts them all).
fn processes_of(uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut n = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else { continue };
        let real = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
        if real.and_then(|r| r.parse::<u32>().ok()) == Some(uid) {
            n += 1;
        }
    }
    n
}

fn read_tail(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(STDERR_TAIL)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The real interpreter behind `$CPT_PYTHON` or `python3` (wrappers such as pyenv's shims
/// need an environment the sandbox does not pass on), then the system's interpreters.
fn python_candidates() -> Result<Vec<PathBuf>> {
    let name = std::env::var("CPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&name)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .with_context(|| format!("running `{name}`: the code benchmarks need Python 3 (set CPT_PYTHON to choose one)"))?;
    if !out.status.success() {
        bail!("`{name} -c 'import sys'` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let first = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !first.is_file() {
        bail!("`{name}` reports its interpreter at {}, which does not exist", first.display());
    }
    let mut all = vec![first];
    for system in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        let p = PathBuf::from(system);
        if p.is_file() && !all.contains(&p) {
            all.push(p);
        }
    }
    Ok(all)
}

/// Runs every program on `workers` threads; results in program order.
pub fn run_all(sandbox: &Sandbox, programs: &[String], workers: usize, progress: &(dyn Fn(usize) + Sync)) -> Result<Vec<RunResult>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<RunResult>>>> = programs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers.max(1).min(programs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= programs.len() {
                    break;
                }
                let r = sandbox.run(&programs[i]);
                *results[i].lock().expect("no panics while holding") = Some(r);
                progress(done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1);
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().expect("no panics while holding").expect("every program ran")).collect()
}
