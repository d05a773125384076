//! A second server on a taken port names the process that holds it, read
//! from the real `/proc`: `error: cannot listen on ADDR: Address already
//! in use (os error 98): held by pid PID (readyloop)`; a port held only
//! by a closed connection in TIME_WAIT names that connection.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use procfs::net::TcpState;
use socket2::{Domain, Socket, Type};

use crate::support::proc::tcp_socket;
use crate::support::server::binary;
use crate::support::{eventually, heavy, ServerProcess, PATIENCE};

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

/// Whether a lookup that ran out of its 100 ms on a busy machine may
/// be tried again: until [`PATIENCE`] has passed since `start`, after a
/// pause that lets the other tests' load move on.
fn try_again(start: Instant) -> bool {
    std::thread::sleep(Duration::from_millis(50));
    start.elapsed() < PATIENCE
}

/// The one error line of a bind on `asked` that failed with "in use",
/// after checking the exit code. The lookup gives up after 100 ms (and
/// says to run `ss`) on a machine busy enough: such an answer is tried
/// again, for up to [`PATIENCE`], before it counts.
fn in_use_line(asked: &str) -> String {
    // The lookup reads every process's descriptors: not while a heavy
    // test holds thousands of them.
    let _heavy = heavy();
    let start = Instant::now();
    loop {
        let line = in_use_once(asked);
        if !line.contains("held by another process") || !try_again(start) {
            return line;
        }
    }
}

fn in_use_once(asked: &str) -> String {
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

/// A client socket bound to 127.0.0.1:P without SO_REUSEADDR that
/// closes its connection first, leaving TIME_WAIT on P: the client's own
/// address and its peer's.
fn time_wait_on_a_port() -> (SocketAddr, SocketAddr) {
    let throwaway = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = throwaway.local_addr().expect("address");
    let client =
        Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    client.bind(&any_port.into()).expect("bind the client");
    client.connect(&peer.into()).expect("connect");
    let local = client.local_addr().expect("local").as_socket().expect("ip");
    let (mut accepted, _) = throwaway.accept().expect("accept");
    drop(client); // our FIN first: this end will wait in TIME_WAIT
    accepted.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut byte = [0u8];
    assert_eq!(accepted.read(&mut byte).expect("the client's FIN"), 0);
    drop(accepted); // the peer's FIN: the client's end enters TIME_WAIT
    drop(throwaway);
    eventually("the client's end in TIME_WAIT", || {
        tcp_socket(local, peer).is_some_and(|e| e.state == TcpState::TimeWait)
    });
    (local, peer)
}

/// A port held only by a closed connection in TIME_WAIT (bound without
/// SO_REUSEADDR, so the server's SO_REUSEADDR cannot share it): the bind
/// fails with exit 1 and one line naming TIME_WAIT, the connection's
/// two ends and that no process holds it. On a host too busy, or whose
/// table is too long, to read in the lookup's 100 ms the answer is the
/// `ss` line; it is tried again for up to [`PATIENCE`], each try with a
/// fresh connection, at another place in the table.
#[test]
fn a_port_held_in_time_wait_names_the_connection() {
    let _heavy = heavy();
    let mut tries = Vec::new();
    let start = Instant::now();
    loop {
        let (local, peer) = time_wait_on_a_port();
        // Nothing listens on it: the connection alone holds the port.
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        assert!(tcp_socket(local, unspecified).is_none(), "a listener");
        let line = in_use_once(&local.to_string());
        if !line.contains("the lookup ran out of time") {
            let connection = format!(" {local} -> {peer} ");
            assert!(line.contains(&connection), "{line}");
            assert!(line.contains("no process holds it"), "{line}");
            assert!(line.contains(" is in TIME_WAIT, "), "{line}");
            assert!(line.contains("within 60 s"), "{line}");
            assert!(line.contains("without SO_REUSEADDR"), "{line}");
            return;
        }
        tries.push(line);
        if !try_again(start) {
            break;
        }
    }
    let (n, last) = (tries.len(), tries.last().expect("a try"));
    panic!("never named in time in {n} tries; the last:\n{last}");
}
