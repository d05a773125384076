//! The idle contract, at its two edges: a connection is idle when nothing
//! moved in either direction for `--idle-timeout` (bytes the kernel
//! still delivers from the server's send buffer count as moving). A
//! client that sends and never reads stops moving once both directions
//! are blocked, and is closed as idle; a slow reader that keeps taking
//! bytes is never cut.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use readyloop::Model;
use socket2::{Domain, Protocol, Socket, Type};

use crate::support::*;

per_model!(
    a_client_that_never_reads_is_closed_as_idle,
    a_slow_reader_is_never_cut
);

/// `--idle-timeout` in these tests.
const IDLE: Duration = Duration::from_secs(1);
/// How long after its writes stop moving the client that never reads
/// must see its connection closed: the timeout, one second the contract
/// allows the server for its bookkeeping, and two seconds for a loaded
/// CI machine. A bounded wait, not a measurement: the figure is printed.
const CLOSED_WITHIN: Duration = Duration::from_secs(1 + 1 + 2);
/// What the slow reader sends and must get back.
const SLOW_ECHO: usize = 1 << 20;
/// Its receive buffer, and what it reads each time.
const SLOW_READ: usize = 16 * 1024;
/// How often it reads: ten times within the idle timeout.
const SLOW_PACE: Duration = Duration::from_millis(100);

/// A client that writes without pause (nonblocking, retrying whenever
/// its socket has room) and never reads is closed as idle
/// (`closed_idle`) within the timeout (plus slack) of the moment its
/// writes stopped making progress, and sees the close as an EOF or a
/// reset.
fn a_client_that_never_reads_is_closed_as_idle(model: Model) {
    let idle = IDLE.as_secs().to_string();
    let mut server =
        serve(model, &["--mode", "echo", "--idle-timeout", &idle]);
    let mut s = connect(server.addr);
    s.set_nonblocking(true).expect("nonblocking");
    let chunk = pattern(1, 64 * 1024);
    let start = Instant::now();
    let mut moved = start;
    let closed = loop {
        match s.write(&chunk) {
            Ok(0) => break "a write of 0 bytes".to_string(),
            Ok(_) => moved = Instant::now(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break format!("write: {e}"),
        }
        if let Some(how) = wait_writable_or_closed(&s) {
            break how;
        }
        assert!(
            start.elapsed() < PATIENCE + CLOSED_WITHIN,
            "{model}: the client's writes never stopped moving"
        );
        let quiet = moved.elapsed();
        assert!(
            quiet < CLOSED_WITHIN,
            "{model}: still open {quiet:?} after its writes stopped moving \
             (--idle-timeout {IDLE:?})"
        );
    };
    eprintln!(
        "{model}: closed as {closed:?} {:?} after the client's writes \
         stopped moving",
        moved.elapsed()
    );
    wait_count(&mut server, "closed: idle", 1);
    let summary = stop(server);
    assert_eq!(
        (summary.accepted, summary.closed_idle),
        (1, 1),
        "{model}: {summary}"
    );
}

/// Waits at most 10 ms for `s` to have room for a write or to be closed
/// by the server; says how it was closed (the peer's FIN, or a reset).
fn wait_writable_or_closed(s: &TcpStream) -> Option<String> {
    let mut fd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLOUT | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `fd` is one valid pollfd for the length of the call.
    let n = unsafe { libc::poll(&mut fd, 1, 10) };
    if n <= 0 {
        return None;
    }
    if fd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        let error = s.take_error().ok().flatten();
        return Some(format!("reset ({error:?})"));
    }
    (fd.revents & libc::POLLRDHUP != 0).then(|| "the server's FIN".into())
}

/// A reader far slower than its writer (a 16 KiB receive buffer, 16 KiB
/// taken every 100 ms while another thread writes 1 MiB) keeps its
/// connection through several idle timeouts while its echo trickles out
/// of the server: every byte arrives, in order, and once it half-closes
/// the connection ends as `eof`, never as `idle`.
fn a_slow_reader_is_never_cut(model: Model) {
    let idle = IDLE.as_secs().to_string();
    let mut server =
        serve(model, &["--mode", "echo", "--idle-timeout", &idle]);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .expect("socket");
    // Before connect, so the window the client offers starts small.
    socket.set_recv_buffer_size(SLOW_READ).expect("SO_RCVBUF");
    socket.connect(&server.addr.into()).expect("connect");
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    s.set_write_timeout(Some(PATIENCE)).expect("write timeout");

    let data = counting(SLOW_ECHO);
    let mut writer = s.try_clone().expect("clone");
    let sent = data.clone();
    let writing = thread::spawn(move || writer.write_all(&sent));
    let mut back = Vec::with_capacity(SLOW_ECHO);
    let mut buf = vec![0; SLOW_READ];
    while back.len() < SLOW_ECHO {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("{model}: read after {} bytes: {e}", back.len()),
        }
        // The pace of a slow reader, not a wait for anything.
        thread::sleep(SLOW_PACE);
    }
    writing.join().expect("writer").expect("write");
    if let Some(at) = back.iter().zip(&data).position(|(a, b)| a != b) {
        panic!("{model}: the echo differs at byte {at}");
    }
    assert_eq!(back.len(), SLOW_ECHO, "{model}: the echo was cut short");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let (rest, clean) = read_to_end(&mut s);
    assert!(rest.is_empty() && clean, "{model}: no clean close after eof");
    wait_count(&mut server, " closed: ", 1);
    let summary = stop(server);
    assert_eq!(
        (summary.closed_eof, summary.closed_idle),
        (1, 0),
        "{model}: {summary}"
    );
}

/// `len` bytes of consecutive big-endian `u32`s: a misplaced, lost or
/// repeated chunk of the echo shows as a wrong count.
fn counting(len: usize) -> Vec<u8> {
    (0u32..).flat_map(u32::to_be_bytes).take(len).collect()
}
