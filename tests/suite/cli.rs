//! The command line: bad input gives a one-line error and the documented
//! exit code, never a panic.

use std::process::{Command, Output};

use crate::support::activation::{activated, fd, listening};
use crate::support::server::binary;
use crate::support::ServerProcess;
use crate::support::{close_and_wait, connect, echo_and_close, stop};

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("run readyloop")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Invalid flags and addresses exit 2 with an error and usage, no panic.
#[test]
fn invalid_flags_exit_2_with_an_error() {
    for args in [
        &["serve", "--addr", "not-an-address"][..],
        &["serve", "--addr", "127.0.0.1:99999"],
        &["serve", "--mode", "shout"],
        &["serve", "--model", "fibers"],
        &["serve", "--max-connections", "0"],
        &["serve", "--max-connections", "-5"],
        &["serve", "--idle-timeout", "-1"],
        &["serve", "--idle-timeout", "1e400"],
        &["serve", "--drain", "soon"],
        &["serve", "--drain", "1e400"],
        &["serve", "--drain", "NaN"],
        &["serve", "--backlog", "0"],
        &["serve", "--log-level", "loud"],
        &["serve", "--log-timestamps", "sometimes"],
        &["serve", "--no-such-flag"],
        &["launch"],
    ] {
        let out = run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A negative number for any numeric flag is refused with a message that
/// names the value (not clap's "unexpected argument", which reads a
/// leading `-` as a flag), and an idle timeout too small to mean
/// anything is refused rather than taken as "never".
#[test]
fn negative_and_tiny_numbers_are_refused_clearly() {
    let serve = [
        "--max-connections",
        "--max-connections-per-ip",
        "--max-output-memory",
        "--send-buffer",
        "--receive-buffer",
        "--idle-timeout",
        "--backlog",
        "--thread-stack-kib",
        "--log-rate",
        "--log-burst",
        "--log-total-rate",
        "--drain",
    ];
    let load = [
        "--connections",
        "--duration",
        "--messages",
        "--size",
        "--threads",
        "--stall-timeout",
    ];
    let cases = serve
        .iter()
        .map(|f| ("serve", *f))
        .chain(load.iter().map(|f| ("load", *f)));
    for (command, flag) in cases {
        let out = run(&[command, flag, "-1"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains("invalid value '-1'"), "{flag}: {err}");
        assert!(!err.contains("unexpected argument"), "{flag}: {err}");
    }
    for tiny in ["0.0005", "1e-10"] {
        let out = run(&["serve", "--idle-timeout", tiny]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{tiny}: {err}");
        assert!(err.contains("at least 0.001"), "{tiny}: {err}");
    }
}

/// An address in use exits 1 with `error: cannot listen on ADDR: …`.
#[test]
fn address_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["serve", "--addr", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let want = format!("error: cannot listen on {addr}: ");
    assert!(err.lines().any(|l| l.starts_with(&want)), "{err}");
    assert!(err.contains("in use"), "{err}");
}

/// An address this host does not have exits 1 the same way.
#[test]
fn foreign_address_exits_1() {
    // TEST-NET-1: never assigned to a local interface.
    let out = run(&["serve", "--addr", "192.0.2.1:8989"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error: cannot listen on 192.0.2.1:8989: "));
}

/// `--help` documents every flag of `serve`.
#[test]
fn help_documents_every_flag() {
    let out = run(&["serve", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--addr",
        "--mode",
        "--model",
        "--max-connections",
        "--idle-timeout",
        "--backlog",
        "--log-level",
        "--thread-stack-kib",
        "--log-timestamps",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

/// A counting flag refuses what is not a whole number in its range
/// (scientific notation, fractions, words, past the top) by saying the
/// range, not the parser's "invalid digit found in string".
#[test]
fn counting_flags_say_their_range() {
    for (flag, range) in [
        ("--log-rate", "from 0 to 1000000"),
        ("--log-burst", "from 1 to 1000000"),
        ("--log-total-rate", "from 0 to 1000000"),
        ("--max-connections", "from 1 to 10000000"),
        ("--max-connections-per-ip", "from 0 to 10000000"),
        ("--backlog", "from 1 to 2147483647"),
        ("--workers", "from 0 to 1024"),
    ] {
        for value in ["1e9", "2.5", "lots", "99999999999"] {
            let out = run(&["serve", flag, value]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
            let want = format!("not a whole number {range}");
            assert!(err.contains(&want), "{flag} {value}: {err}");
            assert!(!err.contains("invalid digit"), "{flag} {value}: {err}");
        }
    }
}

/// A flag that cannot take effect beside the others, when the operator
/// clearly meant it to, is refused: exit 2 and one line naming it and
/// the flag (or model) it needs. Each of these started before, and did
/// silently without what the flag asked for.
#[test]
fn a_flag_that_cannot_take_effect_is_refused() {
    for (args, flag, needed) in [
        (
            &["--proxy-from", "10.0.0.0/8"][..],
            "--proxy-from",
            "--proxy-protocol",
        ),
        (&["--drain", "2"], "--drain", "--metrics-addr"),
        (&["--pin"], "--pin", "--workers"),
        (&["--pin", "--workers", "1"], "--pin", "--workers"),
        (
            &["--model", "thread", "--max-output-memory", "1M"],
            "--max-output-memory",
            "--model mio or uring",
        ),
        (
            &["--model", "iterative", "--max-output-memory", "1M"],
            "--max-output-memory",
            "--model mio or uring",
        ),
        (
            &["--model", "process", "--max-output-memory", "1M"],
            "--max-output-memory",
            "--model mio or uring",
        ),
    ] {
        let all = [&["serve", "--addr", "127.0.0.1:0"][..], args].concat();
        let out = run(&all);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with(&format!("error: {flag} ")), "{err}");
        assert!(err.contains(needed), "{args:?}: {err}");
    }
    // What they need given, each starts.
    for args in [
        &["--proxy-protocol", "--proxy-from", "10.0.0.0/8"][..],
        &["--drain", "2", "--metrics-addr", "127.0.0.1:0"],
        &["--pin", "--workers", "2"],
        &["--mode", "echo", "--max-output-memory", "1M"],
    ] {
        let mut server = ServerProcess::start(args);
        assert_eq!(server.count("WARN"), 0, "{args:?}: {:?}", server.log);
        stop(server);
    }
}

/// A flag that has no effect beside the others but does no harm (what
/// it bounds is never there) is accepted, and said to do nothing in one
/// warning at start, once.
#[test]
fn a_harmless_flag_without_effect_is_warned_about_once() {
    for (args, warning) in [
        (
            &["--mode", "echo", "--log-rate", "5"][..],
            "--log-rate has no effect",
        ),
        (
            &["--mode", "discard", "--log-burst", "9"],
            "--log-burst has no effect",
        ),
        (
            &["--mode", "echo", "--log-total-rate", "9"],
            "--log-total-rate has no effect",
        ),
        (&["--log-level", "warn", "--log-rate", "5"], "--log-level warn"),
        (&["--max-output-memory", "1M"], "--max-output-memory has no effect"),
        (
            &["--mode", "discard", "--send-buffer", "16K"],
            "--send-buffer has no effect",
        ),
        (&["--thread-stack-kib", "128"], "--thread-stack-kib has no effect"),
    ] {
        let mut server = ServerProcess::start(args);
        if args.contains(&"echo") {
            echo_and_close(server.addr, b"served\n");
        } else {
            let mut c = connect(server.addr);
            std::io::Write::write_all(&mut c, b"served\n").expect("write");
            close_and_wait(c);
        }
        let s = stop_keeping(&mut server);
        assert_eq!(s.accepted, 1, "{args:?}");
        let warned: Vec<&String> =
            server.log.iter().filter(|l| l.contains(warning)).collect();
        assert_eq!(warned.len(), 1, "{args:?}: {:?}", server.log);
        assert!(warned[0].starts_with("WARN  "), "{warned:?}");
    }
}

/// Under socket activation `--addr` and `--backlog` do nothing (the
/// sockets are bound and listening already): the server serves the
/// passed socket and says so once for each.
#[test]
fn addr_and_backlog_under_socket_activation_are_warned_about() {
    let (socket, addr) = listening("127.0.0.1:0");
    let args = ["serve", "--addr", "127.0.0.1:0", "--backlog", "7"];
    let mut cmd = activated(binary(), &args, &[fd(&socket)], &["web"]);
    cmd.args(["--mode", "echo"]);
    let mut server = ServerProcess::start_command(cmd);
    echo_and_close(addr, b"served");
    stop_keeping(&mut server);
    for flag in ["--addr", "--backlog"] {
        let warning = format!("{flag} has no effect: systemd passed");
        assert_eq!(server.count(&warning), 1, "{:?}", server.log);
    }
}

/// SIGTERM, exit 0, and the summary, keeping the server's log.
fn stop_keeping(server: &mut ServerProcess) -> readyloop::Summary {
    let (code, summary) = server.finish();
    assert_eq!(code, 0, "exit code: {:?}", server.log);
    summary
}
