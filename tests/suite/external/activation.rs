//! Socket activation with systemd's own launcher,
//! `systemd-socket-activate` (Debian package `systemd`).

use std::net::{SocketAddr, TcpStream};
use std::thread;

use crate::support::activation::{activated, fd, listening};
use crate::support::server::{binary, listening_addrs};
use crate::support::*;

use super::tool;

const LAUNCHER: &str = "systemd-socket-activate";

/// Connects as soon as the launcher listens (it starts the server on
/// the first connection).
fn first_client(addr: SocketAddr) -> thread::JoinHandle<TcpStream> {
    thread::spawn(move || {
        let mut stream = None;
        eventually("the launcher listens", || {
            stream = TcpStream::connect(addr).ok();
            stream.is_some()
        });
        stream.expect("connected")
    })
}

/// A port free on 127.0.0.1 and ::1 just now.
fn free_port() -> u16 {
    loop {
        let (v4, a) = listening("127.0.0.1:0");
        if std::net::TcpListener::bind(("::1", a.port())).is_ok() {
            drop(v4);
            return a.port();
        }
    }
}

/// `systemd-socket-activate -l 127.0.0.1:P -l [::1]:P readyloop serve`:
/// the first client is served, and so is one on the other socket.
#[test]
fn the_real_launcher_passes_two_sockets_and_both_serve() {
    let port = free_port();
    let a4 = SocketAddr::from(([127, 0, 0, 1], port));
    let a6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut cmd = std::process::Command::new(tool(LAUNCHER, "systemd"));
    cmd.args(["-l", &a4.to_string(), "-l", &a6.to_string()]).args([
        binary(),
        "serve",
        "--mode",
        "echo",
    ]);
    let client = first_client(a4);
    let mut server = ServerProcess::start_command(cmd);
    let line = server.wait_for_status("listening on ");
    assert!(line.contains("(socket activation)"), "{line}");
    assert_eq!(listening_addrs(&line), vec![a4, a6], "{line}");
    let mut first = client.join().unwrap();
    assert_eq!(echo_round(&mut first, b"first"), b"first");
    close_and_wait(first);
    echo_and_close(a6, b"over IPv6");
    let s = stop(server);
    assert_eq!(s.accepted, 2, "{s}");
}

/// The launcher passes on the sockets it was given (as systemd passes
/// its own): the test keeps them across two runs, and a client that
/// connects while no server runs is served by the next run, not refused.
#[test]
fn nothing_is_refused_across_a_restart_under_the_real_launcher() {
    let (socket, addr) = listening("127.0.0.1:0");
    let start = || {
        let mut args = vec![binary(), "serve", "--mode", "echo"];
        args.extend(["--addr", "127.0.0.1:0"]);
        let path = tool(LAUNCHER, "systemd");
        ServerProcess::start_command(activated(
            path.to_str().expect("a UTF-8 path"),
            &args,
            &[fd(&socket)],
            &["readyloop.socket"],
        ))
    };
    let client = first_client(addr);
    let server = start();
    let mut first = client.join().unwrap();
    assert_eq!(echo_round(&mut first, b"one"), b"one");
    close_and_wait(first);
    stop(server);
    let mut queued = connect(addr);
    std::io::Write::write_all(&mut queued, b"queued").unwrap();
    let mut server = start();
    let line = server.wait_for_status("listening on ");
    assert_eq!(listening_addrs(&line), vec![addr], "{line}");
    let mut back = [0u8; 6];
    std::io::Read::read_exact(&mut queued, &mut back).expect("echo");
    assert_eq!(&back, b"queued");
    close_and_wait(queued);
    let s = stop(server);
    assert_eq!((s.accepted, s.closed_eof), (1, 1), "{s}");
}
