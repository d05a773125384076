//! One client connection: moves its bytes as far as the socket allows
//! and applies the pattern's rule whenever the echo reaches the goal.
//! The same traps apply as in the server (docs/loop.md, docs/traps.md):
//! edge-triggered readiness means every read and write goes on until
//! `WouldBlock`, or the connection asks to be driven again this turn.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

use super::out::say;
use super::pattern::{AtGoal, Pattern};
use super::report::Tally;
use super::verify::Sequence;
use crate::net::{interrupted, would_block};

/// Bytes one write may take from the sequence.
const WRITE_CHUNK: usize = 64 * 1024;
/// Writes per connection per pass (fairness, trap 2).
const WRITES_PER_PASS: usize = 4;
/// Read-then-write passes per connection per wake-up (fairness): past
/// it the connection goes on the `again` list.
const PASSES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// The connect is in progress.
    Connecting,
    /// Connected and following the pattern.
    Running,
    /// Idle pattern: proven by one echoed byte, now only held.
    Held,
}

/// One client connection and where it is in its byte sequence.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) seq: Sequence,
    pub(super) sent: u64,
    pub(super) echoed: u64,
    pub(super) goal: u64,
    pub(super) phase: Phase,
    /// Start of the current round trip (or of the connect).
    pub(super) started: Instant,
    /// Round trips this connection completed (pingpong), for the
    /// fairness figure.
    pub(super) rounds: u64,
    /// Since when it has been waiting without progress (see
    /// [`Conn::waiting`]).
    pub(super) since: Instant,
}

impl Conn {
    /// Whether the connection waits for something from the server: its
    /// connect to complete, or the echo of bytes it sent. Only then can
    /// it stall. (A send that cannot go on always has unechoed bytes
    /// behind it, so a blocked send is waiting for the echo too.)
    pub(super) fn waiting(&self) -> bool {
        self.phase == Phase::Connecting || self.echoed < self.sent
    }
}

/// What the worker does with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing to do until the next event.
    Wait,
    /// Budget spent with work left: drive again this turn.
    Again,
    /// Done (connect pattern): close and open a fresh one.
    Reconnect,
    /// Broken: close and count.
    Failed(Failure),
}

/// How a connection broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The connect failed.
    Connect,
    /// Reset, unexpected EOF, or another IO error.
    Io,
    /// The echo differed from what was sent.
    Mismatch,
    /// No progress for `--stall-timeout`.
    Stall,
}

/// What driving a connection may touch besides the connection.
pub(super) struct Io<'a> {
    pub(super) buf: &'a mut [u8],
    pub(super) tally: &'a mut Tally,
    pub(super) pattern: Pattern,
    pub(super) size: u64,
}

/// Says why the first connection of a thread broke; later ones are only
/// counted, so a dead server does not flood stderr.
pub(super) fn log_first_error(tally: &Tally, why: fmt::Arguments<'_>) {
    if tally.errors() == 0 {
        say(format_args!("load: {why}"));
    }
}

/// Moves bytes on one connection until the socket has nothing more to
/// give or take now, then reports what should happen next. `closing`:
/// the event said the server closed its side (trap 8: read to see).
pub(super) fn drive(conn: &mut Conn, io: &mut Io<'_>, closing: bool) -> Step {
    if conn.phase == Phase::Connecting {
        match connected(&conn.stream) {
            Ok(true) => conn.phase = Phase::Running,
            Ok(false) => return Step::Wait,
            Err(e) => {
                log_first_error(io.tally, format_args!("connect failed: {e}"));
                return Step::Failed(Failure::Connect);
            }
        }
    }
    for _ in 0..PASSES {
        // Read first: an echo may complete a round and move the goal, so
        // the send that follows can start the next round at once.
        let drained = match receive(conn, io, closing) {
            Ok(Received::Drained) => true,
            Ok(Received::More) => false,
            Ok(Received::Reconnect) => return Step::Reconnect,
            Err(failure) => return Step::Failed(failure),
        };
        let sent_all = match send(conn) {
            Ok(done) => done,
            Err(e) => {
                log_first_error(io.tally, format_args!("write failed: {e}"));
                return Step::Failed(Failure::Io);
            }
        };
        // Reads are drained and writes went on until WouldBlock or the
        // goal: the next edge will wake us (trap 1).
        if drained && sent_all {
            return Step::Wait;
        }
    }
    Step::Again
}

/// Whether a nonblocking connect has completed (mio's recipe: an error
/// means it failed, a peer address means it is up).
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes the sequence up to the goal, until `WouldBlock` (trap 3 and
/// trap 7: what the socket does not take is simply sent later, from the
/// same offset). False when the write budget ran out first (trap 2).
fn send(conn: &mut Conn) -> io::Result<bool> {
    let mut budget = WRITES_PER_PASS;
    while conn.sent < conn.goal {
        if budget == 0 {
            return Ok(false);
        }
        budget -= 1;
        let want = (conn.goal - conn.sent).min(WRITE_CHUNK as u64) as usize;
        match conn.stream.write(conn.seq.bytes(conn.sent, want)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.sent += n as u64;
            }
            Err(e) if would_block(&e) => break,
            Err(e) if interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

enum Received {
    /// Nothing more to read now.
    Drained,
    /// The read budget ran out; more may be queued.
    More,
    /// The pattern wants a fresh connection.
    Reconnect,
}

/// Reads echoes until `WouldBlock` or a short read (or a budget),
/// verifies each byte and applies the pattern's rule whenever the echo
/// reaches the goal.
fn receive(
    conn: &mut Conn,
    io: &mut Io<'_>,
    closing: bool,
) -> Result<Received, Failure> {
    for _ in 0..4 {
        let n = match conn.stream.read(io.buf) {
            // The server closed a connection we still use.
            Ok(0) => {
                let why = "server closed the connection";
                log_first_error(io.tally, format_args!("read failed: {why}"));
                return Err(Failure::Io);
            }
            Ok(n) => n,
            Err(e) if would_block(&e) => return Ok(Received::Drained),
            Err(e) if interrupted(&e) => continue, // trap 9
            Err(e) => {
                log_first_error(io.tally, format_args!("read failed: {e}"));
                return Err(Failure::Io);
            }
        };
        let data = &io.buf[..n];
        let before = conn.echoed;
        // More back than was sent, or other bytes than were sent.
        if before + n as u64 > conn.sent || !conn.seq.matches(before, data) {
            let why = "echoed bytes differ from those sent";
            log_first_error(io.tally, format_args!("{why}"));
            return Err(Failure::Mismatch);
        }
        conn.echoed += n as u64;
        io.tally.bytes += n as u64;
        io.tally.messages += io.pattern.streamed(io.size, before, conn.echoed);
        if conn.echoed >= conn.goal && at_goal(conn, io) {
            return Ok(Received::Reconnect);
        }
        // Trap 1: a short read means the socket is drained (a new echo
        // is a new edge), unless the server's FIN came with this edge:
        // then read on to see the EOF.
        if n < io.buf.len() && !closing {
            return Ok(Received::Drained);
        }
    }
    Ok(Received::More)
}

/// The echo reached the goal: apply the pattern's rule. True when the
/// connection should be replaced by a fresh one.
fn at_goal(conn: &mut Conn, io: &mut Io<'_>) -> bool {
    let now = Instant::now();
    let took = now.duration_since(conn.started);
    match io.pattern.at_goal() {
        AtGoal::NextRound => {
            io.tally.messages += 1;
            conn.rounds += 1;
            io.tally.latency.saturating_record(took.as_nanos() as u64);
            conn.goal += io.size;
            conn.started = now;
            false
        }
        AtGoal::Hold => {
            io.tally.messages += 1;
            conn.phase = Phase::Held;
            false
        }
        AtGoal::Reconnect => {
            io.tally.messages += 1;
            io.tally.latency.saturating_record(took.as_nanos() as u64);
            true
        }
    }
}
