//! `/metrics` says all the summary says, and what the Prometheus
//! process collector says: the log counters equal the summary's
//! `log_dropped` and `log_suppressed` after a flood that drops and
//! suppresses lines, and the process series agree with /proc.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};

use readyloop::Model;

use crate::support::scrape::{
    metrics_addr, scrape, scrape_until, serve_metrics,
};
use crate::support::*;

/// Clients of the flood: with an accept and a close line each (some
/// 90 bytes together with the chunk line) they overrun the server's
/// 64 KiB of log buffer and the small socket buffer behind it.
const FLOOD: u64 = 2000;

/// A stderr reader that a test can stop: while the valve is shut, a
/// read waits, so the server's stderr fills as behind a stalled
/// journal.
struct Valve {
    stream: UnixStream,
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Read for Valve {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (lock, turned) = &*self.open;
        let mut open = lock.lock().expect("valve");
        while !*open {
            open = turned.wait(open).expect("valve");
        }
        drop(open);
        self.stream.read(buf)
    }
}

fn turn(valve: &Arc<(Mutex<bool>, Condvar)>, open: bool) {
    *valve.0.lock().expect("valve") = open;
    valve.1.notify_all();
}

per_model!(dropped_and_suppressed_lines_are_the_summarys);

/// In log mode with a total log rate of one line a second, a flood of
/// clients while stderr is stalled: most chunk lines are suppressed and
/// most other lines dropped. The scrape shows both as they happen; once
/// stderr reads again and the sink has said what it dropped, a scrape's
/// figures are the summary's exactly. (The process model's children
/// count their drops as they exit, like the rest of their counters: all
/// have exited once every flood client is counted closed.)
fn dropped_and_suppressed_lines_are_the_summarys(model: Model) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    // A small socket buffer: the sink's 64 KiB fill soon.
    socket2::SockRef::from(&theirs)
        .set_send_buffer_size(4096)
        .expect("SO_SNDBUF");
    let open = Arc::new((Mutex::new(true), Condvar::new()));
    let valve = Valve { stream: ours, open: Arc::clone(&open) };
    let mut cmd = ServerProcess::command_at(
        "127.0.0.1:0",
        &["--model", model.name(), "--mode", "log"],
    );
    cmd.args(["--log-total-rate", "1", "--metrics-addr", "127.0.0.1:0"]);
    cmd.env_remove("JOURNAL_STREAM");
    cmd.stderr(Stdio::from(OwnedFd::from(theirs)));
    let mut server = ServerProcess::start_command_reading(cmd, valve);
    let metrics = metrics_addr(&mut server);

    turn(&open, false);
    for _ in 0..FLOOD {
        let mut c = connect(server.addr);
        std::io::Write::write_all(&mut c, b"flood\n").expect("write");
        close_and_wait(c);
    }
    let stalled = scrape_until(metrics, "every flood client closed", |s| {
        s.summary().closed() == FLOOD
    });
    let s = stalled.summary();
    assert!(s.log_dropped > 0, "{model}: {}", stalled.text);
    assert!(s.log_suppressed > FLOOD / 2, "{model}: {}", stalled.text);

    turn(&open, true);
    server.wait_for_line("log sink was full: ");
    let drained = scrape(metrics).summary();
    assert!(drained.log_dropped >= s.log_dropped, "{model}");
    assert_eq!(drained.log_suppressed, s.log_suppressed, "{model}");
    let summary = stop(server);
    assert_eq!(
        (summary.log_dropped, summary.log_suppressed),
        (drained.log_dropped, drained.log_suppressed),
        "{model}: the summary against the last scrape"
    );
}

/// The soft RLIMIT_NOFILE of a process, from /proc/PID/limits.
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .expect("read /proc/PID/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let soft = line["Max open files".len()..].split_whitespace().next();
    match soft {
        Some("unlimited") => u64::MAX,
        Some(n) => n.parse().expect("a number"),
        None => panic!("no soft limit in {line:?}"),
    }
}

/// Seconds since the epoch, now.
fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// The process collector's series, with its names, types and help
/// texts: `process_max_fds` is the server's soft RLIMIT_NOFILE (which
/// it raised to the hard limit), `process_start_time_seconds` when the
/// test started it (to the second: /proc's boot time is whole seconds),
/// and `process_cpu_seconds_total` grows above 0 under load and never
/// goes back.
#[test]
fn the_process_series_agree_with_proc() {
    let started = epoch_now();
    let (server, metrics) = serve_metrics(Model::Mio, &["--mode", "echo"]);
    let first = scrape(metrics);
    for (name, kind, help) in [
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        ),
        (
            "readyloop_log_lines_dropped_total",
            "counter",
            "Log lines dropped because stderr did not take them in time \
             (the summary's log_dropped).",
        ),
    ] {
        let lines =
            [format!("# HELP {name} {help}"), format!("# TYPE {name} {kind}")];
        for line in lines {
            assert!(first.text.lines().any(|l| l == line), "{line}");
        }
    }
    assert_eq!(first.get("process_max_fds"), soft_nofile(server.pid()));
    let start = first.float("process_start_time_seconds");
    assert!(
        (start - started).abs() < 3.0,
        "started at {start}, the test started it at {started}"
    );

    let mut cpu = first.float("process_cpu_seconds_total");
    assert!(cpu >= 0.0, "{cpu}");
    let mut round = 0;
    eventually("the server used some CPU", || {
        echo_and_close(server.addr, &pattern(round, 1 << 20));
        round += 1;
        let now = scrape(metrics).float("process_cpu_seconds_total");
        assert!(now >= cpu, "CPU seconds went back from {cpu} to {now}");
        cpu = now;
        now > 0.0
    });
    let later = scrape(metrics);
    assert!(later.float("process_cpu_seconds_total") >= cpu);
    assert_eq!(later.float("process_start_time_seconds"), start);
    stop(server);
}

per_model!(loops: output_memory_is_what_clients_have_not_taken);

/// Output held for a client that does not read: its echo, up to the
/// 64 KiB cap.
const HELD_BY_NON_READER: u64 = 60 * 1024;

/// `readyloop_output_memory_bytes` shows the output a non-reading client
/// holds, and comes back to 0 once every client is gone, after clients
/// whose output grew while a send waited: the accounting the
/// `--max-output-memory` budget and the uring heap trim rely on. (The
/// uring model once forgot, at the send's completion, the old buffer a
/// grown one had retired under it: 2 KiB per growth stayed counted with
/// no client left, the heap was never trimmed again, and the budget
/// shrank for good: 16 KiB here before the fix.)
fn output_memory_is_what_clients_have_not_taken(model: Model) {
    let args = ["--mode", "echo", "--send-buffer", "4K"];
    let (mut server, metrics) = serve_metrics(model, &args);
    let idle = scrape(metrics);
    assert_eq!(idle.get("readyloop_output_memory_bytes"), 0, "{model}");

    let mut non_reader = TcpStream::connect(server.addr).expect("connect");
    let handle = non_reader.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        // Stops when the test shuts the socket down: until then it
        // blocks once the server stops reading it (both directions
        // full).
        let chunk = [7u8; 16 * 1024];
        while non_reader.write_all(&chunk).is_ok() {}
    });
    scrape_until(metrics, "the non-reader's output held", |s| {
        s.get("readyloop_output_memory_bytes") >= HELD_BY_NON_READER
    });

    for _ in 0..8 {
        grows_while_a_send_waits(server.addr);
    }
    handle.shutdown(Shutdown::Both).expect("shutdown");
    writer.join().expect("writer");
    drop(handle);
    scrape_until(metrics, "every client gone", |s| s.open() == 0);
    scrape_until(metrics, "no output held with no client left", |s| {
        s.get("readyloop_output_memory_bytes") == 0
    });
    let (code, _) = server.finish();
    assert_eq!(code, 0, "{model}: exit code");
}

/// A client that sends 1,000-byte pieces without reading until its
/// echo fills both socket buffers (its own receive buffer is 4 KiB, the
/// server's send buffer 4 KiB): the server's send of the next piece
/// waits, and the pieces after it grow the output under that send. Then
/// it reads the whole echo and closes.
fn grows_while_a_send_waits(addr: std::net::SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let sent: Vec<u8> =
        (0..40u8).flat_map(|k| std::iter::repeat(k).take(1000)).collect();
    for piece in sent.chunks(1000) {
        stream.write_all(piece).expect("write");
        std::thread::sleep(Duration::from_millis(2));
    }
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("read the echo");
    assert!(got == sent, "the echo differs from what was sent");
}
