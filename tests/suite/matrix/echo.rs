//! Echo mode: every byte comes back, in order, whoever else is talking.

use std::io::Write;
use std::net::Shutdown;
use std::thread;

use readyloop::Model;

use crate::support::*;

per_model!(echo_is_exact, half_close_still_gets_every_byte);

/// Every byte sent comes back, in order, to 50 concurrent clients (one
/// after another for the iterative model, which serves one at a time);
/// the mio model's first connections (slab keys 0, 1, 2) are served like
/// the rest, so their tokens never collide with its fixed tokens.
fn echo_is_exact(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let addr = server.addr;
    let client = move |i: u64| {
        let mut s = connect(addr);
        let mut sent = 0;
        for round in 0..20 {
            let len = 1 + (round as usize * 997) % 9000;
            let data = pattern(i * 100 + round, len);
            assert_eq!(echo_round(&mut s, &data), data, "client {i}");
            sent += data.len() as u64;
        }
        sent
    };
    let clients = 50;
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

/// A client that shuts down its write side right after a large send
/// still gets every echoed byte, then a clean EOF (a FIN, not an RST).
fn half_close_still_gets_every_byte(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let mut s = connect(server.addr);
    let data = pattern(7, 3 << 20);
    // Write from another thread: the echo fills our receive buffer long
    // before 3 MiB are sent, and a blocking server waits for us to read.
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
    let len = data.len() as u64;
    assert_eq!(
        (summary.closed_eof, summary.bytes_in, summary.bytes_out),
        (1, len, len)
    );
}
