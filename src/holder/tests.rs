//! The lookup against a made-up `/proc`: a directory with `net/tcp`,
//! `net/tcp6` and `PID/fd/N` links, so every branch (exact or wildcard
//! fit, an invisible holder, the deadline, odd contents) is reached
//! whatever the machine runs. The suite's `holder` module checks the
//! real `/proc`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;

/// A scratch `/proc`, removed when dropped.
struct FakeProc {
    root: PathBuf,
}

impl FakeProc {
    fn new() -> FakeProc {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "readyloop-holder-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(root.join("net")).unwrap();
        FakeProc { root }
    }

    fn table(&self, name: &str, text: impl AsRef<[u8]>) -> &Self {
        fs::write(self.root.join("net").join(name), text).unwrap();
        self
    }

    /// Process `pid`, named `comm`, holding a descriptor on `inode`.
    fn process(&self, pid: u32, comm: &[u8], inode: u64) -> &Self {
        let dir = self.root.join(pid.to_string());
        fs::create_dir_all(dir.join("fd")).unwrap();
        fs::write(dir.join("comm"), [comm, b"\n"].concat()).unwrap();
        symlink("/dev/null", dir.join("fd/0")).unwrap();
        symlink(format!("socket:[{inode}]"), dir.join("fd/3")).unwrap();
        self
    }

    fn describe(&self, addr: &str) -> String {
        let far = Instant::now() + Duration::from_secs(60);
        describe_at(&self.root, addr.parse().unwrap(), far)
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A LISTEN line of `/proc/net/tcp` for an IPv4 `addr`.
fn listen_line(addr: &str, inode: u64) -> String {
    let addr: std::net::SocketAddrV4 = addr.parse().unwrap();
    format!(
        "   0: {:08X}:{:04X} 00000000:0000 0A 00000000:00000000 \
         00:00000000 00000000     0        0 {inode} 1 0 100 0 0 10 0\n",
        u32::from_ne_bytes(addr.ip().octets()),
        addr.port()
    )
}

/// A TIME_WAIT line of `/proc/net/tcp`: `local` closed first, `peer`.
fn time_wait_line(local: &str, peer: &str) -> String {
    let hex = |addr: &str| {
        let addr: std::net::SocketAddrV4 = addr.parse().unwrap();
        let ip = u32::from_ne_bytes(addr.ip().octets());
        format!("{ip:08X}:{:04X}", addr.port())
    };
    format!(
        "   9: {} {} 06 00000000:00000000 03:00001553 00000000     0        \
         0 0 3 00000000a5b1c2d3\n",
        hex(local),
        hex(peer)
    )
}

const HEADER: &str = "  sl  local_address rem_address   st tx_queue \
                      rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

fn fallback(port: u16) -> String {
    format!("held by another process (run: ss -ltnp 'sport = :{port}')")
}

#[test]
fn the_exact_listener_is_named_before_a_wildcard() {
    let proc = FakeProc::new();
    let table = [
        HEADER.to_string(),
        listen_line("0.0.0.0:8989", 777),
        listen_line("127.0.0.1:8989", 555),
        listen_line("127.0.0.1:9000", 999),
    ]
    .concat();
    proc.table("tcp", table)
        .process(50, b"wide", 777)
        .process(100, b"nc", 555)
        .process(7, b"other", 999);
    assert_eq!(proc.describe("127.0.0.1:8989"), "held by pid 100 (nc)");
    assert_eq!(proc.describe("127.0.0.2:8989"), "held by pid 50 (wide)");
    assert_eq!(proc.describe("[::]:9000"), "held by pid 7 (other)");
    assert_eq!(proc.describe("127.0.0.1:8990"), fallback(8990));
}

#[test]
fn an_ipv6_listener_is_found_in_tcp6() {
    let proc = FakeProc::new();
    let v6 = "   1: 00000000000000000000000001000000:2329 \
              00000000000000000000000000000000:0000 0A 00000000:00000000 \
              00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n";
    proc.table("tcp", HEADER).table("tcp6", v6).process(31, b"srv", 4242);
    assert_eq!(proc.describe("[::1]:9001"), "held by pid 31 (srv)");
    assert_eq!(proc.describe("127.0.0.1:9001"), fallback(9001));
}

#[test]
fn a_holder_that_cannot_be_seen_gives_the_ss_command() {
    let proc = FakeProc::new();
    // The listener is in the table, but no visible process holds it.
    proc.table("tcp", [HEADER, &listen_line("127.0.0.1:8989", 555)].concat())
        .process(100, b"nc", 556);
    fs::create_dir_all(proc.root.join("300")).unwrap(); // no fd/
    fs::create_dir_all(proc.root.join("self/fd")).unwrap();
    assert_eq!(proc.describe("127.0.0.1:8989"), fallback(8989));
}

/// Past the deadline nothing is read, and with no listener seen the
/// message names both kinds of holder and the command for all states.
#[test]
fn a_passed_deadline_falls_back_without_scanning() {
    let proc = FakeProc::new();
    proc.table("tcp", [HEADER, &listen_line("127.0.0.1:8989", 555)].concat())
        .process(100, b"nc", 555);
    let addr = "127.0.0.1:8989".parse().unwrap();
    let past = Instant::now() - Duration::from_millis(1);
    let text = describe_at(&proc.root, addr, past);
    let want = "held by another process or a connection in TIME_WAIT (the \
                lookup ran out of time; run: ss -tanp 'sport = :8989')";
    assert_eq!(text, want);
}

#[test]
fn a_hostile_name_stays_one_line() {
    let proc = FakeProc::new();
    proc.table("tcp", listen_line("127.0.0.1:8989", 555)).process(
        100,
        b"e\x1b[31m\nvil\xff",
        555,
    );
    let text = proc.describe("127.0.0.1:8989");
    assert_eq!(text, r"held by pid 100 (e\x1b[31m\nvil\xff)");
}

#[test]
fn odd_or_missing_tables_fall_back() {
    let proc = FakeProc::new();
    let mut junk = b"\xff\xfe garbage\n\n   0: ::: 0A\n".to_vec();
    junk.extend_from_slice(&[0u8; 300]);
    junk.extend_from_slice(listen_line("127.0.0.1:8989", 0).as_bytes());
    proc.table("tcp", junk).table("tcp6", "   0:").process(1, b"init", 0);
    assert_eq!(proc.describe("127.0.0.1:8989"), fallback(8989));
    let nowhere = Path::new("/nonexistent/readyloop/proc");
    let far = Instant::now() + Duration::from_secs(60);
    let addr = "127.0.0.1:8989".parse().unwrap();
    assert_eq!(describe_at(nowhere, addr, far), fallback(8989));
}

#[test]
fn port_zero_means_no_free_port() {
    let proc = FakeProc::new();
    assert!(proc.describe("127.0.0.1:0").contains("no free port"));
}

/// With no listener on the port, a connection in TIME_WAIT on it is
/// named, both ends, as the holder no process owns; one on another
/// address or port is not, and a listener is named before it.
#[test]
fn a_connection_in_time_wait_is_named_when_no_listener_is() {
    let proc = FakeProc::new();
    let table = [
        HEADER.to_string(),
        listen_line("127.0.0.1:9000", 999),
        time_wait_line("127.0.0.2:8989", "127.0.0.1:4000"),
        time_wait_line("127.0.0.1:8988", "127.0.0.1:4000"),
        time_wait_line("127.0.0.1:8989", "127.0.0.1:9000"),
        time_wait_line("127.0.0.1:9000", "127.0.0.1:5000"),
    ]
    .concat();
    proc.table("tcp", table).process(7, b"srv", 999);
    let text = proc.describe("127.0.0.1:8989");
    assert_eq!(
        text,
        "no process holds it: the closed connection 127.0.0.1:8989 -> \
         127.0.0.1:9000 is in TIME_WAIT, which clears by itself within \
         60 s (that socket was bound without SO_REUSEADDR, so ours cannot \
         share the port)"
    );
    // A wildcard bind is blocked by the first one on its port.
    let wide = proc.describe("0.0.0.0:8989");
    assert!(wide.contains(" 127.0.0.2:8989 -> 127.0.0.1:4000 "), "{wide}");
    assert_eq!(proc.describe("127.0.0.1:9000"), "held by pid 7 (srv)");
    assert_eq!(proc.describe("127.0.0.1:8990"), fallback(8990));
}

/// A TIME_WAIT connection of `/proc/net/tcp6` is named in IPv6 form.
#[test]
fn an_ipv6_connection_in_time_wait_is_found_in_tcp6() {
    let proc = FakeProc::new();
    let v6 = "   2: 00000000000000000000000001000000:A2C7 \
              00000000000000000000000001000000:1F90 06 00000000:00000000 \
              03:000016A8 00000000     0        0 0 3 00000000e5f6a7b8\n";
    proc.table("tcp", HEADER).table("tcp6", v6);
    let text = proc.describe("[::1]:41671");
    assert!(text.contains(" [::1]:41671 -> [::1]:8080 "), "{text}");
    assert!(text.contains("TIME_WAIT"), "{text}");
}
