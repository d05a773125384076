//! How connections end: EOF, RST, half-close, and the summary counts of a
//! mixed workload (mio model, in-process over loopback).

mod common;

use std::io::Write;
use std::net::Shutdown;

use common::*;
use readyloop::{Mode, Model, Summary};

/// A client that closes normally ends as `eof`; one that sends an RST
/// (SO_LINGER 0) ends as `reset`; neither disturbs a third client.
#[test]
fn eof_and_reset_are_told_apart_and_isolated() {
    let server = start_server(config(Model::Mio, Mode::Echo));
    let mut bystander = connect(server.addr);
    assert_eq!(echo_round(&mut bystander, b"before"), b"before");

    let mut polite = connect(server.addr);
    assert_eq!(echo_round(&mut polite, b"bye"), b"bye");
    polite.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut polite), (Vec::new(), true));

    let mut rude = connect(server.addr);
    assert_eq!(echo_round(&mut rude, b"boom"), b"boom");
    // Unread input at the client makes the reset certain.
    rude.write_all(b"unread").unwrap();
    reset(rude);

    // The bystander is still served after both closes.
    assert_eq!(echo_round(&mut bystander, b"after"), b"after");
    drop(bystander);
    let s = server.stop().unwrap();
    assert_eq!(s.accepted, 3);
    assert_eq!(s.closed_reset, 1, "{s}");
    assert!(s.closed_eof >= 1, "{s}");
    assert_eq!(s.closed(), 3, "{s}");
}

/// A client that shuts down its write side right after a large send still
/// receives every echoed byte, then a clean EOF from the server.
#[test]
fn half_close_gets_every_byte_back_then_eof() {
    let server = start_server(config(Model::Mio, Mode::Echo));
    let data = pattern(7, 3 * 1024 * 1024);
    let mut stream = connect(server.addr);
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    let send = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let (back, clean) = read_to_end(&mut stream);
    send.join().unwrap();
    assert!(clean, "the server must close with a FIN, not an RST");
    assert!(
        back == data,
        "echo differs: {} of {} bytes",
        back.len(),
        data.len()
    );
    let s = server.stop().unwrap();
    assert_eq!((s.closed_eof, s.bytes_in, s.bytes_out), (1, 3 << 20, 3 << 20));
}

/// After a mix of clients (normal, reset, rejected, still open), the
/// summary equals what the clients did, connection for connection and
/// byte for byte.
#[test]
fn summary_counts_match_a_mixed_workload() {
    let mut cfg = config(Model::Mio, Mode::Echo);
    cfg.max_connections = 3;
    let server = start_server(cfg);
    let mut bytes = 0u64;

    // Two clients that finish normally, one byte count each.
    for i in 0..2 {
        let mut c = connect(server.addr);
        let data = pattern(i, 1000 + i as usize);
        assert_eq!(echo_round(&mut c, &data), data);
        bytes += data.len() as u64;
        c.shutdown(Shutdown::Write).unwrap();
        assert!(read_to_end(&mut c).1);
    }
    // One that resets after a round trip.
    let mut r = connect(server.addr);
    assert_eq!(echo_round(&mut r, b"12345"), b"12345");
    bytes += 5;
    reset(r);
    // Three held open: together they fill the limit of 3.
    let mut held: Vec<_> = (0..3).map(|_| connect(server.addr)).collect();
    for (i, c) in held.iter_mut().enumerate() {
        let data = pattern(10 + i as u64, 10);
        // Each round trip proves the connection is open and counted, so
        // the reset above has been seen before the next connects.
        assert_eq!(echo_round(c, &data), data);
        bytes += 10;
    }
    // Two over the limit: accepted and closed at once.
    for _ in 0..2 {
        let mut extra = connect(server.addr);
        let (got, _) = read_to_end(&mut extra);
        assert!(got.is_empty());
    }
    let s = server.stop().unwrap();
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
