//! `--workers N`: one mio loop per worker on SO_REUSEPORT sockets; one
//! stop, one summary with exact sums, limits that keep their meaning.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;

use crate::support::activation::{activated, fd, listening};
use crate::support::load_json::LoadReport;
use crate::support::server::{binary, Signal};
use crate::support::*;

/// The per-worker accepts of a `stats` line.
fn accepted_by_worker(line: &str) -> Vec<u64> {
    let field = line.split("accepted_by_worker=").nth(1).expect("field");
    field
        .split_whitespace()
        .next()
        .unwrap_or("")
        .split(',')
        .map(|n| n.parse().expect("a count"))
        .collect()
}

/// `readyloop load ARGS --json` against `server`, to its end.
fn load(server: &ServerProcess, args: &[&str]) -> LoadReport {
    let out = Command::new(binary())
        .args(["load", "--addr", &server.addr.to_string(), "--json", "-q"])
        .args(args)
        .output()
        .expect("run readyloop load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    LoadReport::parse(&stdout).expect("load report")
}

/// 1,000 connections from the load generator spread over two workers:
/// each takes between 30% and 70% of them, every byte echoes, and the
/// summary's counts are the exact sums of the workers'. Both loop models
/// (mio and uring) run as workers.
#[test]
fn two_mio_workers_share_the_connections_and_sum_exactly() {
    share_and_sum(readyloop::Model::Mio);
}

/// The same with the uring model's loop.
#[test]
fn two_uring_workers_share_the_connections_and_sum_exactly() {
    crate::support::uring::run(readyloop::Model::Uring, share_and_sum);
}

fn share_and_sum(model: readyloop::Model) {
    let _heavy = heavy();
    let mut server = serve(model, &["--mode", "echo", "--workers", "2"]);
    let line = server.wait_for_status("listening on ");
    assert!(line.ends_with(", workers=2)"), "{line}");
    let report = load(
        &server,
        &["--connections", "1000", "--messages", "5000", "--size", "64"],
    );
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.mismatches, 0, "{report:?}");
    assert!(report.messages >= 5000, "{report:?}");
    assert_eq!(report.bytes, report.messages * 64, "{report:?}");
    settle_closed(&mut server);
    server.signal(Signal::USR1);
    let stats = server.wait_for_status("stats ");
    let per = accepted_by_worker(&stats);
    assert_eq!(per.len(), 2, "{stats}");
    let total: u64 = per.iter().sum();
    assert_eq!(total, 1000, "{stats}");
    for n in &per {
        assert!((300..=700).contains(n), "unbalanced: {per:?}");
    }
    let s = stop(server);
    assert_eq!((s.accepted, s.closed()), (1000, 1000), "{s}");
    // The generator closes some connections with echoes still in flight
    // (counted as resets): the server echoed all it read, at least what
    // the generator verified.
    assert_eq!(s.bytes_in, s.bytes_out, "{s}");
    assert!(s.bytes_out >= report.bytes, "{s}");
}

/// Waits until the server's `stats` line shows no connection open.
fn settle_closed(server: &mut ServerProcess) {
    eventually("every connection closed", || {
        server.signal(Signal::USR1);
        let line = server.wait_for_status("stats ");
        server.log.retain(|l| !l.contains("] stats "));
        line.contains("stats open=0 ")
    });
}

/// SIGTERM in the middle of traffic stops every worker: exit 0 and one
/// summary in which every accepted connection is closed once.
#[test]
fn sigterm_during_traffic_stops_every_worker() {
    let _heavy = heavy();
    let mut server =
        serve(readyloop::Model::Mio, &["--mode", "echo", "--workers", "2"]);
    let addr = server.addr.to_string();
    let mut generator = Command::new(binary())
        .args(["load", "--addr", &addr, "-c", "200", "--duration", "30"])
        .args(["-q", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run readyloop load");
    wait_count(&mut server, "accepted (", 200);
    let (code, s) = server.finish();
    let _ = generator.kill();
    let _ = generator.wait();
    assert_eq!(code, 0);
    assert_eq!(s.accepted, s.closed(), "{s}");
    assert!(s.accepted >= 200, "{s}");
    assert!(
        server.count("w0 stopping") == 1 && server.count("w1 stopping") == 1
    );
    assert_eq!(server.count("] summary "), 1, "one summary");
}

/// The per-address limit counts a client's connections on every worker
/// together; `--max-connections` is split so the total never exceeds it.
#[test]
fn limits_keep_their_meaning_across_workers() {
    let server = serve(
        readyloop::Model::Mio,
        &["--mode", "echo", "--workers", "2", "--max-connections-per-ip", "3"],
    );
    let mut open: Vec<TcpStream> = Vec::new();
    for _ in 0..3 {
        let mut c = connect(server.addr);
        assert_eq!(echo_round(&mut c, b"in"), b"in");
        open.push(c);
    }
    for _ in 0..4 {
        let mut c = connect(server.addr);
        assert!(closed_by_server(&mut c), "a 4th from one address got in");
    }
    drop(open);
    let s = stop(server);
    assert_eq!((s.accepted, s.rejected), (3, 4), "{s}");

    let server = serve(
        readyloop::Model::Mio,
        &["--mode", "echo", "--workers", "2", "--max-connections", "4"],
    );
    let mut served = Vec::new();
    let mut rejected = 0;
    for _ in 0..12 {
        let mut c = connect(server.addr);
        std::io::Write::write_all(&mut c, b"x").unwrap();
        let mut b = [0u8; 1];
        match std::io::Read::read(&mut c, &mut b) {
            Ok(1) => served.push(c),
            _ => rejected += 1,
        }
    }
    assert!(served.len() <= 4, "{} served at once over 4", served.len());
    assert!(served.len() >= 2, "each worker has room for two");
    drop(served);
    let s = stop(server);
    assert_eq!(s.rejected, rejected, "{s}");
}

/// Descriptors run out: each worker pauses its own accepting, and the
/// connections both already hold keep being served; once some close,
/// new clients are served again.
#[test]
fn out_of_descriptors_pauses_accepting_not_serving() {
    let _heavy = heavy();
    let mut server = ServerProcess::start_with_nofile(
        &["--mode", "echo", "--workers", "2"],
        64,
    );
    // More clients than descriptors: the rest wait in the backlogs.
    let mut clients: Vec<TcpStream> =
        (0..80).map(|_| connect(server.addr)).collect();
    server.wait_for_line("pausing accept");
    // Which clients were accepted, by the port each worker logged.
    let accepted: Vec<String> = server
        .collect_log()
        .iter()
        .filter(|l| l.contains(" accepted ("))
        .cloned()
        .collect();
    assert!(accepted.len() >= 20, "{} accepted", accepted.len());
    assert!(accepted.iter().any(|l| l.contains("] w0 ")), "w0 served none");
    assert!(accepted.iter().any(|l| l.contains("] w1 ")), "w1 served none");
    let is_accepted = |c: &TcpStream| {
        let me = format!(" {} accepted (", c.local_addr().unwrap());
        accepted.iter().any(|l| l.contains(&me))
    };
    let (mut held, waiting): (Vec<TcpStream>, Vec<TcpStream>) =
        clients.drain(..).partition(is_accepted);
    assert_eq!(held.len(), accepted.len());
    // Accepting pauses; serving goes on, on both workers.
    for c in held.iter_mut() {
        assert_eq!(echo_round(c, b"alive"), b"alive");
    }
    // Close them: the waiting ones get accepted and served.
    drop(held);
    for mut c in waiting.into_iter().take(10) {
        assert_eq!(echo_round(&mut c, b"later"), b"later");
    }
    let (code, s) = server.finish();
    assert_eq!(code, 0);
    assert_eq!(s.accepted, s.closed(), "{s}");
}

/// `--workers 0` runs one per CPU; another model, or more workers than
/// connections, is a usage error; an address some socket holds without
/// SO_REUSEPORT cannot be joined (exit 1).
#[test]
fn worker_counts_and_refusals() {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let mut server = serve(readyloop::Model::Mio, &["--workers", "0"]);
    let line = server.wait_for_status("listening on ");
    match cpus {
        1 => assert!(!line.contains("workers="), "{line}"),
        n => assert!(line.ends_with(&format!(", workers={n})")), "{line}"),
    }
    stop(server);
    for (args, want) in [
        (&["--workers", "2", "--model", "thread"][..], "--model mio or uring"),
        (&["--pin", "--model", "process"][..], "--model mio"),
        (
            &["--workers", "3", "--max-connections", "2"][..],
            "--max-connections 2",
        ),
        (&["--workers", "-1"][..], "--workers"),
    ] {
        let out = Command::new(binary())
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(binary())
        .args(["serve", "--addr", &addr, "--workers", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
}

/// Under socket activation every worker takes the same passed socket
/// (it cannot be bound again): every client is served and counted once.
#[test]
fn workers_share_a_passed_socket() {
    let (socket, addr) = listening("127.0.0.1:0");
    let args = ["serve", "--mode", "echo", "--workers", "2", "--pin"];
    let mut server = ServerProcess::start_command(activated(
        binary(),
        &args,
        &[fd(&socket)],
        &["web"],
    ));
    let line = server.wait_for_status("listening on ");
    assert!(line.contains("(socket activation)"), "{line}");
    for n in 0..40u64 {
        echo_and_close(addr, &pattern(n, 100));
    }
    let s = stop(server);
    assert_eq!((s.accepted, s.closed_eof), (40, 40), "{s}");
    assert_eq!(s.bytes_in, 4000, "{s}");
}

/// The library runs workers too, and its `Handle` stops them all.
#[test]
fn the_library_runs_workers_and_one_handle_stops_them() {
    let mut config = readyloop::Config::new("127.0.0.1:0".parse().unwrap());
    config.mode = readyloop::Mode::Echo;
    config.workers = 2;
    let running = readyloop::bind(config).unwrap().spawn().unwrap();
    for n in 0..20u64 {
        echo_and_close(running.addr, &pattern(n, 10));
    }
    let s = running.stop().unwrap();
    assert_eq!((s.accepted, s.closed_eof, s.bytes_in), (20, 20, 200), "{s}");
}
