//! `readyloop load` against the real server binary in echo mode: every
//! pattern completes with no error, its JSON reads into [`LoadReport`],
//! and bad flags or an absent server are reported the way the CLI
//! promises.

use std::process::{Command, Output};

use crate::support::load_json::LoadReport;
use crate::support::server::binary;
use crate::support::{stop, ServerProcess};

/// Runs `readyloop load --json ARGS…` and returns its output.
fn load(args: &[&str]) -> Output {
    Command::new(binary())
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .expect("run readyloop load")
}

/// A successful run's report.
fn report(out: &Output) -> LoadReport {
    report_exiting(out, 0)
}

/// The report of a run that exited with `code` (3: it completed with
/// errors).
fn report_exiting(out: &Output, code: i32) -> LoadReport {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    LoadReport::parse(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("{e}; stderr: {stderr}"))
}

/// An echo server that logs only warnings.
fn echo_server(extra: &[&str]) -> ServerProcess {
    let args = [&["--mode", "echo", "--log-level", "warn"][..], extra];
    ServerProcess::start(&args.concat())
}

/// Runs one pattern for 0.7 s against a fresh echo server and returns
/// its report, after checking it reports no error at all.
fn run_pattern(
    pattern: &str,
    connections: &str,
    extra: &[&str],
) -> LoadReport {
    let server = echo_server(&[]);
    let addr = server.addr.to_string();
    let mut args = vec!["--addr", &addr, "--pattern", pattern];
    args.extend(["--connections", connections, "--duration", "0.7"]);
    args.extend(extra);
    let r = report(&load(&args));
    assert_eq!(r.errors, 0, "{r:?}");
    r
}

/// The hand-written JSON reads into the typed report with values that
/// agree with each other: the pattern and flags as given, rates that
/// match counts over the elapsed time, ordered percentiles, errors the
/// sum of their kinds; a pattern without latencies gives `null`s.
#[test]
fn the_json_reads_into_the_typed_report() {
    let r = run_pattern("pingpong", "8", &["--size", "100"]);
    assert_eq!(
        (r.pattern.as_str(), r.connections, r.size),
        ("pingpong", 8, 100)
    );
    assert!(r.elapsed_s > 0.0 && r.messages > 0, "{r:?}");
    let rate = r.messages as f64 / r.elapsed_s;
    assert!((r.messages_per_s - rate).abs() <= rate * 0.01 + 0.1, "{r:?}");
    assert!(r.bytes >= r.messages * r.size, "{r:?}");
    let lat = [r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us];
    let lat: Vec<f64> = lat.iter().map(|l| l.expect("latency")).collect();
    assert!(lat[0] > 0.0 && lat.windows(2).all(|w| w[0] <= w[1]), "{r:?}");
    assert!(r.rounds_min <= r.rounds_max && r.rounds_min > Some(0));
    let kinds = r.connect_errors + r.io_errors + r.mismatches + r.stalls;
    assert_eq!(r.errors, kinds, "{r:?}");
    let idle = run_pattern("idle", "3", &[]);
    assert_eq!((idle.p50_us, idle.rounds_min), (None, None), "{idle:?}");
}

/// Pingpong completes round trips on every connection, with latencies,
/// and starves none.
#[test]
fn pingpong_round_trips_are_echoed_and_timed() {
    let r = run_pattern("pingpong", "20", &["--size", "100"]);
    assert!(r.messages > 0, "{r:?}");
    assert_eq!(r.held, 20, "{r:?}");
    assert!(r.p99_us.is_some_and(|p| p > 0.0), "{r:?}");
    assert!(r.rounds_min.is_some_and(|n| n > 0), "{r:?}");
    assert!(r.rounds_max >= r.rounds_min, "{r:?}");
}

/// Stream moves verified bytes in both directions at once.
#[test]
fn stream_moves_verified_bytes() {
    let r = run_pattern("stream", "4", &["--size", "16384"]);
    assert!(r.mb_per_s > 0.0 && r.messages > 0, "{r:?}");
}

/// Idle holds every connection it opened, after one echoed byte each.
#[test]
fn idle_holds_every_connection() {
    let r = run_pattern("idle", "200", &[]);
    assert_eq!((r.held, r.messages), (200, 200), "{r:?}");
}

/// Connect opens, echoes and closes connections again and again.
#[test]
fn connect_cycles_connections() {
    let r = run_pattern("connect", "5", &["--size", "32"]);
    assert!(r.messages > 5, "{r:?}");
}

/// Connections spread over loopback source addresses still work.
#[test]
fn sources_and_threads_spread_the_load() {
    let r = run_pattern(
        "pingpong",
        "30",
        &["--source", "127.0.0.1,127.0.0.2,127.0.0.3", "--threads", "2"],
    );
    assert_eq!(r.held, 30, "{r:?}");
    assert!(r.messages > 0, "{r:?}");
}

/// `--messages N` stops after about N messages.
#[test]
fn a_message_count_ends_the_run() {
    let server = echo_server(&[]);
    let addr = server.addr.to_string();
    let r = report(&load(&["--addr", &addr, "-c", "4", "--messages", "1000"]));
    assert!((1000..1010).contains(&r.messages), "{r:?}");
}

/// Nothing listening: the run ends as soon as every connect has failed
/// (well before its 5 s duration), and counts the failed connects.
#[test]
fn an_absent_server_is_counted_not_fatal() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let out = load(&["--addr", &addr, "-c", "3", "--duration", "5"]);
    let r = report_exiting(&out, 3);
    assert_eq!(r.connect_errors, 3, "{r:?}");
    // The generator's own clock: it stopped early, not at its duration.
    assert!(r.elapsed_s < 4.0, "ends when all failed: {r:?}");
}

/// Invalid flags exit 2 with a usage error; impossible resources exit 1
/// with a one-line `error:` naming what to raise.
#[test]
fn bad_input_exits_with_the_promised_codes() {
    for bad in [
        &["--pattern", "nope"][..],
        &["--connections", "0"],
        &["--size", "-1"],
        &["--pattern", "idle", "--messages", "3"],
        &["--source", "not-an-ip"],
    ] {
        let out = load(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(out.stdout.is_empty());
    }
    let out = load(&["--addr", "127.0.0.1:9", "--connections", "5000000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("--source"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// Idle reports how many connections the server really held: those over
/// its `--max-connections` are closed at once and counted as errors.
#[test]
fn idle_counts_only_the_connections_the_server_kept() {
    let server = echo_server(&["--max-connections", "30"]);
    let addr = server.addr.to_string();
    let args = ["--addr", &addr, "--pattern", "idle", "-c", "40"];
    let out = load(&[&args[..], &["--duration", "0.2"]].concat());
    let r = report_exiting(&out, 3);
    assert_eq!((r.held, r.io_errors), (30, 10), "{r:?}");
}

/// A clean run ends politely: each connection with the client's FIN and
/// the server's, so the server counts every one `eof` and none `reset`
/// (closing with echo still unread would send RSTs), for each pattern
/// that keeps connections open to the end.
#[test]
fn a_clean_run_ends_every_connection_with_a_fin() {
    for (pattern, size) in
        [("pingpong", "64"), ("stream", "16384"), ("idle", "1")]
    {
        let server = echo_server(&[]);
        let addr = server.addr.to_string();
        let args = ["--addr", &addr, "--pattern", pattern, "--size", size];
        let r = report(&load(
            &[&args[..], &["-c", "50", "--duration", "0.5"]].concat(),
        ));
        assert_eq!(r.errors, 0, "{pattern}: {r:?}");
        let (code, s) = server.terminate();
        assert_eq!(code, 0);
        assert_eq!(s.accepted, 50, "{pattern}: {s}");
        assert_eq!((s.closed_eof, s.closed_reset), (50, 0), "{pattern}: {s}");
    }
}

/// "held" is the idle pattern's figure: the text report and the progress
/// lines (the first comes after 3 s) show it there and nowhere else. The
/// three patterns run at once, each against its own server.
#[test]
fn held_is_shown_for_the_idle_pattern_only() {
    let runs: Vec<_> =
        [("pingpong", false), ("stream", false), ("idle", true)]
            .into_iter()
            .map(|(pattern, shown)| {
                std::thread::spawn(move || {
                    let server = echo_server(&[]);
                    let addr = server.addr.to_string();
                    let out = std::process::Command::new(binary())
                        .args(["load", "--addr", &addr, "--pattern", pattern])
                        .args(["-c", "4", "--duration", "3.6"])
                        .output()
                        .expect("run readyloop load");
                    stop(server);
                    (pattern, shown, out)
                })
            })
            .collect();
    for run in runs {
        let (pattern, shown, out) = run.join().expect("load run");
        let text = String::from_utf8_lossy(&out.stdout);
        let progress = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{progress}");
        let row = text.lines().any(|l| l.starts_with("held "));
        assert_eq!(row, shown, "{pattern}: {text}");
        let lines: Vec<&str> = progress
            .lines()
            .filter(|l| l.starts_with("load: ") && l.contains(" s, "))
            .collect();
        assert!(!lines.is_empty(), "{pattern}: no progress line: {progress}");
        for line in lines {
            assert_eq!(line.contains(" held"), shown, "{pattern}: {line}");
        }
    }
}
