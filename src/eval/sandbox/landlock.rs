//! Landlock (Linux >= 5.13), through its three system calls: a ruleset built in the parent
//! (allocations and path opens are not safe between `fork` and `exec`), applied in the
//! child with two plain system calls. The sandboxed program may then write only beneath its
//! temporary directory, open no TCP connection (ABI >= 4) and signal no process outside
//! itself (ABI >= 6). Reading and executing stay allowed everywhere (Python must start).
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};

const SYS_CREATE_RULESET: libc::c_long = 444;
const SYS_ADD_RULE: libc::c_long = 445;
const SYS_RESTRICT_SELF: libc::c_long = 446;
const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: u32 = 1;

// Filesystem rights that change something (read, read-dir and execute stay unhandled, so
// allowed everywhere). Bits from linux/landlock.h, by the ABI that introduced them.
const FS_WRITE_ABI1: u64 = (1 << 1) // WRITE_FILE
    | (1 << 4) // REMOVE_DIR
    | (1 << 5) // REMOVE_FILE
    | (1 << 6) // MAKE_CHAR
    | (1 << 7) // MAKE_DIR
    | (1 << 8) // MAKE_REG
    | (1 << 9) // MAKE_SOCK
    | (1 << 10) // MAKE_FIFO
    | (1 << 11) // MAKE_BLOCK
    | (1 << 12); // MAKE_SYM
const FS_REFER: u64 = 1 << 13; // ABI 2
const FS_TRUNCATE: u64 = 1 << 14; // ABI 3
const NET_BIND_CONNECT_TCP: u64 = (1 << 0) | (1 << 1); // ABI 4
const SCOPE_ABSTRACT_UNIX_AND_SIGNAL: u64 = (1 << 0) | (1 << 1); // ABI 6

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The kernel's Landlock ABI version, or None where Landlock is missing or disabled.
pub fn abi_version() -> Option<u32> {
    // SAFETY: the version query reads no memory (null attr, size 0).
    let v = unsafe { libc::syscall(SYS_CREATE_RULESET, std::ptr::null::<RulesetAttr>(), 0usize, CREATE_RULESET_VERSION) };
    (v > 0).then_some(v as u32)
}

/// A ruleset ready to be applied in a child: writes only beneath `writable` (and to
/// `/dev/null`), no TCP, no signals or abstract sockets outside the sandbox, as far as the
/// kernel's ABI allows.
pub struct Ruleset {
    fd: OwnedFd,
}

impl Ruleset {
    pub fn new(writable: &Path) -> Result<Self> {
        let Some(abi) = abi_version() else { bail!("Landlock is not available in this kernel") };
        let mut fs = FS_WRITE_ABI1;
        if abi >= 2 {
            fs |= FS_REFER;
        }
        if abi >= 3 {
            fs |= FS_TRUNCATE;
        }
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: if abi >= 4 { NET_BIND_CONNECT_TCP } else { 0 },
            scoped: if abi >= 6 { SCOPE_ABSTRACT_UNIX_AND_SIGNAL } else { 0 },
        };
        // Older kernels reject a larger struct than they know.
        let size = match abi {
            1..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: attr outlives the call; size is at most its size.
        let fd = unsafe { libc::syscall(SYS_CREATE_RULESET, &attr as *const RulesetAttr, size, 0u32) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("landlock_create_ruleset");
        }
        // SAFETY: a fresh descriptor the kernel just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let ruleset = Self { fd };
        ruleset.allow(writable, fs)?;
        ruleset.allow(Path::new("/dev/null"), 1 << 1)?;
        Ok(ruleset)
    }

    fn allow(&self, path: &Path, access: u64) -> Result<()> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).context("path with NUL")?;
        // SAFETY: c is a valid C string; O_PATH opens nothing for reading or writing.
        let dir = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if dir < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("opening {}", path.display()));
        }
        // SAFETY: as above, a fresh descriptor.
        let dir = unsafe { OwnedFd::from_raw_fd(dir) };
        let rule = PathBeneathAttr { allowed_access: access, parent_fd: dir.as_raw_fd() };
        // SAFETY: rule outlives the call.
        let r = unsafe { libc::syscall(SYS_ADD_RULE, self.fd.as_raw_fd(), RULE_PATH_BENEATH, &rule as *const PathBeneathAttr, 0u32) };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("landlock_add_rule for {}", path.display()));
        }
        Ok(())
    }

    /// Applies the ruleset to the calling process. Only system calls: safe between `fork`
    /// and `exec`.
    pub fn restrict_self(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls on integers.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::syscall(SYS_RESTRICT_SELF, self.fd.as_raw_fd(), 0u32) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
