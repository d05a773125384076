//! The two threads of `readyloop client` that move bytes: stdin to the
//! socket, the socket to stdout. Each is a blocking loop that copies
//! until its side ends, then reports how on the channel and returns;
//! what that means for the connection is the main thread's to decide.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;

/// One read's worth: as much as a loopback socket usually has ready.
const CHUNK: usize = 64 * 1024;

/// How a side of the connection ended.
#[derive(Debug)]
pub(super) enum Event {
    /// stdin ended (EOF); everything read from it was sent.
    StdinEnd,
    /// Reading stdin failed.
    StdinFailed(io::Error),
    /// Sending failed: the peer closed or reset the connection.
    SendFailed(io::Error),
    /// A read returned 0 bytes: the peer's FIN.
    PeerFin,
    /// A read failed with ECONNRESET: the peer's RST.
    PeerReset,
    /// A read failed another way (a timeout of the kernel's retries).
    ReceiveFailed(io::Error),
    /// stdout's reader has gone (EPIPE: Rust ignores SIGPIPE).
    StdoutGone,
    /// Writing stdout failed another way.
    StdoutFailed(io::Error),
}

/// Bytes each way: sent is what the kernel took from us, received what
/// it gave us.
#[derive(Debug, Default)]
pub(super) struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Counts {
    /// (sent, received) so far.
    pub(super) fn get(&self) -> (u64, u64) {
        (self.sent.load(Relaxed), self.received.load(Relaxed))
    }
}

/// Starts copying stdin to `socket`.
pub(super) fn upload(
    mut socket: TcpStream,
    counts: Arc<Counts>,
    events: Sender<Event>,
) -> io::Result<()> {
    let copy = move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0; CHUNK];
        let end = loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break Event::StdinEnd,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Event::StdinFailed(e),
            };
            // A blocking socket: write_all waits for room, so nothing is
            // lost (trap 7 is a nonblocking socket's).
            if let Err(e) = socket.write_all(&buf[..n]) {
                break Event::SendFailed(e);
            }
            counts.sent.fetch_add(n as u64, Relaxed);
        };
        let _ = events.send(end);
    };
    thread::Builder::new().name("upload".into()).spawn(copy).map(drop)
}

/// Starts copying `socket` to stdout.
pub(super) fn download(
    mut socket: TcpStream,
    counts: Arc<Counts>,
    events: Sender<Event>,
) -> io::Result<()> {
    let copy = move || {
        let mut stdout = io::stdout().lock();
        let mut buf = vec![0; CHUNK];
        let end = loop {
            let n = match socket.read(&mut buf) {
                Ok(0) => break Event::PeerFin,
                Ok(n) => n,
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::ConnectionReset => break Event::PeerReset,
                    _ => break Event::ReceiveFailed(e),
                },
            };
            counts.received.fetch_add(n as u64, Relaxed);
            // Flushed at once: a line-oriented reader (a terminal, a
            // test) sees each reply as it comes, not at exit.
            let written =
                stdout.write_all(&buf[..n]).and_then(|()| stdout.flush());
            match written {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    break Event::StdoutGone;
                }
                Err(e) => break Event::StdoutFailed(e),
            }
        };
        let _ = events.send(end);
    };
    thread::Builder::new().name("download".into()).spawn(copy).map(drop)
}
