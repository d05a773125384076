//! One blocking connection: the read loop, and echo's write loop that
//! never loses track of what it sent.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::config::Mode;
use crate::journal::{self, ChunkLimit};
use crate::log_limit::Bucket;
use crate::net::{interrupted, tcp_state, would_block};
use crate::stats::{Reason, Stats};

use super::deadline::{Armed, Call};
use super::{Context, Stop, Watch};

/// One connection's progress: when bytes last moved, the socket timeout
/// in force, and the stop deadline once a stop was seen.
pub(super) struct Connection<'s> {
    pub(super) stream: &'s TcpStream,
    pub(super) watch: &'s mut dyn Watch,
    pub(super) idle: Option<Duration>,
    /// Last time a byte moved either way (idle bookkeeping): read,
    /// written, or sent by the kernel from what was written earlier.
    pub(super) last: Instant,
    /// When to ask the watch again, for watches with a slice.
    pub(super) next_ask: Instant,
    /// The end of the stop window, once a stop was noticed (now, for a
    /// stop at once).
    pub(super) stop_by: Option<Instant>,
    /// The stop seen so far.
    pub(super) stop: Stop,
    /// The read and write timeouts set on the socket now.
    pub(super) armed: Armed,
    /// Log mode's rate limit of this connection's chunk lines.
    pub(super) bucket: Bucket,
}

impl<'s> Connection<'s> {
    pub(super) fn new(
        stream: &'s TcpStream,
        idle: Option<Duration>,
        watch: &'s mut dyn Watch,
    ) -> Connection<'s> {
        let now = Instant::now();
        Connection {
            stream,
            watch,
            idle,
            last: now,
            next_ask: now,
            stop_by: None,
            stop: Stop::No,
            armed: Armed::default(),
            bucket: Bucket::default(),
        }
    }

    /// Serves the connection until it ends, starting with `first` bytes
    /// already in `cx.buf` (what came with a PROXY header), and says why
    /// it ended.
    pub(super) fn run(
        &mut self,
        peer: SocketAddr,
        first: usize,
        cx: &mut Context<'_>,
    ) -> Reason {
        if first > 0 {
            if let Err(reason) = self.take(peer, first, cx) {
                return reason;
            }
        }
        loop {
            if self.noticed_stop(false) {
                return self.wind_down(cx);
            }
            if let Err(e) = self.arm(Call::Read) {
                return Reason::from_io(e);
            }
            let n = match self.stream.read(cx.buf) {
                Ok(0) => {
                    log::trace!(
                        "{peer} read 0 bytes: EOF, the peer's FIN; state {}",
                        tcp_state(self.stream.as_raw_fd())
                    );
                    return Reason::Eof;
                }
                Ok(n) => {
                    log::trace!("{peer} read {n} bytes");
                    n
                }
                Err(e) if would_block(&e) => match self.expired() {
                    Some(reason) => return reason,
                    None => continue,
                },
                Err(e) if interrupted(&e) => continue, // trap 9
                Err(e) => {
                    log::trace!(
                        "{peer} read: {e}; state {}",
                        tcp_state(self.stream.as_raw_fd())
                    );
                    return Reason::from_io(e);
                }
            };
            if let Err(reason) = self.take(peer, n, cx) {
                return reason;
            }
        }
    }

    /// Logs, echoes or discards `cx.buf[..n]`, just read.
    fn take(
        &mut self,
        peer: SocketAddr,
        n: usize,
        cx: &mut Context<'_>,
    ) -> Result<(), Reason> {
        cx.stats.read(n);
        self.last = Instant::now();
        let chunk = &cx.buf[..n];
        match cx.mode {
            Mode::Log => {
                let mut limit = ChunkLimit {
                    limits: &cx.limits,
                    bucket: &mut self.bucket,
                    stats: cx.stats,
                };
                journal::chunk(peer, chunk, cx.scratch, &mut limit);
                Ok(())
            }
            Mode::Discard => Ok(()),
            Mode::Echo => self.send(peer, chunk, cx.stats),
        }
    }

    /// Writes all of `data`. Unlike `write_all`, it keeps count across
    /// timeouts and interruptions, so a timeout (idle, stop window) never
    /// loses track of what was sent.
    fn send(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        stats: &Stats,
    ) -> Result<(), Reason> {
        let mut sent = 0;
        while sent < data.len() {
            self.noticed_stop(false);
            self.arm(Call::Write).map_err(Reason::from_io)?;
            match self.stream.write(&data[sent..]) {
                Ok(0) => {
                    return Err(Reason::from_io(
                        io::ErrorKind::WriteZero.into(),
                    ))
                }
                // Short when the timeout fired after some progress (it
                // bounds the whole call): the next call is armed anew.
                Ok(n) => {
                    log::trace!("{peer} wrote {n} bytes");
                    stats.wrote(n);
                    sent += n;
                    self.last = Instant::now();
                }
                Err(e) if would_block(&e) => {
                    if let Some(reason) = self.expired() {
                        return Err(reason);
                    }
                }
                Err(e) if interrupted(&e) => {} // trap 9
                // Trap 10: SIGPIPE is ignored, so a dead peer is an EPIPE
                // or ECONNRESET here that ends this connection only.
                Err(e) => {
                    log::trace!("{peer} write: {e}");
                    return Err(Reason::from_io(e));
                }
            }
        }
        Ok(())
    }
}
