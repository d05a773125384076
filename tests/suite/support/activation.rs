//! Starting the server as a service manager would: listening sockets
//! passed at fd 3 onwards with `LISTEN_FDS`, `LISTEN_PID` naming the
//! process itself (set by `sh` just before it `exec`s, as systemd does
//! between fork and exec), and `LISTEN_FDNAMES`.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `program args…` with `fds` passed as fds 3, 4, … and the variables
/// of socket activation; the caller keeps its own copies of `fds` (as
/// systemd keeps its sockets across restarts).
pub fn activated(
    program: &str,
    args: &[&str],
    fds: &[RawFd],
    names: &[&str],
) -> Command {
    let script = format!(
        "LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={} exec \"$0\" \"$@\"",
        fds.len(),
        names.join(":")
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg(program).args(args);
    let fds = fds.to_vec();
    // SAFETY: only fcntl and dup2, which are async-signal-safe, between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Move every socket above the target range first, so that a
            // source already at fd 3 or 4 is not overwritten.
            let mut high = Vec::with_capacity(fds.len());
            for &fd in &fds {
                let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, &h) in high.iter().enumerate() {
                // dup2 clears close-on-exec on the copy.
                if libc::dup2(h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// A listening socket on a free loopback port, as systemd would make
/// for `ListenStream=`.
pub fn listening(addr: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(addr).expect("bind");
    let local = listener.local_addr().expect("address");
    (listener, local)
}

/// The raw descriptor of `l`.
pub fn fd(l: &TcpListener) -> RawFd {
    l.as_raw_fd()
}
