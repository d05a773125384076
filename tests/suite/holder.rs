//! A second server on a taken port names the process that holds it, read
//! from the real `/proc`: `error: cannot listen on ADDR: Address already
//! in use (os error 98): held by pid PID (readyloop)`.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::server::binary;
use crate::support::{ServerProcess, PATIENCE};

/// `readyloop serve --addr ADDR`, which must fail to bind: a server
/// that binds after all is killed and fails the test instead of hanging
/// it.
fn serve_at(addr: &str) -> Output {
    let mut child = Command::new(binary())
        .args(["serve", "--addr", addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run readyloop serve");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "serve --addr {addr} did not fail: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// The one error line of a bind on `asked` that failed with "in use",
/// after checking the exit code.
fn in_use_line(asked: &str) -> String {
    let out = serve_at(asked);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!(
        "error: cannot listen on {asked}: Address already in use (os error \
         98): "
    );
    let line = err.lines().find(|l| l.starts_with(&want));
    line.unwrap_or_else(|| panic!("no {want:?} in:\n{err}")).to_string()
}

/// A holder the test started, on the same address: named by its pid.
#[test]
fn the_holder_of_the_same_address_is_named() {
    let holder = ServerProcess::start(&[]);
    let asked = holder.addr.to_string();
    let line = in_use_line(&asked);
    let pid = holder.pid();
    assert!(
        line.ends_with(&format!(": held by pid {pid} (readyloop)")),
        "{line}"
    );
}

/// The same on IPv6 loopback (`/proc/net/tcp6`); without `::1` this
/// fails rather than skips.
#[test]
fn the_holder_of_an_ipv6_address_is_named() {
    let holder = ServerProcess::start_command(ServerProcess::command_at(
        "[::1]:0",
        &[],
    ));
    let line = in_use_line(&holder.addr.to_string());
    let pid = holder.pid();
    assert!(
        line.ends_with(&format!(": held by pid {pid} (readyloop)")),
        "{line}"
    );
}

/// A wildcard bind fails on a port held on loopback of its family
/// (`0.0.0.0` on 127.0.0.1, `[::]` on ::1: readyloop's IPv6 listeners
/// are IPv6-only, so `[::]` does not clash with an IPv4 holder), and the
/// loopback listener's holder is named. (The wildcard never gets to
/// listen: it fails at bind.)
#[test]
fn a_wildcard_bind_names_the_holder_of_the_port() {
    for (holder_at, wildcard) in
        [("127.0.0.1:0", "0.0.0.0"), ("[::1]:0", "[::]")]
    {
        let holder = ServerProcess::start_command(ServerProcess::command_at(
            holder_at,
            &[],
        ));
        let port = holder.addr.port();
        let pid = holder.pid();
        let line = in_use_line(&format!("{wildcard}:{port}"));
        assert!(
            line.ends_with(&format!(": held by pid {pid} (readyloop)")),
            "{line}"
        );
    }
}

/// A listener the test process holds itself: the test's own pid.
#[test]
fn a_holder_that_is_not_readyloop_is_named() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let asked = taken.local_addr().expect("address").to_string();
    let line = in_use_line(&asked);
    let want = format!(": held by pid {} (", std::process::id());
    assert!(line.contains(&want), "{line}");
    assert!(!line.contains("(readyloop)"), "{line}");
}
