//! Stopping: SIGTERM and SIGINT arrive as events, pending output is
//! flushed, unread input is lingered over instead of reset, and the
//! summary counts what the clients did. Also EINTR from a stopped process.

mod common;

use std::net::Shutdown;
use std::thread;

use common::*;

/// SIGTERM with connections open: exit 0, each open connection counted
/// as `closed_shutdown`, every byte counted, clients see a clean EOF.
#[test]
fn sigterm_closes_open_connections_and_prints_an_exact_summary() {
    let server = ServerProcess::start(&["--mode", "echo"]);
    let mut open: Vec<_> = (0..5).map(|_| connect(server.addr)).collect();
    for (i, c) in open.iter_mut().enumerate() {
        let data = pattern(i as u64, 100 * (i + 1));
        assert_eq!(echo_round(c, &data), data);
    }
    let mut done = connect(server.addr);
    assert_eq!(echo_round(&mut done, b"x"), b"x");
    done.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&mut done).1);
    let (code, s) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!(
        (s.accepted, s.closed_eof, s.closed_shutdown, s.rejected),
        (6, 1, 5, 0),
        "{s}"
    );
    assert_eq!((s.bytes_in, s.bytes_out), (1501, 1501), "{s}");
    for mut c in open {
        assert_eq!(read_to_end(&mut c), (Vec::new(), true));
    }
}

/// SIGINT stops the server the same way.
#[test]
fn sigint_stops_the_server() {
    let mut server = ServerProcess::start(&["--mode", "discard"]);
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(), 0);
    server.wait_for_status("summary accepted=0 ");
}

/// A client with echoed output pending at the server and more input the
/// server never read: on SIGTERM it still receives every byte the server
/// wrote and then a clean EOF, not an RST that would discard them.
#[test]
fn shutdown_flushes_and_lingers_instead_of_resetting() {
    let server = ServerProcess::start(&["--mode", "echo"]);
    let mut c = connect(server.addr);
    // Send without reading until the server stops reading us: it holds
    // 64 KiB of output and more input stays queued, unread, in its kernel.
    let sent = write_until_stalled(&mut c, &pattern(3, 64 * 1024), 64 << 20);
    let reader = thread::spawn(move || read_to_end(&mut c));
    let (code, s) = server.terminate();
    let (back, clean) = reader.join().unwrap();
    assert_eq!(code, 0);
    assert!(clean, "the client got an RST after {} bytes", back.len());
    assert_eq!(back.len() as u64, s.bytes_out, "{s}");
    assert!(back == sent[..back.len()], "echo differs");
}

/// SIGSTOP/SIGCONT make epoll_wait fail with EINTR; the server retries
/// and keeps serving (trap 9).
#[test]
fn interrupted_poll_is_retried() {
    let server = ServerProcess::start(&["--mode", "echo"]);
    let mut c = connect(server.addr);
    for i in 0..5 {
        server.signal(libc::SIGSTOP);
        server.signal(libc::SIGCONT);
        let data = pattern(i, 10);
        assert_eq!(echo_round(&mut c, &data), data);
    }
    drop(c);
    let (code, s) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!((s.accepted, s.bytes_out), (1, 50), "{s}");
}
