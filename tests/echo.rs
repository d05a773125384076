//! Echo mode over real loopback sockets: integrity, concurrency, order.

mod common;

use std::thread;

use common::*;
use readyloop::{Mode, Model};

/// Every byte sent comes back, in order, to many concurrent clients; the
/// first connections (slab keys 0, 1, 2) are served like the rest, so
/// their tokens never collide with the listener, waker or signal tokens.
#[test]
fn echo_is_exact_for_concurrent_clients() {
    let server = start_server(config(Model::Mio, Mode::Echo));
    let addr = server.addr;
    let clients: Vec<_> = (0..50)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(addr);
                for round in 0..20 {
                    let data = pattern(
                        i * 100 + round,
                        1 + (round as usize * 997) % 5000,
                    );
                    assert_eq!(echo_round(&mut s, &data), data);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let summary = server.stop().unwrap();
    assert_eq!(summary.accepted, 50);
    assert_eq!(summary.closed(), 50);
    assert_eq!(summary.bytes_in, summary.bytes_out);
}
