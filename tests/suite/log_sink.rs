//! Logging never blocks serving or stopping, the summary stays exact
//! whatever stderr does, and a client cannot flood the log: for every
//! model, against the real binary with its stderr a pipe this test holds.
//!
//! Standalone on purpose (std, libc and the binary only), so it can move
//! into a larger test binary as a module.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use readyloop::Model;

use crate::support::{eventually, PATIENCE};

/// How long a client waits for one reply: a server stalled on its log
/// fails the test instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The stop window (2 s) plus the 1 s the summary may wait for stderr.
const EXIT_BOUND: Duration = Duration::from_secs(3);
/// The defaults of `--log-rate` and `--log-burst`.
const LOG_RATE: f64 = 20.0;
const LOG_BURST: f64 = 200.0;

per_model!(
    never_read_stderr_stalls_neither_serving_nor_stopping,
    a_drained_sink_reports_and_counts_what_it_dropped,
    a_slow_stderr_reader_leaves_the_summary_exact,
    a_log_flood_is_bounded_and_a_person_is_not,
    the_total_log_rate_holds_across_connections,
);

/// Enough connections that their log lines (about 120 bytes each) overrun
/// the pipe (64 KiB) and the server's own buffer (64 KiB) several times.
fn connections(model: Model) -> usize {
    match model {
        Model::Mio => 10_000,
        _ => 2_000,
    }
}

/// See [`never_read_stderr`].
fn never_read_stderr_stalls_neither_serving_nor_stopping(model: Model) {
    never_read_stderr(model.name(), connections(model));
}

/// See [`drained_sink_reports_drops`].
fn a_drained_sink_reports_and_counts_what_it_dropped(model: Model) {
    drained_sink_reports_drops(model.name(), connections(model));
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
/// ends the server (exit 0) within the stop window plus 1 s although its
/// last lines, the summary among them, cannot be written. What the pipe
/// does hold is whole lines.
fn never_read_stderr(model: &str, conns: usize) {
    let mut server = Server::start(model, &["--mode", "echo"]);
    for i in 0..conns {
        echo_and_close(server.addr, i);
    }
    // One connection still open when the stop begins.
    let mut held = client(server.addr);
    echo(&mut held, b"still here");
    let (status, took) = server.terminate();
    assert!(status.success(), "{model}: exit status {status}");
    assert!(took <= EXIT_BOUND, "{model}: took {took:?} to exit");
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
fn drained_sink_reports_drops(model: &str, conns: usize) {
    let mut server = Server::start(model, &["--mode", "echo"]);
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
    let mut server = Server::start(model, &["--mode", "log"]);
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
        "100",
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
    let bound = (100.0 + 100.0 * took.as_secs_f64()).ceil() as usize;
    assert!(lines <= bound + 1, "{model}: {lines} lines > {bound} ({took:?})");
    assert!(s["log_suppressed"] > 0, "{model}: {s:?}");
    let reported: u64 = reports(&text).values().sum();
    assert_eq!(reported, s["log_suppressed"], "{model}: reports vs {s:?}");
}

// ---- the server ----------------------------------------------------

/// The real binary running `serve` on a free loopback port, its stderr a
/// pipe this test reads only when it chooses to.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Option<ChildStderr>,
}

impl Server {
    /// Starts `readyloop serve --model MODEL ARGS…` and reads its first
    /// line (`listening on ADDR …`) and nothing more.
    fn start(model: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_readyloop"))
            .args(["serve", "--addr", "127.0.0.1:0", "--model", model])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn readyloop");
        let mut stderr = child.stderr.take().expect("stderr");
        let mut line = Vec::new();
        let mut byte = [0u8];
        while byte != *b"\n" {
            match stderr.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                _ => panic!("no first line: {line:?}"),
            }
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, addr, stderr: Some(stderr) }
    }

    fn take_stderr(&mut self) -> ChildStderr {
        self.stderr.take().expect("stderr already taken")
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the status
    /// and how long the exit took.
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not
        // reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, start.elapsed());
            }
            assert!(start.elapsed() < PATIENCE, "server did not exit");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything left in the stderr pipe, after the exit.
    fn read_all_stderr(&mut self) -> String {
        let mut all = Vec::new();
        self.take_stderr().read_to_end(&mut all).expect("read stderr");
        String::from_utf8_lossy(&all).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a [`Reader`] reads stderr.
#[derive(Clone, Copy)]
enum Pace {
    /// As fast as lines come.
    Fast,
    /// A log shipper that keeps falling behind: 1 KiB, then a pause
    /// (about 20 KB/s).
    Slow,
}

/// A thread reading the server's stderr until EOF, keeping every line.
struct Reader {
    text: Arc<Mutex<String>>,
    thread: thread::JoinHandle<()>,
}

impl Reader {
    fn spawn(mut stderr: ChildStderr, pace: Pace) -> Reader {
        let text = Arc::new(Mutex::new(String::new()));
        let shared = Arc::clone(&text);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let want = match pace {
                Pace::Fast => buf.len(),
                Pace::Slow => 1024,
            };
            while let Ok(n @ 1..) = stderr.read(&mut buf[..want]) {
                let chunk = String::from_utf8_lossy(&buf[..n]);
                shared.lock().unwrap().push_str(&chunk);
                if let Pace::Slow = pace {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Reader { text, thread }
    }

    /// Waits (bounded) for a whole line matching `found`.
    fn wait_for(&self, found: impl Fn(&str) -> bool) -> String {
        let mut line = None;
        eventually("a log line", || {
            let text = self.text.lock().unwrap();
            let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            line = whole.lines().find(|l| found(l)).map(str::to_owned);
            line.is_some()
        });
        line.unwrap_or_default()
    }

    /// Everything read, once the pipe is closed (the server exited).
    fn join(self) -> String {
        self.thread.join().expect("reader thread");
        Arc::try_unwrap(self.text).unwrap().into_inner().unwrap()
    }
}

// ---- clients -------------------------------------------------------

fn client(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    c
}

fn echo(c: &mut TcpStream, data: &[u8]) {
    c.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    c.read_exact(&mut back).expect("echo (is the server stalled?)");
    assert_eq!(back, data);
}

/// A fresh connection: 8 bytes echoed, then a clean close both ways.
fn echo_and_close(addr: SocketAddr, i: usize) {
    try_echo_and_close(addr, i)
        .unwrap_or_else(|e| panic!("connection {i}: {e} (server stalled?)"));
}

fn try_echo_and_close(addr: SocketAddr, i: usize) -> io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let data = (i as u64).to_le_bytes();
    c.write_all(&data)?;
    let mut back = [0; 8];
    c.read_exact(&mut back)?;
    if back != data {
        return Err(io::Error::other("wrong echo"));
    }
    c.shutdown(Shutdown::Write)?;
    match c.read(&mut back)? {
        0 => Ok(()),
        _ => Err(io::Error::other("bytes after the echo")),
    }
}

/// A fresh connection: sends `data`, closes its side and waits for the
/// server's close.
fn send_and_close(addr: SocketAddr, data: &[u8]) -> io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    c.write_all(data)?;
    c.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)?;
    Ok(())
}

/// Closes the write side and waits for the server's close.
fn close_and_wait(mut c: TcpStream) {
    c.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("clean close");
}

/// Sends 1-byte writes for `length`, then closes and waits for the
/// server's close. Returns the client's address, the bytes sent and the
/// time from connect to the server's close (every line the server logged
/// for it falls inside that time).
fn flood(addr: SocketAddr, length: Duration) -> (SocketAddr, usize, Duration) {
    let start = Instant::now();
    let mut c = client(addr);
    c.set_nodelay(true).unwrap();
    let me = c.local_addr().unwrap();
    let mut sent = 0;
    while start.elapsed() < length {
        c.write_all(b"x").expect("flood write");
        sent += 1;
    }
    close_and_wait(c);
    (me, sent, start.elapsed())
}

// ---- reading the log -----------------------------------------------

fn is_log_line(line: &str) -> bool {
    ["ERROR [", "WARN  [", "INFO  [", "DEBUG [", "TRACE ["]
        .iter()
        .any(|level| line.starts_with(level))
}

/// The fields of the last `summary` line in `log`.
fn summary(log: &str) -> HashMap<String, u64> {
    let line = log
        .lines()
        .rfind(|l| l.starts_with("INFO  [readyloop::status] summary "))
        .unwrap_or_else(|| panic!("no summary in:\n{}", tail(log)));
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("a number")))
        .collect()
}

fn closed(s: &HashMap<String, u64>) -> u64 {
    ["eof", "reset", "error", "idle", "shutdown"]
        .iter()
        .map(|r| s[&format!("closed_{r}")])
        .sum()
}

/// Chunk lines logged for `peer`.
fn chunk_lines(log: &str, peer: SocketAddr) -> usize {
    let start = format!("INFO  [readyloop::journal] {peer} sent ");
    log.lines().filter(|l| l.starts_with(&start)).count()
}

/// Chunk lines reported suppressed for `peer`.
fn suppressed_reports(log: &str, peer: SocketAddr) -> u64 {
    reports(log).get(&peer).copied().unwrap_or(0)
}

/// Per peer, the sum of its `PEER: N chunk lines suppressed` reports.
fn reports(log: &str) -> HashMap<SocketAddr, u64> {
    let mut all = HashMap::new();
    for line in log.lines().filter(|l| l.starts_with("INFO  [")) {
        let Some(rest) =
            line.strip_suffix(" chunk lines suppressed (log-rate)")
        else {
            continue;
        };
        let Some((peer, n)) = rest.rsplit_once(' ').and_then(|(head, n)| {
            let peer = head.rsplit(' ').next()?.strip_suffix(':')?;
            Some((peer.parse().ok()?, n.parse::<u64>().ok()?))
        }) else {
            continue;
        };
        *all.entry(peer).or_insert(0) += n;
    }
    all
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
