//! Running as a service: several listeners sharing one accept path, the
//! `stats` line, systemd's readiness protocol and socket activation
//! (done here by hand, as systemd does it; `external::activation` does
//! it with the real `systemd-socket-activate`).

mod activation;
mod notify;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::Command;

use readyloop::Model;

use crate::support::server::{binary, listening_addrs, Signal};
use crate::support::*;

per_model!(every_listener_serves, stats_lines_come_every_interval);
per_model!(concurrent: the_limits_are_shared_by_every_listener);

/// Two listeners (IPv4 and IPv6 loopback) each serve, one accept path
/// counts both in one summary.
fn every_listener_serves(model: Model) {
    let server = serve(model, &["--mode", "echo", "--addr", "[::1]:0"]);
    assert_eq!(server.addrs.len(), 2, "{:?}", server.addrs);
    assert!(server.addrs[0].is_ipv4() && server.addrs[1].is_ipv6());
    for (n, &addr) in server.addrs.iter().enumerate() {
        echo_and_close(addr, &pattern(n as u64, 3000));
    }
    let s = stop(server);
    assert_eq!((s.accepted, s.closed_eof), (2, 2), "{s}");
    assert_eq!((s.bytes_in, s.bytes_out), (6000, 6000), "{s}");
}

/// `--max-connections` and `--max-connections-per-ip` count the
/// connections of every listener together.
fn the_limits_are_shared_by_every_listener(model: Model) {
    let server = serve(
        model,
        &["--mode", "echo", "--addr", "127.0.0.1:0", "--max-connections", "1"],
    );
    let (a, b) = (server.addrs[0], server.addrs[1]);
    assert_ne!(a, b);
    let mut first = connect(a);
    assert_eq!(echo_round(&mut first, b"one"), b"one");
    let mut second = connect(b);
    assert!(closed_by_server(&mut second), "over the limit on listener 2");
    close_and_wait(first);
    settle(&server, model, 0);
    echo_and_close(b, b"now there is room");
    let s = stop(server);
    assert_eq!((s.accepted, s.rejected), (2, 1), "{s}");
}

/// `--stats-interval` logs the counters periodically, exact at the
/// moment of the line, with the open connections and a growing uptime;
/// the server keeps serving.
fn stats_lines_come_every_interval(model: Model) {
    let mut server =
        serve(model, &["--mode", "echo", "--stats-interval", "0.2"]);
    let mut c = connect(server.addr);
    assert_eq!(echo_round(&mut c, b"12345"), b"12345");
    let want = "open=1 ";
    let line = server.wait_for_line(&format!("stats {want}"));
    let uptime = |line: &str| -> f64 {
        let field = line.split("uptime_s=").nth(1).expect("uptime_s");
        field.split(' ').next().unwrap().parse().expect("seconds")
    };
    // The line after the client echoed carries its bytes.
    wait_count(&mut server, "bytes_in=5 bytes_out=5 ", 1);
    let later = server
        .collect_log()
        .iter()
        .rev()
        .find(|l| l.contains("stats open=1 "))
        .cloned()
        .expect("a stats line");
    assert!(later.contains("accepted=1 closed_eof=0 "), "{later}");
    assert!(uptime(&later) >= uptime(&line), "{line} / {later}");
    let count = server.count("] stats open=");
    wait_count(&mut server, "] stats open=", count + 2);
    assert_eq!(echo_round(&mut c, b"more"), b"more");
    drop(c);
    let s = stop(server);
    assert_eq!(s.bytes_in, 9, "{s}");
}

/// A host name listens on every address it resolves to.
#[test]
fn a_host_name_listens_on_every_address_it_resolves_to() {
    let mut expected: Vec<std::net::IpAddr> = ("localhost", 0)
        .to_socket_addrs()
        .expect("resolve localhost")
        .map(|a| a.ip())
        .collect();
    expected.dedup();
    let server = ServerProcess::start_command(ServerProcess::command_at(
        "localhost:0",
        &["--mode", "echo"],
    ));
    let ips: Vec<_> = server.addrs.iter().map(|a| a.ip()).collect();
    assert_eq!(ips, expected);
    for &addr in &server.addrs {
        echo_and_close(addr, b"by name");
    }
    stop(server);
}

/// `0.0.0.0:P` and `[::]:P` together: the IPv6 listener is IPv6-only,
/// so both bind, and each family reaches its own (connections go to
/// loopback only).
#[test]
fn ipv4_and_ipv6_wildcards_share_a_port() {
    let port = free_port_on_both();
    let v4 = format!("0.0.0.0:{port}");
    let v6 = format!("[::]:{port}");
    let server = ServerProcess::start_command(ServerProcess::command_at(
        &v4,
        &["--mode", "echo", "--addr", &v6],
    ));
    assert_eq!(server.addrs.len(), 2);
    let loopback4 = SocketAddr::from(([127, 0, 0, 1], port));
    let loopback6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let from4 = echo_and_close(loopback4, b"v4");
    let from6 = echo_and_close(loopback6, b"v6");
    assert!(from4.is_ipv4() && from6.is_ipv6());
    let s = stop(server);
    assert_eq!(s.accepted, 2, "{s}");
}

/// A port free for both IPv4 and IPv6 just now.
fn free_port_on_both() -> u16 {
    for _ in 0..50 {
        let v4 = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = v4.local_addr().unwrap().port();
        let v6 = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        v6.set_only_v6(true).expect("v6only");
        let addr: SocketAddr = format!("[::]:{port}").parse().unwrap();
        if v6.bind(&addr.into()).is_ok() {
            return port;
        }
    }
    panic!("no port free on both IPv4 and IPv6");
}

/// What `readyloop serve ARGS` exits with and prints, for arguments it
/// refuses before it starts.
fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .arg("serve")
        .args(args)
        .output()
        .expect("run readyloop");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

/// A name that does not resolve, a malformed address and too many
/// listeners are usage errors: exit 2, one line.
#[test]
fn addresses_that_cannot_be_listened_on_are_refused() {
    let (code, err) = refused(&["--addr", "no-such-host.invalid:8989"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("error: cannot resolve no-such-host.invalid"));
    assert_eq!(err.lines().count(), 1, "{err}");
    for bad in ["localhost", "[::1]", "a b:80", ":80", "host:99999"] {
        let (code, err) = refused(&["--addr", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--addr"), "{bad}: {err}");
    }
    let mut many = Vec::new();
    for n in 0..65 {
        many.push("--addr".to_string());
        many.push(format!("127.0.0.{}:0", n + 1));
    }
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (code, err) = refused(&many);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at most 64"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// One address given twice is one listener; an address some other
/// socket holds is exit 1 and nothing is left listening.
#[test]
fn duplicates_fold_and_a_taken_address_fails_whole() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_addr = free.local_addr().unwrap();
    drop(free);
    let (code, err) = refused(&[
        "--addr",
        &free_addr.to_string(),
        "--addr",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")));
    let line = free_addr.to_string();
    let mut server = ServerProcess::start_command(ServerProcess::command_at(
        &line,
        &["--addr", &line, "--mode", "echo"],
    ));
    let listening = server.wait_for_status("listening on ");
    assert_eq!(listening_addrs(&listening), vec![free_addr], "{listening}");
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit(), 0);
}
