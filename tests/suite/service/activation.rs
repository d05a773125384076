//! Socket activation done by hand, exactly as systemd does it: the test
//! makes the listening sockets, keeps them, and passes them to each
//! start of the server at fd 3 onwards.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;

use readyloop::Model;

use crate::support::activation::{activated, fd, listening};
use crate::support::server::{binary, listening_addrs, Signal};
use crate::support::*;

per_model!(a_client_queued_while_no_server_runs_is_served_by_the_next);

/// The server serves a passed socket and, at stop, closes it without
/// shutting it down: the manager's copy keeps listening, so a client
/// that connects between two runs waits in the backlog and the next run
/// serves it. `--addr` names a taken address: it must not be bound.
fn a_client_queued_while_no_server_runs_is_served_by_the_next(model: Model) {
    let (socket, addr) = listening("127.0.0.1:0");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let start = || {
        let args = ["serve", "--addr", &taken, "--model", model.name()];
        let mut cmd = activated(binary(), &args, &[fd(&socket)], &["web"]);
        cmd.args(["--mode", "echo"]);
        ServerProcess::start_command(cmd)
    };
    let mut server = start();
    let line = server.wait_for_status("listening on ");
    assert!(line.contains(" (socket activation) "), "{line}");
    assert_eq!(listening_addrs(&line), vec![addr]);
    echo_and_close(addr, b"first run");
    let s = stop(server);
    assert_eq!(s.accepted, 1, "{s}");

    // No server runs: the connection completes in the kept socket's
    // backlog, and its bytes wait there.
    let mut queued = connect(addr);
    std::io::Write::write_all(&mut queued, b"waited").unwrap();
    let server = start();
    let mut back = [0u8; 6];
    std::io::Read::read_exact(&mut queued, &mut back).expect("echo");
    assert_eq!(&back, b"waited");
    close_and_wait(queued);
    let s = stop(server);
    assert_eq!((s.accepted, s.closed_eof), (1, 1), "{s}");
}

/// Two passed sockets, IPv4 and IPv6, both serve; the first line lists
/// them in the order passed.
#[test]
fn every_passed_socket_serves() {
    let (v4, a4) = listening("127.0.0.1:0");
    let (v6, a6) = listening("[::1]:0");
    let args = ["serve", "--mode", "echo"];
    let cmd = activated(binary(), &args, &[fd(&v4), fd(&v6)], &["a", "b"]);
    let mut server = ServerProcess::start_command(cmd);
    let line = server.wait_for_status("listening on ");
    assert_eq!(listening_addrs(&line), vec![a4, a6], "{line}");
    echo_and_close(a4, b"four");
    echo_and_close(a6, b"six");
    let s = stop(server);
    assert_eq!(s.accepted, 2, "{s}");
}

/// What the server exits with and prints when started with `fds`.
fn start_with(fds: &[i32], names: &[&str]) -> (i32, String) {
    let args = ["serve", "--mode", "echo"];
    let out = activated(binary(), &args, fds, names)
        .output()
        .expect("run readyloop");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A passed socket that is not a listening TCP socket is named, with
/// what it is, and the server does not start (exit 1, one line).
#[test]
fn a_passed_socket_that_cannot_listen_is_refused() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (code, err) = start_with(&[udp.as_raw_fd()], &["dns"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error: socket activation: passed socket 3 (dns)"));
    assert!(err.contains("not a TCP socket"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let bound = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    bound.bind(&any.into()).unwrap();
    let (code, err) = start_with(&[bound.as_raw_fd()], &["idle"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("passed socket 3 (idle)"), "{err}");
    assert!(err.contains("not listening"), "{err}");

    let (ok, _) = listening("127.0.0.1:0");
    let (code, err) =
        start_with(&[ok.as_raw_fd(), udp.as_raw_fd()], &["a", "b"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("passed socket 4 (b)"), "{err}");
}

/// LISTEN_PID naming another process means the sockets are not ours:
/// the server binds `--addr` as usual. Garbage in the variables is a
/// clear error, never a panic.
#[test]
fn variables_for_another_process_or_garbage_are_handled() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=1 LISTEN_FDS=1 exec \"$0\" serve --addr 127.0.0.1:0")
        .arg(binary());
    let mut server = ServerProcess::start_command(cmd);
    let line = server.wait_for_status("listening on ");
    assert!(!line.contains("socket activation"), "{line}");
    echo_and_close(server.addr, b"");
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit(), 0);

    for fds in ["lots", "-1", "99999999999"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("LISTEN_PID=$$ LISTEN_FDS={fds} exec \"$0\" serve"))
            .arg(binary())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{fds}: {err}");
        assert!(err.starts_with("error: socket activation: "), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
