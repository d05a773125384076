//! One client thread: a `mio::Poll` over a slab of connections, driven
//! by the rules of the pattern. The same traps apply as in the server
//! (README, "how the loop works"): edge-triggered readiness means every
//! read and write goes on until `WouldBlock`, or the connection is put on
//! the `again` list and the next poll does not block.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::args::Plan;
use super::pattern::{AtGoal, Pattern};
use super::report::{Live, Tally};
use super::verify::Sequence;
use super::LoadError;
use crate::net::{interrupted, would_block};

/// The read buffer all connections of a thread share.
const READ_BUF: usize = 64 * 1024;
/// Bytes one write may take from the sequence.
const WRITE_CHUNK: usize = 64 * 1024;
/// Writes per connection per pass (fairness, trap 2).
const WRITES_PER_PASS: usize = 4;
/// Read-then-write passes per connection per wake-up (fairness): past
/// it the connection goes on the `again` list.
const PASSES: usize = 8;
/// Connections opened but not yet answered (no echoed byte yet) at once.
/// This paces opening to the rate the server accepts: a burst would
/// overflow its accept queue, and a dropped SYN or handshake ACK costs a
/// 1 s retransmit.
const MAX_OPENING: usize = 256;
/// Longest a poll blocks, so the deadline is never overslept by much.
const TICK: Duration = Duration::from_millis(100);
/// A `--messages` run that makes no progress for this long gives up.
const STALL: Duration = Duration::from_secs(10);

/// One thread's share of the run.
#[derive(Debug)]
pub(crate) struct Share {
    /// Seeds (and source-address turns) of this share: `first`,
    /// `first + step`, ...
    pub first: u64,
    /// Distance between this thread's seeds (the thread count).
    pub step: u64,
    /// Connections this thread keeps open.
    pub count: u64,
    /// Messages this thread completes before it stops, if counted.
    pub quota: Option<u64>,
    /// When this thread stops, if timed.
    pub deadline: Option<Instant>,
    /// Idle pattern: once every connection of the share is held (or has
    /// failed), hold this long, then stop (`deadline` is then only the
    /// time to give up establishing them).
    pub hold: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Running,
    Held,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    seq: Sequence,
    sent: u64,
    echoed: u64,
    goal: u64,
    phase: Phase,
    /// Start of the current round trip (or of the connect).
    started: Instant,
}

/// What the worker does with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing to do until the next event.
    Wait,
    /// Budget spent with work left: drive again this turn.
    Again,
    /// Done (connect pattern): close and open a fresh one.
    Reconnect,
    /// Broken: close and count.
    Failed(Failure),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Connect,
    Io,
    Mismatch,
}

/// What driving a connection may touch besides the connection.
struct Io<'a> {
    buf: &'a mut [u8],
    tally: &'a mut Tally,
    pattern: Pattern,
    size: u64,
}

/// Runs one client thread's share to its end and returns its tally.
pub(crate) fn run(
    plan: &Plan,
    share: Share,
    live: &Live,
) -> Result<Tally, LoadError> {
    let poll = Poll::new().map_err(LoadError::setup("create a poll"))?;
    let mut worker = Worker {
        plan,
        live,
        poll,
        conns: Slab::with_capacity(share.count.min(1 << 20) as usize),
        buf: vec![0; READ_BUF].into_boxed_slice(),
        tally: Tally::default(),
        again: Vec::new(),
        to_open: share.count,
        opening: 0,
        next_seed: share.first,
        step: share.step,
        quota: share.quota,
        deadline: share.deadline,
        hold: share.hold,
        count: share.count,
        settled: 0,
        last_progress: Instant::now(),
    };
    worker.run()?;
    Ok(worker.finish())
}

struct Worker<'a> {
    plan: &'a Plan,
    live: &'a Live,
    poll: Poll,
    conns: Slab<Conn>,
    buf: Box<[u8]>,
    tally: Tally,
    again: Vec<usize>,
    to_open: u64,
    /// Connections opened that have not had an echoed byte yet.
    opening: usize,
    next_seed: u64,
    step: u64,
    quota: Option<u64>,
    deadline: Option<Instant>,
    hold: Option<Duration>,
    /// Connections of this share, and how many are held or failed.
    count: u64,
    settled: u64,
    last_progress: Instant,
}

impl Worker<'_> {
    fn run(&mut self) -> Result<(), LoadError> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.open_more();
            let now = Instant::now();
            if self.finished(now) {
                return Ok(());
            }
            let timeout = match self.again.is_empty() {
                false => Duration::ZERO,
                true => self
                    .deadline
                    .map_or(TICK, |d| d.saturating_duration_since(now))
                    .min(TICK),
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if interrupted(&e) => continue, // trap 9
                Err(e) => return Err(LoadError::setup("wait on a poll")(e)),
            }
            let before = (self.tally.messages, self.tally.bytes);
            for event in events.iter() {
                let closing = event.is_read_closed() || event.is_error();
                self.handle(event.token().0, closing);
            }
            for key in std::mem::take(&mut self.again) {
                self.handle(key, true);
            }
            Live::add(&self.live.messages, self.tally.messages - before.0);
            if (self.tally.messages, self.tally.bytes) != before {
                self.last_progress = Instant::now();
            }
            if self.settled >= self.count {
                if let Some(hold) = self.hold.take() {
                    self.deadline = Some(Instant::now() + hold);
                }
            }
        }
    }

    fn finished(&mut self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            return true;
        }
        if let Some(left) = self.quota {
            if self.tally.messages >= left {
                return true;
            }
            if now.duration_since(self.last_progress) > STALL {
                self.tally.stalled = true;
                Live::add(&self.live.errors, 1);
                return true;
            }
        }
        self.conns.is_empty() && self.to_open == 0
    }

    /// Opens connections until all are open or enough are opening.
    fn open_more(&mut self) {
        while self.to_open > 0 && self.opening < MAX_OPENING {
            self.to_open -= 1;
            let seed = self.next_seed;
            self.next_seed += self.step;
            if let Err(e) = self.open(seed) {
                log_first_error(&mut self.tally, "connect", &e);
                self.fail(Failure::Connect, false);
            }
        }
    }

    fn open(&mut self, seed: u64) -> io::Result<()> {
        let mut stream = self.plan.sources.connect(seed, self.plan.addr)?;
        let entry = self.conns.vacant_entry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll.registry().register(
            &mut stream,
            Token(entry.key()),
            interest,
        )?;
        entry.insert(Conn {
            stream,
            seq: Sequence::new(seed),
            sent: 0,
            echoed: 0,
            goal: self.plan.pattern.first_goal(self.plan.size),
            phase: Phase::Connecting,
            started: Instant::now(),
        });
        self.opening += 1;
        Ok(())
    }

    /// Drives the connection under `key` and acts on what it needs next.
    fn handle(&mut self, key: usize, closing: bool) {
        // A stale token (closed earlier in this batch) is skipped.
        let Some(conn) = self.conns.get_mut(key) else { return };
        let was = conn.phase;
        let was_opening = conn.echoed == 0;
        let mut io = Io {
            buf: &mut self.buf,
            tally: &mut self.tally,
            pattern: self.plan.pattern,
            size: self.plan.size,
        };
        let step = drive(conn, &mut io, closing);
        let now = conn.phase;
        let gone = matches!(step, Step::Reconnect | Step::Failed(_));
        if was_opening && (gone || conn.echoed > 0) {
            self.opening -= 1;
        }
        if was != Phase::Held && now == Phase::Held {
            self.settled += 1;
            Live::add(&self.live.held, 1);
            Live::add(&self.live.settled, 1);
        }
        match step {
            Step::Wait => {}
            Step::Again => self.again.push(key),
            Step::Reconnect => {
                self.close(key);
                self.to_open += 1;
            }
            Step::Failed(failure) => {
                self.close(key);
                self.fail(failure, now == Phase::Held);
            }
        }
    }

    fn close(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
    }

    fn fail(&mut self, failure: Failure, was_held: bool) {
        let t = &mut self.tally;
        match failure {
            Failure::Connect => t.connect_errors += 1,
            Failure::Io => t.io_errors += 1,
            Failure::Mismatch => t.mismatches += 1,
        }
        Live::add(&self.live.errors, 1);
        match was_held {
            true => Live::sub(&self.live.held, 1),
            false => {
                self.settled += 1;
                Live::add(&self.live.settled, 1);
            }
        }
    }

    /// The tally, with the connections still open counted as held.
    fn finish(mut self) -> Tally {
        let held = match self.plan.pattern {
            Pattern::Idle => Phase::Held,
            _ => Phase::Running,
        };
        self.tally.held =
            self.conns.iter().filter(|(_, c)| c.phase == held).count() as u64;
        self.tally
    }
}

/// Says why the first connection of a thread broke; later ones are only
/// counted, so a dead server does not flood stderr.
fn log_first_error(tally: &mut Tally, what: &str, e: &io::Error) {
    if tally.errors() == 0 {
        eprintln!("load: {what} failed: {e}");
    }
}

/// Moves bytes on one connection until the socket has nothing more to
/// give or take now, then reports what should happen next. `closing`:
/// the event said the server closed its side (trap 8: read to see).
fn drive(conn: &mut Conn, io: &mut Io<'_>, closing: bool) -> Step {
    if conn.phase == Phase::Connecting {
        match connected(&conn.stream) {
            Ok(true) => conn.phase = Phase::Running,
            Ok(false) => return Step::Wait,
            Err(e) => {
                log_first_error(io.tally, "connect", &e);
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
                log_first_error(io.tally, "write", &e);
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
                log_first_error(io.tally, "read", &eof());
                return Err(Failure::Io);
            }
            Ok(n) => n,
            Err(e) if would_block(&e) => return Ok(Received::Drained),
            Err(e) if interrupted(&e) => continue, // trap 9
            Err(e) => {
                log_first_error(io.tally, "read", &e);
                return Err(Failure::Io);
            }
        };
        let data = &io.buf[..n];
        let before = conn.echoed;
        // More back than was sent, or other bytes than were sent.
        if before + n as u64 > conn.sent || !conn.seq.matches(before, data) {
            if io.tally.errors() == 0 {
                eprintln!("load: echoed bytes differ from those sent");
            }
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

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "server closed the connection",
    )
}
