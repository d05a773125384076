//! Echo backpressure: a client that sends and never reads cannot make the
//! server buffer without bound, and gets every byte once it reads.

mod common;

use std::io::Read;

use common::*;
use readyloop::{Mode, Model};

/// Far more than every buffer on the path together (kernel socket
/// buffers on both ends, at most a few MiB each on loopback, plus the
/// server's 64 KiB output cap).
const LIMIT: usize = 64 << 20;

/// A client that writes without reading stalls (the server stops reading
/// it); other clients are still served; once the client reads, every byte
/// comes back in order and the stalled stream resumes.
#[test]
fn a_client_that_never_reads_is_throttled_not_buffered() {
    let server = start_server(config(Model::Mio, Mode::Echo));
    let mut hog = connect(server.addr);
    let sent = write_until_stalled(&mut hog, &pattern(1, 64 * 1024), LIMIT);
    assert!(
        sent.len() < LIMIT,
        "the server kept reading a client that never reads ({} bytes)",
        sent.len()
    );

    // Meanwhile another client is served normally.
    let mut other = connect(server.addr);
    assert_eq!(echo_round(&mut other, b"still here"), b"still here");

    // Now read: every byte comes back, in order, and writing resumes.
    let mut back = vec![0; sent.len()];
    hog.read_exact(&mut back).unwrap();
    assert!(back == sent, "echo differs after the stall");
    assert_eq!(echo_round(&mut hog, b"resumed"), b"resumed");
    drop((hog, other));
    let s = server.stop().unwrap();
    assert_eq!(s.bytes_in, s.bytes_out);
    assert_eq!(s.bytes_in, sent.len() as u64 + 7 + 10);
}
