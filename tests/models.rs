//! One suite, every model: each behaviour below runs against the mio,
//! iterative, thread and process models through the real binary (forking
//! a multi-threaded test process would be unsound, and the binary is what
//! users run). [`for_each_model!`] turns each behaviour into one test per
//! model, named `behaviour::model`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use common::*;
use readyloop::escape::escape;
use readyloop::{Model, Summary};

macro_rules! for_each_model {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            use readyloop::Model;

            #[test]
            fn mio() {
                super::$behaviour(Model::Mio)
            }

            #[test]
            fn iterative() {
                super::$behaviour(Model::Iterative)
            }

            #[test]
            fn thread() {
                super::$behaviour(Model::Thread)
            }

            #[test]
            fn process() {
                super::$behaviour(Model::Process)
            }
        }
    )*};
}

for_each_model!(
    echo_is_exact,
    eof_closes_as_eof,
    reset_closes_as_reset,
    half_close_still_gets_every_byte,
    log_mode_escapes_hostile_bytes,
    max_connections_rejects_the_excess,
    idle_connections_close_as_idle,
    sigterm_summary_counts_what_clients_did,
);

/// Every byte sent comes back, in order, to many concurrent clients (one
/// after another for the iterative model, which serves one at a time).
fn echo_is_exact(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let addr = server.addr;
    let client = move |i: u64| {
        let mut s = connect(addr);
        let mut sent = 0;
        for round in 0..10 {
            let data = pattern(i * 100 + round, 1 + (round as usize * 997));
            assert_eq!(echo_round(&mut s, &data), data, "client {i}");
            sent += data.len() as u64;
        }
        sent
    };
    let clients = 20;
    let sent: u64 = match model {
        Model::Iterative => (0..clients).map(client).sum(),
        _ => (0..clients)
            .map(|i| thread::spawn(move || client(i)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|c| c.join().expect("client"))
            .sum(),
    };
    wait_count(&mut server, "closed: eof", clients as usize);
    let summary = stop(server);
    assert_eq!(summary.accepted, clients);
    assert_eq!(summary.closed_eof, clients);
    assert_eq!((summary.bytes_in, summary.bytes_out), (sent, sent));
}

/// A client that closes its side ends its connection as `eof`.
fn eof_closes_as_eof(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let mut s = connect(server.addr);
    assert_eq!(echo_round(&mut s, b"ping"), b"ping");
    drop(s);
    wait_count(&mut server, "closed: eof", 1);
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_eof), (1, 1));
}

/// A client that resets (SO_LINGER 0, then close) ends as `reset`.
fn reset_closes_as_reset(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let mut s = connect(server.addr);
    assert_eq!(echo_round(&mut s, b"ping"), b"ping");
    reset(s);
    wait_count(&mut server, "closed: reset", 1);
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_reset), (1, 1));
    assert_eq!(summary.closed(), 1);
}

/// A client that shuts down its write side still gets every echoed byte,
/// then a clean EOF.
fn half_close_still_gets_every_byte(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let mut s = connect(server.addr);
    let data = pattern(7, 1 << 20);
    // Write from another thread: the echo fills our receive buffer long
    // before 1 MiB is sent, and a blocking server waits for us to read.
    let mut writer = s.try_clone().expect("clone");
    let sent = data.clone();
    let writing = thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer.shutdown(Shutdown::Write).expect("shutdown");
    });
    let (back, clean) = read_to_end(&mut s);
    writing.join().expect("writer");
    assert!(clean, "the server reset instead of closing");
    assert!(back == data, "{} bytes back of {}", back.len(), data.len());
    wait_count(&mut server, "closed: eof", 1);
    let summary = stop(server);
    assert_eq!(summary.closed_eof, 1);
    assert_eq!(summary.bytes_out, data.len() as u64);
}

/// In log mode, client bytes are logged escaped: no control byte reaches
/// the server's stderr, and a client cannot forge a log line.
fn log_mode_escapes_hostile_bytes(model: Model) {
    let mut server = serve(model, &["--mode", "log"]);
    let hostile: &[u8] = b"hi\x1b[2J\x1b]0;owned\x07\r\nINFO  [readyloop] \
        10.0.0.1:1 accepted (1 open)\x00\xff\xfe\xe2\x80\xae end";
    let mut s = connect(server.addr);
    s.write_all(hostile).expect("write");
    drop(s);
    wait_count(&mut server, "closed: eof", 1);
    let log = server.collect_log().to_vec();
    let shown = format!("sent {} bytes: {}", hostile.len(), escape(hostile));
    assert!(
        log.iter().any(|l| l.ends_with(&shown)),
        "no line ends with {shown:?}:\n{}",
        log.join("\n")
    );
    assert!(shown.contains("\\x1b[2J") && shown.contains("\\r\\n"));
    for line in &log {
        assert!(!line.chars().any(char::is_control), "raw: {line:?}");
    }
    let forged = |l: &&String| l.contains("] 10.0.0.1:1 accepted");
    assert!(!log.iter().any(|l| forged(&l) && !l.contains(" sent ")));
    let summary = stop(server);
    assert_eq!(summary.bytes_in, hostile.len() as u64);
}

/// Connections beyond `--max-connections` are accepted and closed at once
/// and counted only as rejected; when a slot frees, the next client is
/// served. The iterative model serves one at a time, so its excess waits
/// in the backlog instead and nothing is rejected.
fn max_connections_rejects_the_excess(model: Model) {
    let max = 2;
    let mut server =
        serve(model, &["--mode", "echo", "--max-connections", "2"]);
    if model == Model::Iterative {
        return excess_waits_in_the_backlog(server);
    }
    let mut held: Vec<TcpStream> =
        (0..max).map(|_| connect(server.addr)).collect();
    for s in &mut held {
        assert_eq!(echo_round(s, b"in"), b"in");
    }
    let excess = 3;
    for _ in 0..excess {
        let mut s = connect(server.addr);
        let (data, _) = read_to_end(&mut s);
        assert!(data.is_empty(), "a rejected client got data");
    }
    wait_count(&mut server, "rejected:", 1);
    drop(held.pop());
    wait_count(&mut server, "closed: eof", 1);
    settle(&server, model, max - 1);
    let mut s = connect(server.addr);
    assert_eq!(echo_round(&mut s, b"next"), b"next");
    let summary = stop(server);
    assert_eq!(summary.rejected, excess);
    assert_eq!(summary.accepted, max as u64 + 1);
    assert_eq!(summary.closed(), summary.accepted);
}

fn excess_waits_in_the_backlog(mut server: ServerProcess) {
    let mut first = connect(server.addr);
    assert_eq!(echo_round(&mut first, b"first"), b"first");
    let mut second = connect(server.addr);
    second.write_all(b"second").expect("write");
    second.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 6];
    assert!(second.read(&mut buf).is_err(), "served while another was");
    drop(first);
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    second.read_exact(&mut buf).expect("served once the first left");
    assert_eq!(&buf, b"second");
    wait_count(&mut server, "closed: eof", 1);
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.rejected), (2, 0));
}

/// A connection with no traffic for `--idle-timeout` is closed as `idle`.
fn idle_connections_close_as_idle(model: Model) {
    let mut server =
        serve(model, &["--mode", "echo", "--idle-timeout", "0.3"]);
    let mut s = connect(server.addr);
    assert_eq!(echo_round(&mut s, b"then quiet"), b"then quiet");
    let (data, _) = read_to_end(&mut s);
    assert!(data.is_empty());
    wait_count(&mut server, "closed: idle", 1);
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_idle), (1, 1));
}

/// After a mixed workload, SIGTERM ends the server with exit 0 and a
/// summary equal to what the clients did: clean closes as eof, resets as
/// reset, connections still open as shutdown, every byte counted.
fn sigterm_summary_counts_what_clients_did(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let mut bytes = 0;
    let mut talk = |seed: u64| {
        let mut s = connect(server.addr);
        let data = pattern(seed, 3000 + seed as usize);
        assert_eq!(echo_round(&mut s, &data), data);
        bytes += data.len() as u64;
        s
    };
    let (eof, resets) = (3, 2);
    for i in 0..eof {
        drop(talk(i));
    }
    for i in 0..resets {
        reset(talk(10 + i));
    }
    // The iterative model serves one client at a time: hold only one.
    let open = if model == Model::Iterative { 1 } else { 3 };
    let mut held: Vec<TcpStream> = (0..open).map(|i| talk(20 + i)).collect();
    wait_count(&mut server, "closed: eof", eof as usize);
    wait_count(&mut server, "closed: reset", resets as usize);
    let (code, summary) = server.terminate();
    assert_eq!(code, 0);
    let expected = Summary {
        accepted: eof + resets + open,
        closed_eof: eof,
        closed_reset: resets,
        closed_shutdown: open,
        bytes_in: bytes,
        bytes_out: bytes,
        ..Summary::default()
    };
    assert_eq!(summary, expected);
    for s in &mut held {
        let (data, clean) = read_to_end(s);
        assert!(data.is_empty() && clean, "not a clean close at shutdown");
    }
}

// ---- the process model only ---------------------------------------------

/// 200 short connections leave no zombie: the parent reaps every child.
#[test]
fn process_model_leaves_no_zombie() {
    let mut server = serve(Model::Process, &["--mode", "echo"]);
    let addr = server.addr;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..50 {
                    let mut s = connect(addr);
                    assert_eq!(echo_round(&mut s, b"z"), b"z");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client");
    }
    wait_count(&mut server, "closed: eof", 200);
    let pid = server.pid();
    eventually("no zombie, no child left", || children(pid).is_empty());
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_eof), (200, 200));
}

/// At shutdown every child is told to stop and is gone before the server
/// exits.
#[test]
fn process_model_children_are_gone_after_shutdown() {
    let server = serve(Model::Process, &["--mode", "echo"]);
    let mut held: Vec<TcpStream> =
        (0..3).map(|_| connect(server.addr)).collect();
    for s in &mut held {
        assert_eq!(echo_round(s, b"hold"), b"hold");
    }
    let pid = server.pid();
    let kids = children(pid);
    assert_eq!(kids.len(), 3, "one child per connection: {kids:?}");
    let (code, summary) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!(summary.closed_shutdown, 3);
    for (kid, _) in kids {
        let alive = std::fs::metadata(format!("/proc/{kid}")).is_ok();
        assert!(!alive, "child {kid} outlived the server");
    }
}

// ---- helpers ------------------------------------------------------------

/// The binary serving `model` on a free port with `args`.
fn serve(model: Model, args: &[&str]) -> ServerProcess {
    let mut all = vec!["--model", model.name()];
    all.extend_from_slice(args);
    ServerProcess::start(&all)
}

/// SIGTERM, exit 0, and the summary.
fn stop(server: ServerProcess) -> Summary {
    let (code, summary) = server.terminate();
    assert_eq!(code, 0, "exit code");
    assert_eq!(summary.closed(), summary.accepted, "{summary}");
    summary
}

/// Closes `s` with an RST instead of a FIN.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
}

/// How often `needle` occurs in the server's stderr so far. Counted in
/// the text, not by lines: children of the process model write their
/// lines concurrently.
fn count(server: &mut ServerProcess, needle: &str) -> usize {
    server.collect_log().iter().map(|l| l.matches(needle).count()).sum()
}

/// Waits until `needle` occurs `n` times in the server's stderr.
fn wait_count(server: &mut ServerProcess, needle: &str, n: usize) {
    eventually(&format!("{n} × {needle:?}"), || count(server, needle) >= n);
}

/// Waits until the server has let go of every closed connection: the
/// thread model's threads have ended and the process model's children are
/// reaped, so `open` connections are all that count against the limit.
fn settle(server: &ServerProcess, model: Model, open: usize) {
    let pid = server.pid();
    match model {
        Model::Thread => eventually("threads end", || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .is_ok_and(|d| d.count() == 1 + open)
        }),
        Model::Process => {
            eventually("children reaped", || children(pid).len() == open)
        }
        Model::Mio | Model::Iterative => {}
    }
}

/// The processes whose parent is `ppid`, with their state (`Z`: zombie).
fn children(ppid: u32) -> Vec<(u32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat =
                std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The name may hold spaces and parentheses: parse after the
            // last ')'; then come the state and the parent's pid.
            let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = rest.next()?.chars().next()?;
            let parent: u32 = rest.next()?.parse().ok()?;
            (parent == ppid).then_some((pid, state))
        })
        .collect()
}
