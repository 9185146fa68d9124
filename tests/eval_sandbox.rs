//! The sandbox for generated code: ordinary programs pass or fail by their exit status, and
//! hostile ones (an infinite loop, a fork bomb, a huge allocation, a write outside the
//! temporary directory, a network call) are contained and counted as failures.
//! Short limits keep this quick; needs `python3`, skipped with a message without it.
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use cpt::eval::sandbox::{Limits, Sandbox, Verdict};

fn sandbox(timeout_ms: u64) -> Option<Sandbox> {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIP: no python3 on PATH");
        return None;
    }
    let limits = Limits { timeout: Duration::from_millis(timeout_ms), memory_bytes: 512 << 20, ..Limits::default() };
    let s = Sandbox::new(limits).expect("python3 exists, so the sandbox must start");
    for w in s.warnings() {
        eprintln!("sandbox warning: {w}");
    }
    Some(s)
}

/// Processes whose working directory is (or was) `dir`.
fn processes_in(dir: &std::path::Path) -> usize {
    let d = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.to_string_lossy().starts_with(&d)))
        .count()
}

#[test]
fn exit_status_decides() {
    let Some(sb) = sandbox(5000) else { return };
    assert_eq!(sb.run("assert sum([1, 2]) == 3\n").unwrap().verdict, Verdict::Passed);
    let r = sb.run("def f():\n    return 1\nassert f() == 2, 'wrong'\n").unwrap();
    assert_eq!(r.verdict, Verdict::Failed);
    assert!(r.stderr_tail.contains("AssertionError: wrong"), "{}", r.stderr_tail);
    assert_eq!(sb.run("import sys\nsys.exit(3)\n").unwrap().exit_code, Some(3));
    // Files inside its own directory are fine.
    assert_eq!(sb.run("open('x.txt', 'w').write('ok')\nassert open('x.txt').read() == 'ok'\n").unwrap().verdict, Verdict::Passed);
}

#[test]
fn infinite_loop_is_killed_at_the_limit() {
    let Some(sb) = sandbox(1000) else { return };
    let r = sb.run("while True:\n    pass\n").unwrap();
    assert_eq!(r.verdict, Verdict::TimedOut);
    assert!(r.seconds < 3.0, "took {}s", r.seconds);
}

#[test]
fn fork_bomb_is_contained_and_cleaned_up() {
    let Some(sb) = sandbox(1500) else { return };
    let program = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n";
    let r = sb.run(program).unwrap();
    assert_ne!(r.verdict, Verdict::Passed);
    assert!(r.seconds < 5.0, "took {}s", r.seconds);
    // Nothing it started outlives it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(processes_in(&r.dir), 0, "processes left running in {}", r.dir.display());
    // A child that leaves the process group dies too.
    let r = sb.run("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\ntime.sleep(30)\n").unwrap();
    assert_eq!(r.verdict, Verdict::TimedOut);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(processes_in(&r.dir), 0, "a setsid child survived in {}", r.dir.display());
}

#[test]
fn huge_allocation_fails_without_harming_the_host() {
    let Some(sb) = sandbox(5000) else { return };
    let r = sb.run("x = bytearray(64 * 1024 ** 3)\n").unwrap();
    assert_eq!(r.verdict, Verdict::Failed);
    assert!(r.stderr_tail.contains("MemoryError"), "{}", r.stderr_tail);
}

#[test]
fn writes_outside_the_temporary_directory_are_refused() {
    let Some(sb) = sandbox(5000) else { return };
    let victim = tempfile::tempdir().unwrap();
    // World-writable, so only the sandbox (not file permissions) can stop the write.
    std::fs::set_permissions(victim.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let target = victim.path().join("pwned.txt");
    let r = sb.run(&format!("open({:?}, 'w').write('x')\n", target.display().to_string())).unwrap();
    assert_eq!(r.verdict, Verdict::Failed, "{}", r.stderr_tail);
    assert!(!target.exists());
}

#[test]
fn network_calls_fail() {
    let Some(sb) = sandbox(5000) else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let program = format!("import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')\n");
    let r = sb.run(&program).unwrap();
    assert_eq!(r.verdict, Verdict::Failed, "{}", r.stderr_tail);
    let mut got = Vec::new();
    if let Ok((mut s, _)) = listener.accept() {
        let _ = s.read_to_end(&mut got);
        panic!("the sandboxed program connected to the host");
    }
}
