//! `--max-connections`: the excess is closed at once and counted, a freed
//! slot serves again; the iterative model queues instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use readyloop::Model;

use crate::support::*;

per_model!(max_connections_rejects_the_excess);

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

/// The iterative model leaves a second client in the listen backlog,
/// its bytes unread, while it serves the first; it serves the second
/// once the first leaves.
fn excess_waits_in_the_backlog(mut server: ServerProcess) {
    let mut first = connect(server.addr);
    assert_eq!(echo_round(&mut first, b"first"), b"first");
    let mut second = connect(server.addr);
    second.write_all(b"second").expect("write");
    let listener = SocketAddr::from(([0, 0, 0, 0], 0));
    let in_backlog = || {
        // A listener's receive queue is its accept queue.
        proc::tcp_socket(server.addr, listener)
            .is_some_and(|l| l.rx_queue == 1)
    };
    eventually("the second client waits in the backlog", in_backlog);
    // Served meanwhile: the first still is, the second still waits.
    assert_eq!(echo_round(&mut first, b"again"), b"again");
    assert!(in_backlog(), "served while another was");
    drop(first);
    let mut buf = [0u8; 6];
    second.read_exact(&mut buf).expect("served once the first left");
    assert_eq!(&buf, b"second");
    wait_count(&mut server, "closed: eof", 1);
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.rejected), (2, 0));
}
