//! systemd's readiness protocol (`Type=notify`), with the test as the
//! service manager: a datagram socket named by `NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use readyloop::Model;

use crate::support::server::{binary, Signal};
use crate::support::*;

per_model!(readiness_watchdog_status_and_stopping);

/// The manager's end: a socket bound at a fresh path.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every message received, in order.
    seen: Vec<String>,
}

impl Manager {
    fn new() -> Manager {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "readyloop-notify-{}-{}",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        ));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        Manager { socket, path, seen: Vec::new() }
    }

    /// The next message, or `None` if none comes within `wait`.
    fn next(&mut self, wait: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.seen.push(msg.clone());
        Some(msg)
    }

    /// Waits for a message containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(msg) = self.next(Duration::from_millis(200)) {
                if msg.contains(needle) {
                    return msg;
                }
            }
        }
        panic!("no {needle:?} from the server; got {:?}", self.seen);
    }

    /// Messages containing `needle` that arrive within `window`.
    fn count_for(&mut self, needle: &str, window: Duration) -> usize {
        let end = Instant::now() + window;
        let mut n = 0;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left.max(Duration::from_millis(1))) {
                Some(msg) if msg.contains(needle) => n += 1,
                Some(_) => {}
                None => break,
            }
        }
        n
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `readyloop serve` on a free port with the manager's variables.
fn command(model: Model, manager: &Manager, watchdog_usec: u64) -> Command {
    let mut cmd = ServerProcess::command_at(
        "127.0.0.1:0",
        &["--model", model.name(), "--mode", "echo"],
    );
    cmd.env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", watchdog_usec.to_string());
    cmd
}

/// READY=1 once a connect succeeds; STATUS= with the counters, only when
/// they change; WATCHDOG=1 at half of WATCHDOG_USEC, from the loop (a
/// stopped process sends none); STOPPING=1 when SIGTERM arrives.
fn readiness_watchdog_status_and_stopping(model: Model) {
    let mut manager = Manager::new();
    // 200 ms: a ping every 100 ms.
    let mut server =
        ServerProcess::start_command(command(model, &manager, 200_000));
    manager.wait_for("READY=1");
    // Ready means a client can be served now.
    let mut c = connect(server.addr);
    assert_eq!(echo_round(&mut c, b"ready"), b"ready");
    let status = manager.wait_for("bytes_in=5 bytes_out=5");
    assert!(status.starts_with("STATUS=open=1 accepted=1 "), "{status}");
    // Nothing changes: no new status, but the watchdog goes on.
    let pings = manager.count_for("WATCHDOG=1", Duration::from_millis(1500));
    assert!(pings >= 5, "{pings} pings in 1.5 s at a 100 ms pace");
    let statuses: Vec<&String> =
        manager.seen.iter().filter(|m| m.starts_with("STATUS=")).collect();
    let mut unique = statuses.clone();
    unique.dedup();
    assert_eq!(unique, statuses, "a status sent again unchanged");
    // A stopped loop feeds no watchdog.
    server.signal(Signal::STOP);
    manager.count_for("WATCHDOG=1", Duration::from_millis(300));
    let stopped = manager.count_for("WATCHDOG=1", Duration::from_millis(1000));
    server.signal(Signal::CONT);
    assert_eq!(stopped, 0, "watchdog pings while SIGSTOPped");
    manager.wait_for("WATCHDOG=1");
    drop(c);
    server.signal(Signal::TERM);
    manager.wait_for("STOPPING=1");
    assert_eq!(server.wait_exit(), 0);
    let log = server.collect_log().join("\n");
    assert!(!log.contains("notify"), "{log}");
}

/// Without NOTIFY_SOCKET nothing is sent and nothing is said about it;
/// with one that leads nowhere the server says so once and serves.
#[test]
fn without_a_manager_nothing_is_said() {
    let mut server = ServerProcess::start_command(ServerProcess::command_at(
        "127.0.0.1:0",
        &["--mode", "echo"],
    ));
    echo_and_close(server.addr, b"x");
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit(), 0);
    let log = server.collect_log().join("\n").to_lowercase();
    assert!(!log.contains("notify") && !log.contains("manager"), "{log}");

    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--mode", "echo"])
        .env("NOTIFY_SOCKET", "/nonexistent/readyloop-notify");
    let mut server = ServerProcess::start_command(cmd);
    echo_and_close(server.addr, b"still serves");
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit(), 0);
    let warned = server.count("cannot reach the service manager");
    assert_eq!(warned, 1, "{:?}", server.log);
}

/// With `--workers`, the first worker feeds the watchdog only while every
/// worker turns: idle workers turn on a heartbeat, so an idle server
/// keeps the pings at pace (a worker that stopped turning would stop
/// them; the unit test of `listener::group` covers that decision).
#[test]
fn idle_workers_keep_the_watchdog_fed() {
    let mut manager = Manager::new();
    let mut cmd = command(Model::Mio, &manager, 200_000);
    cmd.args(["--workers", "3"]);
    let mut server = ServerProcess::start_command(cmd);
    manager.wait_for("READY=1");
    // Nothing happens for 1.5 s on any worker.
    let pings = manager.count_for("WATCHDOG=1", Duration::from_millis(1500));
    assert!(pings >= 5, "{pings} pings in 1.5 s at a 100 ms pace");
    echo_and_close(server.addr, b"served");
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit(), 0);
    let log = server.collect_log().join("\n");
    assert!(!log.contains("not feeding the watchdog"), "{log}");
}
