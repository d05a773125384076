//! Observing echo backpressure from outside: the kernel's queues of both
//! ends of a loopback connection tell how much the server has read and
//! written, so a test can wait for "the server stopped reading this
//! client" instead of guessing it from a quiet spell.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::proc;
use super::wait::PATIENCE;

/// Where the bytes a client wrote are, by the kernel's account.
#[derive(Debug)]
pub struct Queues {
    /// Bytes the server has read and not yet written back.
    pub pending: u64,
    /// Bytes waiting, unread, in the server's receive queue.
    pub unread: u64,
}

/// The queues of the connection `stream` has to a loopback server, given
/// that the client wrote `sent` bytes and read none back. The kernel
/// counts a byte twice while its ACK is delayed (unacked at the sender,
/// queued at the receiver), which only makes `pending` smaller.
pub fn queues(stream: &TcpStream, sent: u64) -> Option<Queues> {
    let (client, server): (SocketAddr, SocketAddr) =
        (stream.local_addr().ok()?, stream.peer_addr().ok()?);
    let ours = proc::tcp_socket(client, server)?;
    let theirs = proc::tcp_socket(server, client)?;
    let read = sent
        .checked_sub(u64::from(ours.tx_queue) + u64::from(theirs.rx_queue))?;
    let written = u64::from(ours.rx_queue) + u64::from(theirs.tx_queue);
    Some(Queues {
        pending: read.saturating_sub(written),
        unread: u64::from(theirs.rx_queue),
    })
}

/// Writes `chunk` over and over without reading until the mio server has
/// stopped reading us: it holds a full output buffer
/// ([`readyloop::OUT_CAP`]) and more input waits unread in its kernel.
/// Gives up after `limit` bytes (returning them) or [`PATIENCE`]. Returns
/// what was written; leaves the stream blocking.
pub fn write_until_stalled(
    stream: &mut TcpStream,
    chunk: &[u8],
    limit: usize,
) -> Vec<u8> {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut sent = Vec::new();
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while sent.len() < limit {
        match stream.write(chunk) {
            Ok(n) => sent.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let stalled =
                    queues(stream, sent.len() as u64).is_some_and(|q| {
                        q.pending == readyloop::OUT_CAP as u64 && q.unread > 0
                    });
                if stalled {
                    break;
                }
                assert!(start.elapsed() < PATIENCE, "never stalled");
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    stream.set_nonblocking(false).expect("blocking");
    sent
}

/// Writes `chunk` over and over without reading until the pipeline to
/// the server, whatever its model, is backed up: our write would block,
/// echoed bytes wait for us, and input waits unread at the server (a
/// blocking model is stuck in its write, the mio model paused at its
/// output cap). Returns what was written; leaves the stream blocking.
pub fn write_until_backed_up(stream: &mut TcpStream, chunk: &[u8]) -> Vec<u8> {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut sent = Vec::new();
    let start = Instant::now();
    loop {
        match stream.write(chunk) {
            Ok(n) => sent.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ours = stream
                    .local_addr()
                    .ok()
                    .zip(stream.peer_addr().ok())
                    .and_then(|(c, s)| proc::tcp_socket(c, s));
                let backed_up = ours.is_some_and(|q| q.rx_queue > 0)
                    && queues(stream, sent.len() as u64)
                        .is_some_and(|q| q.unread > 0);
                if backed_up {
                    break;
                }
                assert!(start.elapsed() < PATIENCE, "never backed up");
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    stream.set_nonblocking(false).expect("blocking");
    sent
}
