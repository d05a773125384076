//! The handlers of one connection, over loopback.

use std::net::TcpListener;

use super::*;
use crate::policy::OVER_BUDGET_STEP;

/// A connected pair over loopback: a std client and the server side
/// as a nonblocking mio stream wrapped in a [`Connection`].
fn pair() -> (std::net::TcpStream, Connection) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client =
        std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, peer) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (client, Connection::new(TcpStream::from_std(server), peer))
}

fn drive(conn: &mut Connection, mode: Mode, ready: Ready) -> Progress {
    let mut traffic = Traffic::default();
    let mut buf = vec![0; 64 * 1024];
    let mut scratch = String::new();
    let mut io = Io {
        buf: &mut buf,
        scratch: &mut scratch,
        traffic: &mut traffic,
        mode,
        limit: None,
        moved: false,
        allowance: usize::MAX,
    };
    conn.on_ready(&mut io, ready)
}

/// Trap 2: with more queued than the budget, one turn reads only the
/// budget and asks to be driven again.
#[test]
fn a_full_socket_yields_after_its_budget() {
    let (mut client, mut conn) = pair();
    let chunk = 1024;
    let queued = vec![7u8; 2 * READS_PER_TURN * chunk];
    client.write_all(&queued).unwrap();
    // Wait until all of it is queued at the server, so every read of
    // the turn is a full one.
    let mut peek = vec![0; queued.len()];
    for _ in 0..1000 {
        if conn.stream.peek(&mut peek).unwrap_or(0) == queued.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut traffic = Traffic::default();
    let mut buf = vec![0; chunk];
    let mut scratch = String::new();
    let mut io = Io {
        buf: &mut buf,
        scratch: &mut scratch,
        traffic: &mut traffic,
        mode: Mode::Discard,
        limit: None,
        moved: false,
        allowance: usize::MAX,
    };
    let progress = conn.on_ready(&mut io, Ready::ANY);
    assert!(matches!(progress, Progress::More), "{progress:?}");
    assert_eq!(traffic.bytes_in, (READS_PER_TURN * chunk) as u64);
}

/// Past the output budget (no allowance left), a connection whose
/// echo blocks keeps only what its last small read left over, then
/// stops reading: it cannot add a full buffer past the budget.
#[test]
fn past_the_budget_a_blocked_echo_holds_only_a_small_step() {
    let (mut client, mut conn) = pair();
    let small = 4096;
    socket2::SockRef::from(&conn.stream).set_send_buffer_size(small).unwrap();
    socket2::SockRef::from(&client).set_recv_buffer_size(small).unwrap();
    client.set_nonblocking(true).unwrap();
    let chunk = [1u8; 16 * 1024];
    let mut buf = vec![0; 64 * 1024];
    let mut scratch = String::new();
    let mut traffic = Traffic::default();
    for _ in 0..10_000 {
        let _ = client.write(&chunk); // what it takes; never reads
        let mut io = Io {
            buf: &mut buf,
            scratch: &mut scratch,
            traffic: &mut traffic,
            mode: Mode::Echo,
            moved: false,
            limit: None,
            allowance: 0,
        };
        conn.on_ready(&mut io, Ready::ANY);
        if conn.paused {
            break;
        }
    }
    assert!(conn.paused, "never stopped reading");
    let most = std::mem::size_of::<super::OutBuf>() + OVER_BUDGET_STEP;
    assert!(conn.held() <= most, "holds {} > {most}", conn.held());
}

/// Trap 1: once an event said the peer closed, a later wake-up
/// without that flag (a budget retry) must not stop at a short read;
/// it reads on to the EOF, which no new edge would announce.
#[test]
fn a_seen_peer_close_is_not_forgotten_by_a_retry() {
    let (mut client, mut conn) = pair();
    client.write_all(b"last words").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    // An event that only says the peer closed (no read now)...
    let closed = Ready { readable: false, writable: false, read_closed: true };
    assert!(matches!(
        drive(&mut conn, Mode::Discard, closed),
        Progress::Waiting
    ));
    // ...then a wake-up without the flag: it must still see the EOF.
    match drive(&mut conn, Mode::Discard, Ready::ANY) {
        Progress::Closed(Reason::Eof) => {}
        other => panic!("expected eof, got {other:?}"),
    }
}
