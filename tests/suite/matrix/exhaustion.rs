//! Resource exhaustion against the real binary of the concurrent models:
//! out of descriptors, over `--max-connections`, and clients that never
//! read. The server neither crashes nor spins nor grows past its buffer
//! caps, and serves fully once the pressure ends. (The iterative model
//! holds one connection at a time, so none of this can pile up on it.)

use std::io::{self, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use readyloop::Model;

use crate::support::*;

per_model!(concurrent: descriptor_exhaustion_neither_crashes_nor_spins,
    max_connections_rejects_promptly_and_counts_exactly,
    clients_that_never_read_cannot_grow_memory);

/// Descriptors the server may open in the descriptor test.
const NOFILE: u64 = 64;
/// Connections in that flood: ten times the descriptors.
const FLOOD: usize = 10 * NOFILE as usize;
/// CPU the saturated server may use, in percent of one core (trap 4: a
/// server that retries accept at once spins at 100%).
const MAX_CPU_PERCENT: u64 = 10;
/// How long the saturated server's CPU is measured: a span to take a
/// rate over, not a wait for anything.
const CPU_WINDOW: Duration = Duration::from_secs(2);
/// `--max-connections` in the limit test, and the clients over it.
const MAX_CONNECTIONS: usize = 40;
const OVER_LIMIT: usize = 200;
/// Clients that send and never read.
const NON_READERS: usize = 200;
/// Memory one connection that never reads may hold, in KiB: the echo
/// backpressure cap ([`readyloop::OUT_CAP`], just under 64 KiB, so that
/// with its allocator header the block fits 16 pages) plus one page for
/// the connection's own few hundred bytes.
const PER_CONNECTION_KIB: u64 =
    (readyloop::OUT_CAP as u64).div_ceil(4096) * 4 + 4;

/// `--mode echo --model MODEL EXTRA…`.
fn echo_args<'a>(model: Model, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--mode", "echo", "--model", model.name()];
    args.extend_from_slice(extra);
    args
}

/// One echo round on a fresh connection: the server serves fully.
fn assert_serves(server: &ServerProcess) {
    echo_and_close(server.addr, &pattern(3, 32 * 1024));
}

/// Out of descriptors with ten times as many connections waiting: no
/// crash, no busy loop, and full service once the flood ends.
fn descriptor_exhaustion_neither_crashes_nor_spins(model: Model) {
    let _heavy = heavy();
    let mut server = ServerProcess::start_with_nofile(
        &echo_args(model, &["--log-level", "warn"]),
        NOFILE,
    );
    let pid = server.pid();
    server.warm_up();
    let base_fds = server.fd_count();

    let flood: Vec<TcpStream> =
        (0..FLOOD).map(|_| connect(server.addr)).collect();
    // Saturated: the server holds as many as its descriptors allow
    // (the process model's parent closes its copies: there, every
    // connection has a child, each under the same limit).
    eventually("the server runs out of descriptors", || {
        server.fd_count() as u64 >= NOFILE - 2
            || proc::children(pid).len() == FLOOD
    });
    let before = proc::cpu_ticks(pid).unwrap_or(0);
    thread::sleep(CPU_WINDOW);
    let used = proc::cpu_ticks(pid).unwrap_or(0) - before;
    let budget =
        CPU_WINDOW.as_secs() * proc::ticks_per_second() * MAX_CPU_PERCENT
            / 100;
    eprintln!(
        "{model}: {used} ticks of CPU in {CPU_WINDOW:?} while out of \
         descriptors (budget {budget})"
    );
    assert!(used <= budget, "{model}: busy loop: {used} > {budget}");
    assert!(server.alive(), "{model} died");

    drop(flood);
    eventually(&format!("{model}: descriptors back to the baseline"), || {
        server.fd_count() == base_fds
    });
    assert_serves(&server);
    let (code, summary) = server.finish();
    assert_eq!(code, 0, "{model}: exit code");
    // Every flood connection was accepted in the end (a closed one
    // reads EOF at once) or refused as over the limit; none vanished.
    assert_eq!(
        summary.accepted + summary.rejected,
        FLOOD as u64 + 2, // and the warm-up and fresh clients
        "{model}: {summary}"
    );
    assert_eq!(summary.closed(), summary.accepted, "{model}: {summary}");
    assert_eq!(summary.closed_error, 0, "{model}: {summary}");
}

/// A flood over `--max-connections`: every extra client is closed at
/// once while the admitted ones stay served, and the count is exact.
fn max_connections_rejects_promptly_and_counts_exactly(model: Model) {
    let _heavy = heavy();
    let max = MAX_CONNECTIONS.to_string();
    let mut server = ServerProcess::start(&echo_args(
        model,
        &["--max-connections", &max, "--log-level", "warn"],
    ));
    let mut admitted: Vec<TcpStream> =
        (0..MAX_CONNECTIONS).map(|_| connect(server.addr)).collect();
    for (i, s) in admitted.iter_mut().enumerate() {
        let data = pattern(i as u64, 100);
        assert_eq!(echo_round(s, &data), data, "{model}: admitted {i}");
    }
    // Prompt: each extra client is closed while every admitted one
    // still holds its slot, so it did not wait for a free one.
    for i in 0..OVER_LIMIT {
        let mut extra = connect(server.addr);
        assert!(closed_by_server(&mut extra), "{model}: extra {i} served");
    }
    for (i, s) in admitted.iter_mut().enumerate() {
        let data = pattern(i as u64, 10);
        assert_eq!(echo_round(s, &data), data, "{model}: still served");
    }
    admitted.into_iter().for_each(close_and_wait);
    assert_serves(&server);
    let (code, summary) = server.finish();
    assert_eq!(code, 0, "{model}");
    assert_eq!(summary.rejected, OVER_LIMIT as u64, "{model}: {summary}");
    assert_eq!(
        summary.accepted,
        MAX_CONNECTIONS as u64 + 1,
        "{model}: {summary}"
    );
    assert_eq!(summary.closed_eof, summary.accepted, "{model}: {summary}");
    let warnings =
        server.log.iter().filter(|l| l.contains(" rejected: ")).count();
    assert!(
        (1..OVER_LIMIT).contains(&warnings),
        "{model}: {warnings} rejection lines (at most one a second)"
    );
}

/// Writes to every stream until none takes another byte; returns how
/// much went. The server stops reading each at its backpressure cap.
fn fill(streams: &mut [TcpStream]) -> u64 {
    let chunk = vec![0x5a; 64 * 1024];
    let mut total = 0;
    for _ in 0..200 {
        let mut round = 0;
        for s in streams.iter_mut() {
            loop {
                match s.write(&chunk) {
                    Ok(n) => round += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
        }
        total += round;
        if round == 0 {
            return total;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("the server never stopped reading clients that do not read");
}

/// Clients that send and never read cannot grow the server past
/// `connections x 64 KiB` above its baseline.
fn clients_that_never_read_cannot_grow_memory(model: Model) {
    let _heavy = heavy();
    let mut server =
        ServerProcess::start(&echo_args(model, &["--log-level", "warn"]));
    let pid = server.pid();
    // The baseline is taken once the server has served a client, so
    // that it holds the buffers every server touches on first use.
    server.warm_up();
    let base = proc::rss_kib(pid).expect("rss");
    let mut streams: Vec<TcpStream> = (0..NON_READERS)
        .map(|_| {
            let s = connect(server.addr);
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let sent = fill(&mut streams);
    let cap = base + NON_READERS as u64 * PER_CONNECTION_KIB;
    let peak = proc::peak_rss_kib(pid).expect("hwm");
    let child_peak = proc::children(pid)
        .iter()
        .filter_map(|c| proc::peak_rss_kib(c.pid))
        .max()
        .unwrap_or(0);
    eprintln!(
        "{model}: {NON_READERS} clients sent {} KiB and read none; \
         server peak rss {peak} KiB (baseline {base}, cap {cap}); \
         largest child peak {child_peak} KiB",
        sent / 1024
    );
    assert!(peak <= cap, "{model}: peak rss {peak} KiB > cap {cap} KiB");
    assert!(
        child_peak <= base + PER_CONNECTION_KIB,
        "{model}: a child grew to {child_peak} KiB"
    );
    drop(streams);
    assert_serves(&server);
    let (code, _) = server.finish();
    assert_eq!(code, 0, "{model}");
}
