//! What only the uring model promises: where io_uring is blocked (here by
//! a seccomp filter, as a container's profile does), `serve --model
//! uring` says so in one line and exits 1; it never falls back silently.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::support::server::binary;

/// `io_uring_setup` on x86_64.
const SYS_IO_URING_SETUP: u32 = 425;
/// `AUDIT_ARCH_X86_64`.
const ARCH_X86_64: u32 = 0xc000_003e;

/// A seccomp filter that fails `io_uring_setup` with EPERM, as Docker's
/// default profile does, and allows everything else.
fn block_io_uring() -> std::io::Result<()> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(load, 4), // seccomp_data.arch
        jump(ARCH_X86_64, 0, 3),
        stmt(load, 0), // seccomp_data.nr
        jump(SYS_IO_URING_SETUP, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: two prctl calls on this (child) process only, between fork
    // and exec; `program` outlives them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// With io_uring blocked, the uring model exits 1 with one line naming
/// io_uring and the reason, and the mio model still runs under the same
/// filter (the filter blocks io_uring and nothing else).
#[test]
fn blocked_io_uring_exits_1_with_the_reason() {
    // The filter's syscall number is x86_64's (the machine this project
    // runs on); another architecture fails here rather than skipping.
    assert_eq!(std::env::consts::ARCH, "x86_64", "the filter's syscall");
    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--model", "uring", "--addr", "127.0.0.1:0"]);
    // SAFETY: `block_io_uring` makes only async-signal-safe calls.
    unsafe { cmd.pre_exec(block_io_uring) };
    let out = cmd.output().expect("run readyloop");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: io_uring unavailable: io_uring_setup: ")
            && last.contains("Operation not permitted"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let mut mio = Command::new(binary());
    mio.args(["serve", "--model", "mio", "--addr", "127.0.0.1:0"]);
    mio.args(["--log-level", "warn"]);
    // SAFETY: as above.
    unsafe { mio.pre_exec(block_io_uring) };
    let mut child = mio.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    assert!(first.contains("listening on"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();
}
