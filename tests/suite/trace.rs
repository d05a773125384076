//! `--log-level trace`: the server narrates one client's exchange step by
//! step (what the kernel reported, what the loop did, the TCP state at
//! each milestone), and says nothing of it at `info`.

use std::io::{Read, Write};
use std::net::Shutdown;

use readyloop::Model;

use crate::support::*;

/// The TRACE lines about the client at `peer`, in order.
fn traced<'a>(log: &'a [String], peer: &str) -> Vec<&'a str> {
    log.iter()
        .filter(|l| l.starts_with("TRACE") && l.contains(peer))
        .map(String::as_str)
        .collect()
}

/// The index of the first line after `from` that contains every one of
/// `words`, or a panic that shows the trace.
fn after(lines: &[&str], from: usize, words: &[&str]) -> usize {
    let found =
        lines[from..].iter().position(|l| words.iter().all(|w| l.contains(w)));
    match found {
        Some(i) => from + i,
        None => panic!("no {words:?} after line {from} of {lines:#?}"),
    }
}

/// One exchange (send, read the echo, half-close, read the EOF) at
/// `--log-level trace`: the accept with its state, the read and its
/// count, the write, the read of 0 that is the client's FIN with the
/// state CLOSE_WAIT, and the close, in that order; with `readable`
/// events before the reads in the mio model, and in the uring model the
/// completions instead (recv 6 bytes with its buffer, send 6 bytes, recv
/// 0 for the EOF). At `info`, none of it.
fn narrates(model: Model) {
    let mut server = serve(model, &["--mode", "echo", "--log-level", "trace"]);
    let mut c = connect(server.addr);
    let me = c.local_addr().expect("local address").to_string();
    c.write_all(b"hello\n").expect("write");
    let mut back = [0; 6];
    c.read_exact(&mut back).expect("echo");
    c.shutdown(Shutdown::Write).expect("half-close");
    let (rest, _) = read_to_end(&mut c);
    assert!(rest.is_empty());
    wait_count(&mut server, "closed: eof", 1);
    let log = server.collect_log().to_vec();
    let lines = traced(&log, &me);
    let start = match model {
        Model::Mio | Model::Uring => {
            after(&lines, 0, &["accepted", "state ESTABLISHED"])
        }
        _ => after(&lines, 0, &["state ESTABLISHED"]),
    };
    if model == Model::Uring {
        let armed = after(&lines, start, &["arm recv"]);
        let got =
            after(&lines, armed, &["completion: recv 6 bytes", "buffer "]);
        // The echo's send and the client's FIN complete in either order.
        let sent = after(&lines, got, &["completion: send 6 bytes"]);
        let eof = after(&lines, got, &["completion: recv 0 (EOF)"]);
        let fin = after(&lines, eof, &["the peer's FIN", "state CLOSE_WAIT"]);
        let closed = after(&lines, sent.max(fin), &["close (eof)"]);
        after(&lines, closed, &["slot", "freed"]);
        // Each submission batch names its count.
        assert!(
            log.iter().any(|l| l.contains("submit: ") && l.contains("in one")),
            "{log:#?}"
        );
        stop(server);
        return quiet(model);
    }
    let mut at = start;
    if model == Model::Mio {
        at = after(&lines, at, &["event:", "readable"]);
    }
    at = after(&lines, at, &["read 6 bytes"]);
    at = after(&lines, at, &["wrote 6 bytes"]);
    at = after(&lines, at, &["read 0 bytes", "EOF", "state CLOSE_WAIT"]);
    after(&lines, at, &["close (eof)"]);
    stop(server);
    quiet(model);
}

/// At the default level, an exchange prints no TRACE line.
fn quiet(model: Model) {
    let mut quiet = serve(model, &["--mode", "echo"]);
    let mut c = connect(quiet.addr);
    assert_eq!(echo_round(&mut c, b"hi"), b"hi");
    drop(c);
    wait_count(&mut quiet, "closed:", 1);
    let log = quiet.collect_log().to_vec();
    assert!(!log.iter().any(|l| l.starts_with("TRACE")), "{log:#?}");
    stop(quiet);
}

/// [`narrates`] against the mio model.
#[test]
fn mio() {
    narrates(Model::Mio);
}

/// A client that resets (SO_LINGER 0) after its echo: the reset as the
/// model met it (a read's ECONNRESET, or in the uring model a receive's
/// `-ECONNRESET` completion), then the close counted as a reset, with
/// the TCP state the kernel reports for a reset socket (CLOSE).
fn narrates_a_reset(model: Model) {
    let mut server = serve(model, &["--mode", "echo", "--log-level", "trace"]);
    let mut c = connect(server.addr);
    let me = c.local_addr().expect("local address").to_string();
    assert_eq!(echo_round(&mut c, b"bye"), b"bye");
    reset(c);
    wait_count(&mut server, "closed: reset", 1);
    let log = server.collect_log().to_vec();
    let lines = traced(&log, &me);
    let seen = match model {
        Model::Uring => after(&lines, 0, &["completion: recv -ECONNRESET"]),
        _ => after(&lines, 0, &["read: Connection reset by peer", "state "]),
    };
    after(&lines, seen, &["close (reset)", "state CLOSE"]);
    stop(server);
}

per_model!(narrates_a_reset);

/// [`narrates`] against the uring model.
#[test]
fn uring() {
    crate::support::uring::run(Model::Uring, narrates);
}

/// [`narrates`] against the iterative model.
#[test]
fn iterative() {
    narrates(Model::Iterative);
}

/// [`narrates`] against the thread model.
#[test]
fn thread() {
    narrates(Model::Thread);
}

/// [`narrates`] against the process model.
#[test]
fn process() {
    narrates(Model::Process);
}

/// A full output buffer in the mio model (`--send-buffer 4K`, a client
/// that writes 300 KB before it reads): a write that would block, the
/// bytes kept for writable readiness (trap 7), reading paused while the
/// output is full, then the output drained and the close, in order.
#[test]
fn mio_narrates_a_full_output_buffer() {
    let args =
        ["--mode", "echo", "--log-level", "trace", "--send-buffer", "4K"];
    let mut server = serve(Model::Mio, &args);
    let mut c = connect(server.addr);
    let me = c.local_addr().expect("local address").to_string();
    let mut w = c.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        w.write_all(&[7u8; 300_000]).expect("write");
        w.shutdown(Shutdown::Write).expect("half-close");
    });
    let (back, _) = read_to_end(&mut c);
    writer.join().expect("writer");
    assert_eq!(back.len(), 300_000);
    wait_count(&mut server, "closed: eof", 1);
    let log = server.collect_log().to_vec();
    let lines = traced(&log, &me);
    let blocked = after(&lines, 0, &["write: would block"]);
    after(&lines, blocked, &["waiting for writable", "trap 7"]);
    after(&lines, 0, &["output full: reading paused"]);
    let drained = after(&lines, blocked, &["output drained"]);
    after(&lines, drained, &["close (eof)"]);
    stop(server);
}
