//! What connections cost the server process: descriptors come back when
//! they close, and idle connections cost bytes, not kilobytes.

mod common;

use common::*;

/// Closed connections release their descriptors: after 200 clients come
/// and go, the server holds as many descriptors as before.
#[test]
fn closed_connections_release_their_descriptors() {
    let server =
        ServerProcess::start(&["--mode", "echo", "--log-level", "warn"]);
    let mut probe = connect(server.addr);
    assert_eq!(echo_round(&mut probe, b"baseline"), b"baseline");
    let baseline = server.fd_count();
    let clients: Vec<_> = (0..200).map(|_| connect(server.addr)).collect();
    eventually("200 more descriptors", || server.fd_count() >= baseline + 200);
    drop(clients);
    eventually("descriptors back to the baseline", || {
        server.fd_count() == baseline
    });
    drop(probe);
    let (code, s) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!((s.accepted, s.closed()), (201, 201), "{s}");
}

/// 5,000 idle connections grow the server's RSS by far less than a
/// kilobyte each (the target is 128 bytes; page granularity and the
/// allocator make the bound here generous: 256 bytes).
#[test]
fn idle_connections_cost_bytes_not_kilobytes() {
    const N: usize = 5_000;
    let server =
        ServerProcess::start(&["--mode", "echo", "--log-level", "warn"]);
    let mut probe = connect(server.addr);
    assert_eq!(echo_round(&mut probe, b"warm"), b"warm");
    let before = procfs::rss_kib(server.pid()).unwrap() * 1024;
    let mut clients: Vec<_> = (0..N).map(|_| connect(server.addr)).collect();
    // One round trip on each: every connection is accepted and has been
    // served (its output buffer, if any, freed again).
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(echo_round(c, &[i as u8]), [i as u8]);
    }
    let after = procfs::rss_kib(server.pid()).unwrap() * 1024;
    let per = after.saturating_sub(before) / N as u64;
    eprintln!("rss before {before} after {after}: {per} B/conn");
    assert!(per <= 256, "{per} bytes of RSS per idle connection");
    drop(clients);
    assert_eq!(server.terminate().0, 0);
}
