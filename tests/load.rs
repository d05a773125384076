//! `readyloop load` against the real server binary in echo mode: every
//! pattern completes with no error, and bad flags or an absent server are
//! reported the way the CLI promises.

mod common;

use std::process::{Command, Output};

use common::{binary, ServerProcess};

/// Runs `readyloop load --json ARGS…` and returns its output.
fn load(args: &[&str]) -> Output {
    Command::new(binary())
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .expect("run readyloop load")
}

/// Pulls a number out of the flat JSON object the generator prints.
fn field(json: &str, key: &str) -> f64 {
    let needle = format!("\"{key}\":");
    let rest = json
        .split(&needle)
        .nth(1)
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let value: String =
        rest.chars().take_while(|c| !matches!(c, ',' | '}')).collect();
    value.parse().unwrap_or_else(|_| panic!("{key}={value} in {json}"))
}

/// Runs one pattern for `secs` against a fresh echo server and returns
/// the JSON line, after checking it reports no error at all.
fn run_pattern(pattern: &str, connections: &str, extra: &[&str]) -> String {
    let server =
        ServerProcess::start(&["--mode", "echo", "--log-level", "warn"]);
    let addr = server.addr.to_string();
    let mut args = vec!["--addr", &addr, "--pattern", pattern];
    args.extend(["--connections", connections, "--duration", "0.7"]);
    args.extend(extra);
    let out = load(&args);
    let json = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert_eq!(json.lines().count(), 1, "one JSON object: {json}");
    assert_eq!(field(&json, "errors"), 0.0, "{json} {stderr}");
    json
}

/// Pingpong completes round trips on every connection, with latencies.
#[test]
fn pingpong_round_trips_are_echoed_and_timed() {
    let json = run_pattern("pingpong", "20", &["--size", "100"]);
    assert!(field(&json, "messages") > 0.0, "{json}");
    assert_eq!(field(&json, "held"), 20.0, "{json}");
    assert!(field(&json, "p99_us") > 0.0, "{json}");
    // Fairness: no connection was starved.
    assert!(field(&json, "rounds_min") > 0.0, "{json}");
    assert!(field(&json, "rounds_max") >= field(&json, "rounds_min"));
}

/// Stream moves verified bytes in both directions at once.
#[test]
fn stream_moves_verified_bytes() {
    let json = run_pattern("stream", "4", &["--size", "16384"]);
    assert!(field(&json, "mb_per_s") > 0.0, "{json}");
    assert!(field(&json, "messages") > 0.0, "{json}");
}

/// Idle holds every connection it opened, after one echoed byte each,
/// and says so on stderr when all are held.
#[test]
fn idle_holds_every_connection() {
    let json = run_pattern("idle", "200", &[]);
    assert_eq!(field(&json, "held"), 200.0, "{json}");
    assert_eq!(field(&json, "messages"), 200.0, "{json}");
}

/// Connect opens, echoes and closes connections again and again.
#[test]
fn connect_cycles_connections() {
    let json = run_pattern("connect", "5", &["--size", "32"]);
    assert!(field(&json, "messages") > 5.0, "{json}");
}

/// Connections spread over loopback source addresses still work.
#[test]
fn sources_and_threads_spread_the_load() {
    let json = run_pattern(
        "pingpong",
        "30",
        &["--source", "127.0.0.1,127.0.0.2,127.0.0.3", "--threads", "2"],
    );
    assert_eq!(field(&json, "held"), 30.0, "{json}");
    assert!(field(&json, "messages") > 0.0, "{json}");
}

/// `--messages N` stops after about N messages.
#[test]
fn a_message_count_ends_the_run() {
    let server =
        ServerProcess::start(&["--mode", "echo", "--log-level", "warn"]);
    let addr = server.addr.to_string();
    let out = load(&["--addr", &addr, "-c", "4", "--messages", "1000"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let messages = field(&json, "messages");
    assert!((1000.0..1010.0).contains(&messages), "{json}");
}

/// Nothing listening: the run still ends, and counts the failed connects.
#[test]
fn an_absent_server_is_counted_not_fatal() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let out = load(&["--addr", &addr, "-c", "3", "--duration", "5"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(field(&json, "connect_errors"), 3.0, "{json}");
    assert!(field(&json, "elapsed_s") < 4.0, "ends when all failed: {json}");
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
    let server = ServerProcess::start(&[
        "--mode",
        "echo",
        "--log-level",
        "error",
        "--max-connections",
        "30",
    ]);
    let addr = server.addr.to_string();
    let args = ["--addr", &addr, "--pattern", "idle", "-c", "40"];
    let out = load(&[&args[..], &["--duration", "0.2"]].concat());
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(field(&json, "held"), 30.0, "{json}");
    assert_eq!(field(&json, "io_errors"), 10.0, "{json}");
}
