//! Every connection the kernel hands over is counted and closed with a
//! reason, even one that is gone before the server looks at it.

use std::io::Write;

use readyloop::Model;

use crate::support::*;

per_model!(clients_that_reset_before_accept_are_counted);

/// Clients that each send 4 KiB and reset (SO_LINGER 0) before the
/// server accepts them: every one is accepted and closed, none is lost
/// (a completion model's accept brings no address, and `getpeername` on
/// a reset socket fails; the log names such a client `unknown peer`).
fn clients_that_reset_before_accept_are_counted(model: Model) {
    let clients = 50;
    let mut server = serve(model, &["--mode", "echo", "--log-level", "info"]);
    // All connect first, while the server may still be busy, then all
    // reset at once.
    let streams: Vec<_> = (0..clients)
        .map(|_| {
            let mut s = connect(server.addr);
            s.write_all(&[b'r'; 4096]).expect("write");
            s
        })
        .collect();
    for s in streams {
        reset(s);
    }
    wait_count(&mut server, "closed:", clients);
    let summary = stop(server);
    assert_eq!(summary.accepted, clients as u64, "{model}: {summary}");
    assert_eq!(summary.closed(), summary.accepted, "{model}: {summary}");
}
