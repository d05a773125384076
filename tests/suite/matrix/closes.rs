//! How connections end: EOF, RST, idle, a stop, and the summary counts of
//! a mixed workload.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use readyloop::{Model, Summary};

use crate::support::server::Signal;
use crate::support::*;

per_model!(
    eof_closes_as_eof,
    reset_closes_as_reset,
    idle_connections_close_as_idle_busy_ones_do_not,
    sigterm_summary_counts_what_clients_did,
    sigint_stops_the_server,
);
per_model!(concurrent: eof_and_reset_are_told_apart_and_isolated,
    summary_counts_match_a_mixed_workload);

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

/// A client that closes normally ends as `eof`; one that sends an RST
/// ends as `reset`; neither disturbs a third client.
fn eof_and_reset_are_told_apart_and_isolated(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let mut bystander = connect(server.addr);
    assert_eq!(echo_round(&mut bystander, b"before"), b"before");

    let mut polite = connect(server.addr);
    assert_eq!(echo_round(&mut polite, b"bye"), b"bye");
    polite.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(read_to_end(&mut polite), (Vec::new(), true));

    let mut rude = connect(server.addr);
    assert_eq!(echo_round(&mut rude, b"boom"), b"boom");
    // Unread input at the client makes the reset certain.
    rude.write_all(b"unread").expect("write");
    reset(rude);

    // The bystander is still served after both closes.
    assert_eq!(echo_round(&mut bystander, b"after"), b"after");
    drop(bystander);
    wait_count(&mut server, "closed: eof", 2);
    wait_count(&mut server, "closed: reset", 1);
    let s = stop(server);
    assert_eq!((s.accepted, s.closed_eof, s.closed_reset), (3, 2, 1), "{s}");
}

/// A connection with no traffic for `--idle-timeout` is closed as `idle`
/// with a clean FIN; one that talks every 50 ms through two timeouts
/// never is (a timeout 20 times the pacing, so a loaded machine that
/// runs the busy client late does not make it look idle).
fn idle_connections_close_as_idle_busy_ones_do_not(model: Model) {
    let mut server = serve(model, &["--mode", "echo", "--idle-timeout", "1"]);
    let mut quiet = connect(server.addr);
    assert_eq!(echo_round(&mut quiet, b"then quiet"), b"then quiet");
    // The iterative model serves the busy client once the quiet one is
    // gone; the others at once.
    let mut busy = connect(server.addr);
    let talker = thread::spawn(move || {
        for i in 0..40u64 {
            let data = pattern(i, 8);
            assert_eq!(echo_round(&mut busy, &data), data);
            // Pacing below the timeout, not a wait for anything.
            thread::sleep(Duration::from_millis(50));
        }
    });
    let (data, clean) = read_to_end(&mut quiet);
    assert!(data.is_empty() && clean, "idle close must be a clean FIN");
    talker.join().expect("busy client");
    wait_count(&mut server, "closed: eof", 1);
    let summary = stop(server);
    assert_eq!(
        (summary.accepted, summary.closed_idle, summary.closed_eof),
        (2, 1, 1),
        "{summary}"
    );
}

/// After a mixed workload, SIGTERM ends the server with exit 0 and a
/// summary equal to what the clients did: clean closes as eof, resets as
/// reset, connections still open as shutdown, every byte counted; the
/// open clients see a clean EOF.
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
    let open = if model == Model::Iterative { 1 } else { 5 };
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

/// SIGINT stops the server as SIGTERM does: exit 0 and a summary.
fn sigint_stops_the_server(model: Model) {
    let mut server = serve(model, &["--mode", "discard"]);
    server.signal(Signal::INT);
    assert_eq!(server.wait_exit(), 0);
    server.wait_for_status("summary accepted=0 ");
}

/// After clients that finish, reset, are still open and are over the
/// limit, the summary equals what they did, connection for connection
/// and byte for byte.
fn summary_counts_match_a_mixed_workload(model: Model) {
    let mut server =
        serve(model, &["--mode", "echo", "--max-connections", "3"]);
    let mut bytes = 0u64;
    // Two clients that finish normally.
    for i in 0..2 {
        let mut c = connect(server.addr);
        let data = pattern(i, 1000 + i as usize);
        assert_eq!(echo_round(&mut c, &data), data);
        bytes += data.len() as u64;
        close_and_wait(c);
    }
    // One that resets after a round trip.
    let mut r = connect(server.addr);
    assert_eq!(echo_round(&mut r, b"12345"), b"12345");
    bytes += 5;
    reset(r);
    wait_count(&mut server, "closed: reset", 1);
    settle(&server, model, 0);
    // Three held open: together they fill the limit of 3.
    let mut held: Vec<_> = (0..3).map(|_| connect(server.addr)).collect();
    for (i, c) in held.iter_mut().enumerate() {
        let data = pattern(10 + i as u64, 10);
        assert_eq!(echo_round(c, &data), data);
        bytes += 10;
    }
    // Two over the limit: accepted and closed at once.
    for _ in 0..2 {
        let mut extra = connect(server.addr);
        let (got, _) = read_to_end(&mut extra);
        assert!(got.is_empty());
    }
    let s = stop(server);
    let want = Summary {
        accepted: 6,
        closed_eof: 2,
        closed_reset: 1,
        closed_error: 0,
        closed_idle: 0,
        closed_shutdown: 3,
        rejected: 2,
        bytes_in: bytes,
        bytes_out: bytes,
        log_dropped: 0,
        log_suppressed: 0,
    };
    assert_eq!(s, want, "\n got {s}\nwant {want}");
    drop(held);
}
