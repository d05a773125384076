//! One client of the mio model: a nonblocking socket, its peer address and,
//! only while a write is pending, an output buffer.
//!
//! The handlers never touch the event loop: they do the IO the readiness
//! allows and return a [`Progress`] that tells the loop what happens next.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use crate::config::Mode;
use crate::journal::{self, ChunkLimit};
use crate::net::{interrupted, tcp_state, would_block};
use crate::policy::{OUT_CAP, OVER_BUDGET_STEP};
use crate::stats::{Reason, Traffic};

use super::out::OutBuf;

/// Trap 2: reads per connection per turn, so a fast client cannot starve
/// the others (redis reads 16 KiB per event, libuv 32 reads).
const READS_PER_TURN: usize = 4;

/// What the loop does with a connection after a handler ran.
#[derive(Debug)]
pub enum Progress {
    /// Wait for its next readiness event.
    Waiting,
    /// Its budget ran out with input possibly left: drive it again soon
    /// without waiting for an event (edge-triggered: none would come).
    More,
    /// It is done: deregister, remove, count and log it.
    Closed(Reason),
}

/// Readiness of one event, widened so that hints lead to a read.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// Read now (readable, or the peer closed or errored: trap 8, read to
    /// find out what happened).
    pub readable: bool,
    /// The socket can take output again.
    pub writable: bool,
    /// The peer closed its write side: do not let a short read end the
    /// drain, or the EOF would never be seen (trap 1).
    pub read_closed: bool,
}

impl Ready {
    /// A wake-up without an event (budget retry, start of shutdown).
    pub const ANY: Ready =
        Ready { readable: true, writable: true, read_closed: false };

    /// The readiness of a mio event.
    pub fn of(event: &mio::event::Event) -> Ready {
        Ready {
            readable: event.is_readable()
                || event.is_read_closed()
                || event.is_error(),
            writable: event.is_writable() || event.is_write_closed(),
            read_closed: event.is_read_closed(),
        }
    }
}

/// What a handler may use besides its own connection: the loop's one
/// shared read buffer, the log scratch string, the counters and its share
/// of the output budget.
#[derive(Debug)]
pub struct Io<'a> {
    /// The read buffer shared by all connections.
    pub buf: &'a mut [u8],
    /// Reused for escaping logged chunks.
    pub scratch: &'a mut String,
    /// Bytes moved, added to the server's counters after the turn.
    pub traffic: &'a mut Traffic,
    /// What to do with input.
    pub mode: Mode,
    /// In log mode, the rate limits of this connection's chunk lines.
    pub limit: Option<ChunkLimit<'a>>,
    /// Set when any byte moved in either direction (idle bookkeeping).
    pub moved: bool,
    /// Bytes of output buffer this connection may still allocate: what
    /// is left of `--max-output-memory`. The loop accounts for what was
    /// allocated from [`Connection::held`] before and after.
    pub allowance: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading and serving.
    Open,
    /// The client sent EOF; flush what is pending, then close as `eof`.
    HalfClosed,
    /// The server is stopping: flush, then close or linger.
    Stopping,
    /// Our FIN is sent; read and discard until the client's EOF.
    Lingering,
}

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Unsent output, allocated only while a write would block (trap 7).
    out: Option<Box<OutBuf>>,
    phase: Phase,
    /// Reading stopped at [`OUT_CAP`] or at the output budget with input
    /// possibly still queued. Either way output is pending, so the
    /// WRITABLE edge that comes when the client reads resumes it.
    paused: bool,
    /// An event said the peer closed its write side. Sticky, because the
    /// edge that said so is gone once seen: a later resume (budget retry,
    /// end of a pause) must still read on to the EOF (trap 1).
    peer_closed: bool,
}

impl Connection {
    /// Wraps an accepted socket.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Connection {
        Connection {
            stream,
            peer,
            out: None,
            phase: Phase::Open,
            paused: false,
            peer_closed: false,
        }
    }

    /// The socket, to register and deregister it.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client a PROXY header named becomes the peer.
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
    }

    /// Serves `io.buf[..n]`, the client's first bytes, which came in the
    /// same read as its PROXY header.
    pub fn first_bytes(&mut self, io: &mut Io<'_>, n: usize) -> Progress {
        io.traffic.bytes_in += n as u64;
        io.moved = true;
        match self.consume(io, n) {
            Ok(()) => Progress::Waiting,
            Err(e) => Progress::Closed(Reason::from_io(e)),
        }
    }

    /// Which phase the connection is in, as a number: the trace tells a
    /// turn that changed it (a read of 0) from one that did nothing.
    pub fn phase_tag(&self) -> u8 {
        self.phase as u8
    }

    /// Bytes of memory its pending output holds (the buffer's capacity
    /// and its box), for the output budget.
    pub fn held(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.held())
    }

    /// Handles readiness and reports what the loop should do next.
    pub fn on_ready(&mut self, io: &mut Io<'_>, ready: Ready) -> Progress {
        match self.phase {
            Phase::Open | Phase::HalfClosed => self.serve(io, ready),
            Phase::Stopping | Phase::Lingering => self.wind_down(io),
        }
    }

    /// The server is stopping: stop reading, and from now on flush and
    /// close (see [`Connection::on_ready`]).
    pub fn stop(&mut self) {
        self.phase = Phase::Stopping;
    }

    fn serve(&mut self, io: &mut Io<'_>, ready: Ready) -> Progress {
        self.peer_closed |= ready.read_closed;
        if ready.writable && self.out.is_some() {
            if let Err(e) = self.flush(io) {
                return Progress::Closed(Reason::from_io(e));
            }
        }
        if self.phase == Phase::HalfClosed {
            return self.close_when_flushed(Reason::Eof);
        }
        // A paused connection was not drained, so no read edge will come
        // for what is queued (trap 1): read now that output has room.
        if !(ready.readable || self.paused) {
            return Progress::Waiting;
        }
        self.paused = false;
        self.read_some(io)
    }

    fn read_some(&mut self, io: &mut Io<'_>) -> Progress {
        let mut reads = 0;
        while reads < READS_PER_TURN {
            let room = match io.mode {
                Mode::Echo => self.echo_room(io.allowance),
                Mode::Log | Mode::Discard => io.buf.len(),
            }
            .min(io.buf.len());
            if room == 0 {
                // Echo backpressure: the client is not reading, and its
                // output reached OUT_CAP or the budget; leave its input in
                // the kernel until the output drains.
                self.paused = true;
                log::trace!(
                    "{} output full: reading paused until it drains",
                    self.peer
                );
                return Progress::Waiting;
            }
            match self.stream.read(&mut io.buf[..room]) {
                Ok(0) => {
                    log::trace!(
                        "{} read 0 bytes: EOF, the peer's FIN; state {}",
                        self.peer,
                        tcp_state(self.stream.as_raw_fd())
                    );
                    self.phase = Phase::HalfClosed;
                    return self.close_when_flushed(Reason::Eof);
                }
                Ok(n) => {
                    log::trace!("{} read {n} bytes", self.peer);
                    reads += 1;
                    io.traffic.bytes_in += n as u64;
                    io.moved = true;
                    if let Err(e) = self.consume(io, n) {
                        return Progress::Closed(Reason::from_io(e));
                    }
                    // Trap 1: a short read means the socket is drained
                    // (epoll will report new data as a new edge), unless
                    // the peer closed: then read on to see the EOF.
                    if n < room && !self.peer_closed {
                        log::trace!(
                            "{} short read: drained (trap 1)",
                            self.peer
                        );
                        return Progress::Waiting;
                    }
                }
                Err(e) if would_block(&e) => {
                    log::trace!(
                        "{} read: would block: drained (trap 1)",
                        self.peer
                    );
                    return Progress::Waiting;
                }
                Err(e) if interrupted(&e) => continue, // trap 9
                Err(e) => {
                    log::trace!(
                        "{} read: {e}; state {}",
                        self.peer,
                        tcp_state(self.stream.as_raw_fd())
                    );
                    return Progress::Closed(Reason::from_io(e));
                }
            }
        }
        // Trap 2: budget spent, input may remain; the loop comes back.
        log::trace!(
            "{} {READS_PER_TURN} reads this turn: the others go first \
             (trap 2)",
            self.peer
        );
        Progress::More
    }

    /// How much an echo read may take: no more than the output buffer
    /// can hold, within [`OUT_CAP`] and the budget's `allowance`.
    fn echo_room(&self, allowance: usize) -> usize {
        match &self.out {
            // Writes block: everything read now is buffered.
            Some(out) => {
                let held = out.pending().len();
                (OUT_CAP - held).min(out.spare() + allowance)
            }
            // Writes go through, but this one may block, and then what
            // is left of the read must be kept: a full chunk while the
            // budget can hold it, past that a small step.
            None if allowance >= OUT_CAP => OUT_CAP,
            None => allowance.max(OVER_BUDGET_STEP),
        }
    }

    fn consume(&mut self, io: &mut Io<'_>, n: usize) -> io::Result<()> {
        match io.mode {
            Mode::Log => {
                if let Some(limit) = &mut io.limit {
                    journal::chunk(self.peer, &io.buf[..n], io.scratch, limit);
                }
                Ok(())
            }
            Mode::Discard => Ok(()),
            Mode::Echo => self.echo(io, n),
        }
    }

    /// Writes `io.buf[..n]` back, keeping whatever the socket does not
    /// take. Output already waiting goes first, so bytes stay in order.
    fn echo(&mut self, io: &mut Io<'_>, n: usize) -> io::Result<()> {
        let data = &io.buf[..n];
        if let Some(out) = &mut self.out {
            out.push(data, &mut io.allowance);
            return Ok(());
        }
        let sent = write_some(&mut self.stream, self.peer, data, io.traffic)?;
        if sent < n {
            // Trap 7: `write_all` would lose this on WouldBlock; keep it
            // and finish on the WRITABLE event.
            let mut out = Box::new(OutBuf::default());
            out.push(&data[sent..], &mut io.allowance);
            self.out = Some(out);
            log::trace!(
                "{} {} bytes kept: waiting for writable (trap 7)",
                self.peer,
                n - sent
            );
        }
        io.moved |= sent > 0;
        Ok(())
    }

    /// Writes pending output until it is gone or the socket is full; the
    /// buffer is freed once empty, so idle connections hold none.
    fn flush(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        let Some(out) = &mut self.out else { return Ok(()) };
        let peer = self.peer;
        let sent =
            write_some(&mut self.stream, peer, out.pending(), io.traffic)?;
        io.moved |= sent > 0;
        if out.consume(sent) {
            self.out = None;
            log::trace!("{peer} output drained: writable no longer needed");
        }
        Ok(())
    }

    fn close_when_flushed(&self, reason: Reason) -> Progress {
        match self.out {
            None => Progress::Closed(reason),
            Some(_) => Progress::Waiting,
        }
    }

    /// Shutdown: flush what is pending, then close. If the client left
    /// input unread at the server, a close() would send an RST that makes
    /// the client's kernel drop the output we just flushed, so instead
    /// linger as nginx does: send our FIN and discard input until the
    /// client's EOF (or the loop's stop deadline).
    fn wind_down(&mut self, io: &mut Io<'_>) -> Progress {
        if let Err(e) = self.flush(io) {
            return Progress::Closed(Reason::from_io(e));
        }
        if self.out.is_some() {
            return Progress::Waiting;
        }
        for _ in 0..READS_PER_TURN {
            match self.stream.read(io.buf) {
                Ok(0) => return Progress::Closed(Reason::Shutdown),
                Ok(n) => {
                    io.traffic.bytes_in += n as u64;
                    io.moved = true;
                    if self.phase == Phase::Stopping {
                        self.phase = Phase::Lingering;
                        let _ = self.stream.shutdown(Shutdown::Write);
                        log::trace!(
                            "{} unread input at the stop: shutdown(Write) \
                             sent our FIN, lingering (trap 17); state {}",
                            self.peer,
                            tcp_state(self.stream.as_raw_fd())
                        );
                    }
                }
                Err(e) if would_block(&e) => {
                    return match self.phase {
                        Phase::Lingering => Progress::Waiting,
                        _ => Progress::Closed(Reason::Shutdown),
                    };
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => return Progress::Closed(Reason::from_io(e)),
            }
        }
        Progress::More
    }
}

/// Writes as much of `data` as the socket takes now; counts what went.
fn write_some(
    stream: &mut TcpStream,
    peer: SocketAddr,
    data: &[u8],
    traffic: &mut Traffic,
) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match stream.write(&data[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                log::trace!("{peer} wrote {n} bytes");
                traffic.bytes_out += n as u64;
                sent += n;
            }
            Err(e) if would_block(&e) => {
                log::trace!("{peer} write: would block");
                break;
            }
            Err(e) if interrupted(&e) => {}
            // Trap 10: SIGPIPE is ignored, so a dead peer is an EPIPE or
            // ECONNRESET here that ends this connection and nothing else.
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests;
