//! `GET /healthz` and `--drain`: what a load balancer's health check
//! sees when a server stops, in every model. It answers 200 while the
//! server serves and 503 from the moment a stop is asked, through the
//! drain (during which clients are still accepted and served) and the
//! stop window; a second stop during the drain stops now. Connections
//! that stall their request, from many addresses, never make it fail.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use readyloop::{Mode, Model};
use socket2::SockRef;

use crate::support::scrape::{connect_from, exchange, serve_metrics};
use crate::support::scrape::{exchange_from, still_open, HALF};
use crate::support::server::Signal;
use crate::support::*;

per_model!(
    a_stop_turns_healthz_to_503_and_the_drain_still_serves,
    a_drain_ends_in_the_usual_stop_with_healthz_still_503,
    the_service_manager_hears_stopping_when_the_drain_begins,
);
per_model!(in_process: a_handle_stop_drains_first);
per_model!(healthz_is_answered_through_a_slowloris);

/// `GET /healthz` as HAProxy's `option httpchk GET /healthz` sends it.
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.0\r\n\r\n";

/// The status and body of one health check.
fn health(metrics: SocketAddr) -> (u16, String) {
    let response = exchange(metrics, HEALTHZ);
    (response.status, response.body)
}

/// Before a stop `/healthz` says `200 ok`; after SIGTERM with a long
/// drain it says `503 stopping` while new clients are still accepted
/// and echoed; a second SIGTERM stops the server now, with exit 0.
fn a_stop_turns_healthz_to_503_and_the_drain_still_serves(model: Model) {
    let (mut server, metrics) =
        serve_metrics(model, &["--mode", "echo", "--drain", "600"]);
    assert_eq!(health(metrics), (200, "ok\n".to_string()));
    echo_and_close(server.addr, &pattern(1, 1000));
    server.signal(Signal::TERM);
    server.wait_for_line("received SIGTERM: draining for 600 s");
    assert_eq!(health(metrics), (503, "stopping\n".to_string()));
    // Draining: a new client is accepted and served as before.
    echo_and_close(server.addr, &pattern(2, 50_000));
    assert_eq!(health(metrics).0, 503);
    assert!(server.alive(), "the drain has 600 s left");
    let (code, summary) = server.finish_with(&[Signal::TERM]);
    assert_eq!(code, 0, "{:?}", server.log);
    assert_eq!(summary.accepted, 2, "{summary:?}");
    assert_eq!(summary.closed_eof, 2, "{summary:?}");
    assert_eq!(server.count("received SIGTERM again: stopping now"), 1);
}

/// When a short drain ends the stop goes on as without one: the client
/// listener closes (a new client is refused), and while the stop window
/// (2 s) waits for a client that does not read its echo, `/healthz`
/// still answers 503.
fn a_drain_ends_in_the_usual_stop_with_healthz_still_503(model: Model) {
    let (mut server, metrics) =
        serve_metrics(model, &["--mode", "echo", "--drain", "0.3"]);
    let open = connect(server.addr);
    fill_until_blocked(&open);
    server.signal(Signal::TERM);
    server.wait_for_line("received SIGTERM: draining for 0.3 s");
    // The iterative model stops listening only once its one client is
    // done (its stop window runs inside that client's service).
    if model != Model::Iterative {
        server.wait_for_line("stopping: 1 connections open");
        let refused = TcpStream::connect(server.addr);
        assert!(
            refused.is_err(),
            "the client listener closed after the drain"
        );
    }
    assert_eq!(health(metrics), (503, "stopping\n".to_string()));
    assert!(server.alive(), "the stop window waits for the open client");
    drop(open);
    assert_eq!(server.wait_exit(), 0, "{:?}", server.collect_log());
    assert_eq!(server.count("stopping: "), 1);
}

/// Writes to `stream` without reading until the server's echo backs up
/// and the write would block (bounded: at most 64 MiB).
fn fill_until_blocked(stream: &TcpStream) {
    use std::io::{ErrorKind, Write};
    stream.set_nonblocking(true).expect("nonblocking");
    let chunk = pattern(3, 64 * 1024);
    let mut sent = 0;
    let mut blocked = 0;
    // A WouldBlock may be momentary while the server reads; blocked
    // for a few retries in a row means its echo has backed up.
    while blocked < 20 {
        assert!(sent < 64 << 20, "the server never stopped reading");
        match (&*stream).write(&chunk) {
            Ok(n) => {
                sent += n;
                blocked = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                blocked += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Under a service manager (`NOTIFY_SOCKET`), `STOPPING=1` is sent when
/// the drain begins, not when it ends: the server still serves then.
fn the_service_manager_hears_stopping_when_the_drain_begins(model: Model) {
    let path = std::env::temp_dir().join(format!(
        "readyloop-drain-notify-{}-{model}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let manager = UnixDatagram::bind(&path).expect("bind a notify socket");
    manager.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut cmd = ServerProcess::command_at(
        "127.0.0.1:0",
        &[
            "--model",
            model.name(),
            "--mode",
            "echo",
            "--drain",
            "600",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    cmd.env("NOTIFY_SOCKET", &path);
    let mut server = ServerProcess::start_command(cmd);
    let heard = |needle: &str| {
        let mut buf = [0u8; 4096];
        loop {
            let n = manager.recv(&mut buf).expect("a notification in time");
            if String::from_utf8_lossy(&buf[..n]).contains(needle) {
                return;
            }
        }
    };
    heard("READY=1");
    server.signal(Signal::TERM);
    heard("STOPPING=1");
    // Still draining: a new client is served.
    echo_and_close(server.addr, b"after STOPPING=1");
    let (code, summary) = server.finish_with(&[Signal::TERM]);
    assert_eq!((code, summary.accepted), (0, 1));
    let _ = std::fs::remove_file(&path);
}

/// A [`readyloop::Handle`] starts the drain as SIGTERM does: `/healthz`
/// says 503 at once, a new client is still served, and a second stop
/// stops now.
fn a_handle_stop_drains_first(model: Model) {
    let mut config = crate::library::config(model, Mode::Echo);
    config.drain = Duration::from_secs(600);
    config.metrics_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = readyloop::bind(config).expect("bind");
    let metrics = server.metrics_addr().expect("a metrics address");
    let running = server.spawn().expect("spawn");
    assert_eq!(health(metrics).0, 200);
    running.handle.stop();
    assert_eq!(health(metrics), (503, "stopping\n".to_string()));
    echo_and_close(running.addr, &pattern(4, 3000));
    let summary = running.stop().expect("summary");
    assert_eq!((summary.accepted, summary.closed_eof), (1, 1));
}

/// With `--workers 3` the drain is one for all: every worker keeps
/// serving through it (ten clients are echoed, whichever worker the
/// kernel hands each to) and every worker stops when it ends, without a
/// second signal.
#[test]
fn workers_drain_and_stop_together() {
    let (mut server, metrics) = serve_metrics(
        Model::Mio,
        &["--mode", "echo", "--workers", "3", "--drain", "2"],
    );
    let open = connect(server.addr);
    server.signal(Signal::TERM);
    server.wait_for_line("received SIGTERM: draining for 2 s");
    assert_eq!(health(metrics).0, 503);
    for n in 0..10 {
        echo_and_close(server.addr, &pattern(n, 100));
    }
    drop(open);
    assert_eq!(server.wait_exit(), 0, "{:?}", server.collect_log());
    let summary = server.wait_for_status("summary ");
    assert!(summary.contains("accepted=11 "), "{summary}");
}

/// Stalled half-requests each attacking address keeps open.
const STALLED_PER_ADDRESS: usize = 6;
/// The attacking addresses: 127.0.0.3 to 127.0.0.10.
const ATTACKERS: u8 = 8;
/// How long the attack and the health checks run: three of the
/// server's 1 s head deadlines, in which the attacker opens some 30,000
/// stalled connections and the checker asks about 30 times (before the
/// server's limits, every check failed).
const ATTACK: Duration = Duration::from_secs(3);

/// Keeps [`STALLED_PER_ADDRESS`] connections with half a request head
/// open from each attacking address until `done`, opening a new one as
/// soon as the server closes one; counts the connections it opened.
fn slowloris(metrics: SocketAddr, done: &AtomicBool, opened: &AtomicUsize) {
    let seats = STALLED_PER_ADDRESS * usize::from(ATTACKERS);
    let mut held: Vec<Option<TcpStream>> = (0..seats).map(|_| None).collect();
    while !done.load(Relaxed) {
        for (n, seat) in held.iter_mut().enumerate() {
            if seat.as_ref().is_some_and(still_open) {
                continue;
            }
            let host = 3 + (n % usize::from(ATTACKERS)) as u8;
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, host), metrics);
            let _ = s.write_all(HALF);
            // Dropped with an RST, which ends the server's end too: the
            // attack leaves no TIME_WAIT behind on the host.
            let linger = SockRef::from(&s).set_linger(Some(Duration::ZERO));
            linger.expect("SO_LINGER 0");
            *seat = Some(s);
            opened.fetch_add(1, Relaxed);
        }
        // Paces the attacker, so the two cores are not all its own.
        thread::sleep(Duration::from_millis(2));
    }
}

/// Sets its flag when dropped.
struct EndAttack<'a>(&'a AtomicBool);

impl Drop for EndAttack<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// While an attacker keeps refilling stalled half-requests from eight
/// addresses for 3 s (more than the table holds), a balancer's health
/// check from another address every 100 ms is answered `200 ok` every
/// time.
fn healthz_is_answered_through_a_slowloris(model: Model) {
    let _heavy = heavy();
    let (server, metrics) = serve_metrics(model, &[]);
    let (done, opened) = (AtomicBool::new(false), AtomicUsize::new(0));
    let checker = Ipv4Addr::new(127, 0, 0, 2);
    let (asked, answered) = thread::scope(|scope| {
        scope.spawn(|| slowloris(metrics, &done, &opened));
        // Ends the attack however the checks end, a panic included.
        let _end = EndAttack(&done);
        let seats = STALLED_PER_ADDRESS * usize::from(ATTACKERS);
        eventually("the attack in place", || opened.load(Relaxed) >= seats);
        let (mut asked, mut answered) = (0, 0);
        let start = Instant::now();
        while start.elapsed() < ATTACK {
            let response = exchange_from(checker, metrics, HEALTHZ);
            asked += 1;
            answered +=
                usize::from(response.is_some_and(|r| {
                    (r.status, r.body) == (200, "ok\n".into())
                }));
            thread::sleep(Duration::from_millis(100));
        }
        (asked, answered)
    });
    let opened = opened.load(Relaxed);
    println!(
        "{model}: {answered} of {asked} health checks answered; \
         {opened} stalled connections opened"
    );
    assert_eq!(answered, asked, "health checks answered 200");
    assert!(asked >= 10, "only {asked} checks in {ATTACK:?}");
    stop(server);
}
