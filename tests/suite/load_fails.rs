//! `readyloop load` fails loudly: against a server that does not echo,
//! drops connections or never answers, the run exits 3 with its report;
//! durations the clock cannot hold are usage errors; a closed stdout or
//! stderr never makes it panic. Real processes over loopback; std only.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::support::load_json::LoadReport;
use crate::support::server::binary;
use crate::support::ServerProcess;

/// Longest any one process of these tests may run before the test fails
/// (the runs themselves take at most 2 s).
const LIMIT: Duration = Duration::from_secs(30);

/// A listener that accepts connections and never reads or writes them.
fn silent_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    addr
}

/// What a finished `readyloop load` did.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// `readyloop load ARGS…` with its output captured, ended within
/// [`LIMIT`].
fn load(args: &[&str]) -> Run {
    let child = Command::new(binary())
        .arg("load")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn readyloop load");
    finish(child)
}

/// Waits for `child` at most [`LIMIT`]; kills it and fails after that.
fn finish(child: Child) -> Run {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("wait for readyloop load"),
        Err(_) => {
            let _ =
                Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("readyloop load still running after {LIMIT:?}");
        }
    };
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `--json` report on `stdout`, read with serde.
fn report(stdout: &str) -> LoadReport {
    LoadReport::parse(stdout).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `readyloop load --json` with a 0.5 s stall timeout against
/// `addr`, asserts it failed (exit 3, the JSON report still on stdout,
/// one stderr line saying why) and returns the run and its JSON.
fn failing_run(addr: SocketAddr, extra: &[&str]) -> (Run, String) {
    let addr = addr.to_string();
    let mut args = vec!["--addr", &addr, "--stall-timeout", "0.5"];
    args.extend(["--json", "-q"]);
    args.extend(extra);
    let run = load(&args);
    assert_eq!(run.code(), Some(3), "stderr: {}", run.stderr);
    let json = run.stdout.trim().to_string();
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    assert!(run.stderr.contains("load: failed: "), "{}", run.stderr);
    (run, json)
}

/// A server in log mode reads and never echoes: pingpong exits 3,
/// counting stalls and no message, instead of "errors 0" and exit 0.
#[test]
fn a_server_that_never_echoes_fails_the_run() {
    let server = ServerProcess::start(&["--log-level", "warn"]);
    let (run, json) =
        failing_run(server.addr, &["-c", "3", "--duration", "2"]);
    assert_eq!(report(&json).messages, 0, "{json}");
    assert_eq!(report(&json).stalls, 3, "{json}");
    assert_eq!(report(&json).errors, 3, "{json}");
    assert!(run.stderr.contains("no message completed"), "{}", run.stderr);
    // It names the likely cause: the server's mode.
    assert!(run.stderr.contains("--mode echo"), "{}", run.stderr);
}

/// A listener that accepts and is silent: every connection stalls, and
/// the run ends once the last has, before its duration is up.
#[test]
fn a_silent_listener_counts_stalls() {
    let (run, json) =
        failing_run(silent_listener(), &["-c", "4", "--duration", "2"]);
    assert_eq!(report(&json).stalls, 4, "{json}");
    assert_eq!(report(&json).held, 0, "{json}");
    assert!(report(&json).elapsed_s < 2.0, "{json}");
    assert!(run.stderr.contains("--stall-timeout"), "{}", run.stderr);
}

/// The idle pattern against a silent listener: nothing is held, every
/// connection stalls, exit 3 (it used to wait 30 s and exit 0).
#[test]
fn idle_against_a_silent_listener_fails() {
    let idle = ["--pattern", "idle", "-c", "4", "--duration", "1"];
    let (_, json) = failing_run(silent_listener(), &idle);
    assert_eq!(report(&json).held, 0, "{json}");
    assert_eq!(report(&json).stalls, 4, "{json}");
}

/// Idle against a server that closes all but one connection: fewer held
/// than asked is a failed run (exit 3), and the table says how many.
#[test]
fn idle_with_connections_refused_fails() {
    let server = ServerProcess::start(&[
        "--mode",
        "echo",
        "--max-connections",
        "1",
        "--log-level",
        "error",
    ]);
    let addr = server.addr.to_string();
    let run = load(&[
        "--addr",
        &addr,
        "--pattern",
        "idle",
        "-c",
        "4",
        "--duration",
        "0.5",
        "--stall-timeout",
        "0.5",
    ]);
    assert_eq!(run.code(), Some(3), "stderr: {}", run.stderr);
    assert!(run.stdout.contains("held             1 of 4"), "{}", run.stdout);
    assert!(run.stderr.contains("1 of 4 connections held"), "{}", run.stderr);
}

/// Asserts a usage error: exit 2, one `error:` line containing `says`,
/// no report and no panic.
fn assert_usage_error(args: &[&str], says: &str) {
    let run = load(args);
    assert_eq!(run.code(), Some(2), "{args:?}: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    let errors: Vec<_> =
        run.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: {}", run.stderr);
    assert!(errors[0].contains(says), "{args:?}: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

/// A duration too large for the clock is a usage error (it used to
/// overflow `Instant + Duration` and abort with exit 134).
#[test]
fn a_duration_beyond_the_clock_is_a_usage_error() {
    assert_usage_error(&["--duration", "1e19"], "at most");
    assert_usage_error(&["--stall-timeout", "1e19"], "at most");
    assert_usage_error(&["--duration", "inf"], "finite");
}

/// Negative seconds get a clear message, not "unexpected argument '-1'".
#[test]
fn negative_seconds_say_so() {
    let negative = "seconds cannot be negative";
    assert_usage_error(&["--duration", "-1"], negative);
    assert_usage_error(&["--stall-timeout", "-0.5"], negative);
    assert_usage_error(&["--stall-timeout", "0"], "at least");
}

/// Asserts the generator ended without a panic or an abort.
fn assert_no_panic(run: &Run) {
    assert_ne!(run.code(), Some(134), "aborted: {}", run.stderr);
    assert!(run.status.code().is_some(), "killed by a signal");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

/// Stdout whose reader has gone (`| head -c0`): the report cannot be
/// written, and the generator ends quietly with the run's own code.
#[test]
fn a_closed_stdout_ends_it_quietly() {
    let server =
        ServerProcess::start(&["--mode", "echo", "--log-level", "warn"]);
    let addr = server.addr.to_string();
    let mut child = Command::new(binary())
        .args(["load", "--addr", &addr, "-c", "2", "--duration", "0.3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn readyloop load");
    drop(child.stdout.take());
    let run = finish(child);
    assert_no_panic(&run);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(run.stderr.is_empty(), "quiet: {}", run.stderr);
}

/// Stderr whose reader has gone, on a run that writes to it (progress,
/// the first error, why it failed): still no panic, and still exit 3.
#[test]
fn a_closed_stderr_does_not_panic() {
    let addr = silent_listener().to_string();
    let mut child = Command::new(binary())
        .args(["load", "--addr", &addr, "-c", "2", "--duration", "1"])
        .args(["--stall-timeout", "0.3", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn readyloop load");
    drop(child.stderr.take());
    let mut stdout = String::new();
    let mut out = child.stdout.take().expect("piped stdout");
    out.read_to_string(&mut stdout).expect("read stdout");
    let run = finish(child);
    assert_no_panic(&run);
    assert_eq!(run.code(), Some(3));
    assert_eq!(report(&stdout).stalls, 2, "{stdout}");
}

/// A working echo server still passes: exit 0, one JSON object with
/// messages, no error and no stall.
#[test]
fn an_echo_server_still_passes() {
    let server =
        ServerProcess::start(&["--mode", "echo", "--log-level", "warn"]);
    let addr = server.addr.to_string();
    let args = ["--addr", &addr, "-c", "4", "--duration", "0.5", "--json"];
    let run = load(&args);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let json = run.stdout.trim();
    assert_eq!(json.lines().count(), 1, "{json}");
    assert!(json.starts_with("{\"pattern\":\"pingpong\""), "{json}");
    assert!(json.ends_with('}'), "{json}");
    assert!(report(json).messages > 0, "{json}");
    assert_eq!(report(json).held, 4, "{json}");
    assert_eq!(report(json).errors, 0, "{json}");
    assert_eq!(report(json).stalls, 0, "{json}");
}
