//! Logging never blocks serving or stopping, the summary stays exact
//! whatever stderr does, and a client cannot flood the log: for every
//! model, against the real binary with its stderr a pipe this test holds.
//!
//! Standalone on purpose (std, libc and the binary only), so it can move
//! into a larger test binary as a module.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use readyloop::Model;

use crate::support::eventually;

mod harness;

use harness::*;

/// How long a client waits for one reply: a server stalled on its log
/// fails the test instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default of `--log-rate`.
const LOG_RATE: f64 = 20.0;
/// The `--log-burst` of the flood test (the default is 200).
const LOG_BURST: f64 = 50.0;

per_model!(
    never_read_stderr_stalls_neither_serving_nor_stopping,
    a_drained_sink_reports_and_counts_what_it_dropped,
    a_slow_stderr_reader_leaves_the_summary_exact,
    a_log_flood_is_bounded_and_a_person_is_not,
    the_total_log_rate_holds_across_connections,
    the_summary_reaches_a_trickling_stderr,
    a_trace_session_never_blocks_the_loop,
);

/// See [`summary_first`].
fn the_summary_reaches_a_trickling_stderr(model: Model) {
    summary_first(model.name(), &[]);
}

/// As [`summary_first`], with two mio workers.
#[test]
fn the_summary_reaches_a_trickling_stderr_with_workers() {
    summary_first("mio", &["--workers", "2"]);
}

/// A stderr that keeps taking bytes, slowly (a one-page pipe read at
/// 2.5 KB/s), with 300 clients open at SIGTERM: their close lines no
/// longer fit, and the summary goes out before them. Exit 0, the summary
/// is the last line, and every accepted connection is counted closed;
/// the lines dropped at the stop are said to be, in one line before it.
fn summary_first(model: &str, extra: &[&str]) {
    let args = [&["--mode", "echo"][..], extra].concat();
    let mut server = Server::start(model, &args);
    let log = Reader::spawn(server.take_stderr(), Pace::Trickle);
    let held = if model == "iterative" { 1 } else { 300 };
    let clients: Vec<TcpStream> = (0..held)
        .map(|_| {
            let mut c = client(server.addr);
            echo(&mut c, b"here\n");
            c
        })
        .collect();
    let (status, _) = server.terminate();
    assert!(status.success(), "{model}: exit status {status}");
    let text = log.join();
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains(" summary "), "{model}: last line {last:?}");
    let s = summary(&text);
    assert_eq!(s["accepted"], held as u64, "{model}: {s:?}");
    assert_eq!(closed(&s), s["accepted"], "{model}: {s:?}");
    if s["log_dropped"] > 0 {
        let said = text.lines().any(|l| l.contains("log lines dropped"));
        assert!(said, "{model}: drops not said: {}", tail(&text));
    }
    drop(clients);
}

/// Enough connections that their log lines (about 120 bytes each) overrun
/// the pipe (64 KiB) and the server's own buffer (64 KiB) several times.
fn connections(model: Model) -> usize {
    match model {
        Model::Mio | Model::Uring => 10_000,
        _ => 2_000,
    }
}

/// See [`never_read_stderr`].
fn never_read_stderr_stalls_neither_serving_nor_stopping(model: Model) {
    never_read_stderr(model.name(), connections(model));
}

/// See [`drained_sink_reports_drops`].
fn a_drained_sink_reports_and_counts_what_it_dropped(model: Model) {
    drained_sink_reports_drops(model.name(), connections(model), &[]);
}

/// [`drained_sink_reports_drops`] at `--log-level trace`: a dozen lines
/// a client, none of which may block the loop on an unread stderr; the
/// lines that did not fit are dropped and counted as at `info`.
fn a_trace_session_never_blocks_the_loop(model: Model) {
    let conns = connections(model).min(2_000);
    drained_sink_reports_drops(model.name(), conns, &["--log-level", "trace"]);
}

/// See [`slow_reader_exact_summary`].
fn a_slow_stderr_reader_leaves_the_summary_exact(model: Model) {
    slow_reader_exact_summary(model.name());
}

/// See [`flood_is_bounded`].
fn a_log_flood_is_bounded_and_a_person_is_not(model: Model) {
    flood_is_bounded(model.name());
}

/// See [`total_rate_holds`].
fn the_total_log_rate_holds_across_connections(model: Model) {
    total_rate_holds(model.name());
}

/// A stderr pipe nobody reads: every client is still echoed, and SIGTERM
/// ends the server (exit 0) while the pipe is still unread, although its
/// last lines, the summary among them, cannot be written (a server that
/// waited for the pipe would never exit). What the pipe does hold is
/// whole lines.
fn never_read_stderr(model: &str, conns: usize) {
    let mut server = Server::start(model, &["--mode", "echo"]);
    for i in 0..conns {
        echo_and_close(server.addr, i);
    }
    // One connection still open when the stop begins.
    let mut held = client(server.addr);
    echo(&mut held, b"still here");
    let (status, _) = server.terminate();
    assert!(status.success(), "{model}: exit status {status}");
    // Only now is the pipe read.
    let log = server.read_all_stderr();
    assert!(log.len() > 60_000, "{model}: only {} bytes logged", log.len());
    assert!(log.ends_with('\n'), "{model}: log ends mid-line");
    for line in log.lines() {
        assert!(is_log_line(line), "{model}: broken line {line:?}");
    }
}

/// Once a stalled reader reads again, one line says how many lines were
/// dropped, and the summary counts them (`log_dropped`) while its other
/// numbers stay exact.
fn drained_sink_reports_drops(model: &str, conns: usize, extra: &[&str]) {
    let args = [&["--mode", "echo"][..], extra].concat();
    let mut server = Server::start(model, &args);
    for i in 0..conns {
        echo_and_close(server.addr, i);
    }
    let log = Reader::spawn(server.take_stderr(), Pace::Fast);
    let report = log.wait_for(|l| l.contains("log sink was full: "));
    assert!(report.starts_with("WARN "), "{model}: {report:?}");
    let (status, _) = server.terminate();
    assert!(status.success(), "{model}: exit status {status}");
    let text = log.join();
    let s = summary(&text);
    let reported: u64 = text
        .lines()
        .filter_map(|l| l.split("log sink was full: ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(reported > 0, "{model}: no drop count in {report:?}");
    assert!(s["log_dropped"] >= reported, "{model}: {s:?} < {reported}");
    assert_eq!(s["accepted"], conns as u64, "{model}: {s:?}");
    assert_eq!(s["closed_eof"], conns as u64, "{model}: {s:?}");
    assert_eq!(closed(&s), s["accepted"], "{model}: {s:?}");
}

/// Clients churn and hold busy connections while stderr is read slowly;
/// a SIGTERM under that load still ends in a summary in which every
/// connection is counted once (accepted = sum of closed_*), and which
/// covers what the clients saw served. Before this held, 300 process-model
/// children blocked on their `closed:` line were killed at the end of the
/// window and counted a second time.
fn slow_reader_exact_summary(model: &str) {
    let mut server = Server::start(model, &["--mode", "log"]);
    let log = Reader::spawn(server.take_stderr(), Pace::Slow);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    let churners = if model == "iterative" { 1 } else { 4 };
    for _ in 0..churners {
        let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
        clients.push(thread::spawn(move || {
            while !stop.load(SeqCst) {
                if send_and_close(addr, b"churn!\n").is_ok() {
                    served.fetch_add(1, SeqCst);
                }
            }
        }));
    }
    // Connections open and sending when the stop begins (the iterative
    // model serves one at a time, so it gets none).
    let held = if model == "iterative" { 0 } else { 300 };
    let ready = Arc::new(AtomicU64::new(0));
    for _ in 0..held {
        let (stop, ready) = (Arc::clone(&stop), Arc::clone(&ready));
        clients.push(thread::spawn(move || {
            let Ok(mut c) = TcpStream::connect(addr) else { return };
            let _ = c.set_write_timeout(Some(CLIENT_TIMEOUT));
            let chunk = [b'h'; 200];
            let mut first = true;
            while c.write_all(&chunk).is_ok() && !stop.load(SeqCst) {
                if std::mem::take(&mut first) {
                    ready.fetch_add(1, SeqCst);
                }
                // The pace of a busy client, not a synchronisation.
                thread::sleep(Duration::from_millis(10));
            }
        }));
    }
    eventually("held clients sending", || ready.load(SeqCst) == held);
    eventually("some churn", || served.load(SeqCst) >= 20);
    let (status, _) = server.terminate();
    stop.store(true, SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    assert!(status.success(), "{model}: exit status {status}");
    let s = summary(&log.join());
    assert_eq!(closed(&s), s["accepted"], "{model}: counted twice: {s:?}");
    let served = served.load(SeqCst);
    assert!(s["accepted"] >= served, "{model}: {s:?} < {served}");
    assert!(s["closed_eof"] + churners >= served, "{model}: {s:?}");
    assert!(held == 0 || s["closed_shutdown"] > 0, "{model}: {s:?}");
}

/// One client sending 1-byte writes for a second: its chunk lines stay
/// within the burst plus the rate, the rest are suppressed, counted and
/// reported, and every byte is still counted in `bytes_in`. A person
/// typing a few lines meanwhile has every line logged.
fn flood_is_bounded(model: &str) {
    // A burst below the default, so that the flood overruns it even when
    // a loaded machine makes the server read it in few large chunks; the
    // person's five lines still fit.
    let burst = LOG_BURST.to_string();
    let args = ["--mode", "log", "--log-burst", &burst];
    let mut server = Server::start(model, &args);
    let log = Reader::spawn(server.take_stderr(), Pace::Fast);
    let addr = server.addr;
    let flood = thread::spawn(move || flood(addr, Duration::from_secs(1)));
    // The iterative model serves one client at a time: the person waits.
    if model == "iterative" {
        log.wait_for(|l| l.contains(" accepted "));
    }
    let mut person = client(addr);
    let me = person.local_addr().expect("local address");
    let mut typed = 0;
    for i in 0..5 {
        let line = format!("line {i}\n");
        person.write_all(line.as_bytes()).expect("type");
        typed += line.len();
        let logged = format!("{me} sent 7 bytes: line {i}\\n");
        log.wait_for(|l| l.ends_with(&logged));
    }
    close_and_wait(person);
    let (flooder, sent, took) = flood.join().expect("flood thread");
    log.wait_for(|l| l.contains(&format!("{flooder} closed: ")));
    let (status, _) = server.terminate();
    assert!(status.success(), "{model}: exit status {status}");
    let text = log.join();
    let s = summary(&text);
    assert_eq!(s["bytes_in"], (sent + typed) as u64, "{model}: {s:?}");
    assert!(s["log_suppressed"] > 0, "{model}: nothing suppressed: {s:?}");
    let lines = chunk_lines(&text, flooder);
    let bound = (LOG_BURST + LOG_RATE * took.as_secs_f64()).ceil() as usize;
    assert!(lines <= bound + 1, "{model}: {lines} lines > {bound} ({took:?})");
    assert_eq!(suppressed_reports(&text, me), 0, "{model}: person muted");
    let reported: u64 = reports(&text).values().sum();
    assert_eq!(reported, s["log_suppressed"], "{model}: reports vs {s:?}");
}

/// With per-connection limits out of the way, three flooding clients
/// together log no more than the total rate allows (in the process
/// model, across three children).
fn total_rate_holds(model: &str) {
    let args = [
        "--mode",
        "log",
        "--log-rate",
        "100000",
        "--log-burst",
        "100000",
        "--log-total-rate",
        // Low, so that the floods overrun it even when a loaded machine
        // makes the server read their bytes in a few large chunks.
        "5",
    ];
    let mut server = Server::start(model, &args);
    let log = Reader::spawn(server.take_stderr(), Pace::Fast);
    let addr = server.addr;
    let start = Instant::now();
    let floods: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || flood(addr, Duration::from_millis(500)))
        })
        .collect();
    let mut flooders = Vec::new();
    for f in floods {
        let (peer, _, _) = f.join().expect("flood thread");
        log.wait_for(|l| l.contains(&format!("{peer} closed: ")));
        flooders.push(peer);
    }
    let took = start.elapsed();
    let (status, _) = server.terminate();
    assert!(status.success(), "{model}: exit status {status}");
    let text = log.join();
    let s = summary(&text);
    let lines: usize = flooders.iter().map(|&p| chunk_lines(&text, p)).sum();
    // A one-second burst at the start, then the rate.
    let bound = (5.0 + 5.0 * took.as_secs_f64()).ceil() as usize;
    assert!(lines <= bound + 1, "{model}: {lines} lines > {bound} ({took:?})");
    assert!(s["log_suppressed"] > 0, "{model}: {s:?}");
    let reported: u64 = reports(&text).values().sum();
    assert_eq!(reported, s["log_suppressed"], "{model}: reports vs {s:?}");
}
