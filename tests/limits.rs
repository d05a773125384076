//! Limits: max connections, idle timeout, descriptor exhaustion, backlog.

mod common;

use std::net::Shutdown;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;
use readyloop::{Mode, Model};

/// One over `--max-connections` is accepted and closed at once and
/// counted as rejected; a freed slot is usable again.
#[test]
fn over_the_limit_is_closed_at_once_and_counted() {
    let mut cfg = config(Model::Mio, Mode::Echo);
    cfg.max_connections = 2;
    let server = start_server(cfg);
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
    assert_eq!(echo_round(&mut a, b"a"), b"a");
    assert_eq!(echo_round(&mut b, b"b"), b"b");
    let mut over = connect(server.addr);
    let (got, _) = read_to_end(&mut over);
    assert!(got.is_empty(), "a rejected client got data");
    // Free a slot; the next client is served.
    a.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&mut a).1);
    eventually("a freed slot to be reused", || {
        let mut c = connect(server.addr);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        use std::io::{Read, Write};
        c.write_all(b"c").is_ok() && {
            let mut one = [0u8; 1];
            matches!(c.read(&mut one), Ok(1)) && one == *b"c"
        }
    });
    drop(b);
    let s = server.stop().unwrap();
    assert!(s.rejected >= 1, "{s}");
    assert_eq!(s.accepted, 3, "{s}");
    assert_eq!(s.closed(), 3, "{s}");
}

/// A connection without traffic for the idle timeout is closed as `idle`;
/// one that keeps talking is not.
#[test]
fn idle_connections_are_closed_busy_ones_are_not() {
    let mut cfg = config(Model::Mio, Mode::Echo);
    cfg.idle_timeout = Some(Duration::from_millis(300));
    let server = start_server(cfg);
    let mut quiet = connect(server.addr);
    let mut busy = connect(server.addr);
    assert_eq!(echo_round(&mut quiet, b"hi"), b"hi");
    // The busy client talks every 50 ms; it must outlive the quiet one.
    let talker = thread::spawn(move || {
        for i in 0..40u64 {
            let data = pattern(i, 8);
            assert_eq!(echo_round(&mut busy, &data), data);
            thread::sleep(Duration::from_millis(50));
        }
        busy
    });
    let (got, clean) = read_to_end(&mut quiet);
    assert!(got.is_empty() && clean, "idle close must be a clean FIN");
    let busy = talker.join().unwrap();
    drop(busy);
    let s = server.stop().unwrap();
    assert!(s.closed_idle >= 1, "{s}");
    // The busy client's 2 s of traffic spanned several timeouts: it was
    // never idle, so exactly one connection closed as idle.
    assert_eq!(s.closed_idle, 1, "{s}");
}

/// With descriptors exhausted (RLIMIT_NOFILE lowered for the server
/// process), a flood neither crashes the server nor spins its CPU, and
/// service returns once clients leave.
#[test]
fn descriptor_exhaustion_pauses_accept_without_spinning() {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=24:24", binary(), "serve", "--addr", "127.0.0.1:0"])
        .args(["--mode", "echo", "--log-level", "warn"]);
    let mut server = ServerProcess::start_command(cmd);
    let addr = server.addr;
    // Far more clients than descriptors; the kernel completes their
    // handshakes into the backlog whether or not the server can accept.
    let flood: Vec<_> = (0..100).map(|_| connect(addr)).collect();
    server.wait_for_line("pausing accept");
    // While saturated, measure the server's CPU over a window.
    let t0 = procfs::cpu_ticks(server.pid()).unwrap();
    thread::sleep(Duration::from_secs(1));
    let used = procfs::cpu_ticks(server.pid()).unwrap() - t0;
    assert!(
        used * 10 < procfs::ticks_per_second(),
        "server used {used} ticks in 1 s while out of descriptors"
    );
    assert!(server.child.try_wait().unwrap().is_none(), "server exited");
    drop(flood);
    // Once the flood leaves, a new client is served.
    eventually("service after the flood", || {
        let Ok(mut c) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        use std::io::{Read, Write};
        let mut one = [0u8; 4];
        c.write_all(b"ping").is_ok()
            && c.read_exact(&mut one).is_ok()
            && &one == b"ping"
    });
    let (code, s) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!(s.accepted, s.closed(), "{s}");
}

/// `--backlog` reaches listen(2): the kernel reports it as the Send-Q of
/// the listening socket.
#[test]
fn the_backlog_flag_sets_the_listen_backlog() {
    let server = ServerProcess::start(&["--backlog", "37"]);
    let port = server.addr.port().to_string();
    let out = Command::new("ss")
        .args(["-ltnH", "sport", "=", &format!(":{port}")])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    // Columns: State Recv-Q Send-Q Local Peer; Send-Q is the backlog.
    let send_q = text.split_whitespace().nth(2);
    assert_eq!(send_q, Some("37"), "ss said: {text:?}");
}
