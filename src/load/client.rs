//! One client thread: a `mio::Poll` over a slab of connections. It opens
//! them at the pace the server accepts, drives each on its events (see
//! [`conn`](super::conn)) and stops at the deadline or the message count.

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::args::Plan;
use super::conn::{drive, log_first_error, Conn, Failure, Io, Phase, Step};
use super::pattern::Pattern;
use super::report::{Live, Tally};
use super::verify::Sequence;
use super::LoadError;
use crate::net::interrupted;

/// The read buffer all connections of a thread share.
const READ_BUF: usize = 64 * 1024;
/// Connections opened but not yet answered (no echoed byte yet) at once.
/// This paces opening to the rate the server accepts: a burst would
/// overflow its accept queue, and a dropped SYN or handshake ACK costs a
/// 1 s retransmit.
const MAX_OPENING: usize = 256;
/// Longest a poll blocks, so the deadline is never overslept by much.
const TICK: Duration = Duration::from_millis(100);
/// How long the end of a run waits for the server's FIN after ours: a
/// clean run ends every connection with a FIN both ways (the server
/// counts it `eof`), not with the RST a close with unread echo sends.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Stalls are looked for this many times per `--stall-timeout` (at most
/// once a [`TICK`]), so one is found at most this fraction late.
const STALL_CHECKS: u32 = 8;

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
        now: Instant::now(),
        check_every: (plan.stall_timeout / STALL_CHECKS).min(TICK),
        next_check: Instant::now(),
        stalled: Vec::new(),
    };
    worker.run()?;
    let tally = worker.tally();
    worker.close_cleanly();
    Ok(tally)
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
    /// When the last poll returned: the time of every event of a turn.
    now: Instant,
    /// How often, and when next, to look for stalled connections.
    check_every: Duration,
    next_check: Instant,
    /// Keys of the stalled connections found by one check.
    stalled: Vec<usize>,
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
                    .min(self.next_check.saturating_duration_since(now))
                    .min(TICK),
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if interrupted(&e) => continue, // trap 9
                Err(e) => return Err(LoadError::setup("wait on a poll")(e)),
            }
            let before = self.tally.messages;
            self.now = Instant::now();
            for event in events.iter() {
                let closing = event.is_read_closed() || event.is_error();
                self.handle(event.token().0, closing);
            }
            for key in std::mem::take(&mut self.again) {
                self.handle(key, true);
            }
            Live::add(&self.live.messages, self.tally.messages - before);
            if self.now >= self.next_check {
                self.close_stalled();
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
        if self.quota.is_some_and(|left| self.tally.messages >= left) {
            return true;
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
                log_first_error(
                    &self.tally,
                    format_args!("connect failed: {e}"),
                );
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
            rounds: 0,
            since: Instant::now(),
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
        let (was_waiting, echoed) = (conn.waiting(), conn.echoed);
        let mut io = Io {
            buf: &mut self.buf,
            tally: &mut self.tally,
            pattern: self.plan.pattern,
            size: self.plan.size,
        };
        let step = drive(conn, &mut io, closing);
        let now = conn.phase;
        // The stall clock runs while the connection waits, and starts
        // again whenever what it waited for arrives.
        if !was_waiting || now != was || conn.echoed != echoed {
            conn.since = self.now;
        }
        if was_opening && conn.echoed > 0 {
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
        if conn.echoed == 0 {
            self.opening -= 1;
        }
    }

    /// Closes, as stalls, the connections that have waited longer than
    /// `--stall-timeout` (a server that stopped answering, or never
    /// echoes). Held connections wait for nothing and never stall.
    fn close_stalled(&mut self) {
        self.next_check = self.now + self.check_every;
        let limit = self.plan.stall_timeout;
        self.stalled.extend(self.conns.iter().filter_map(|(key, c)| {
            let late = self.now.saturating_duration_since(c.since) >= limit;
            (c.waiting() && late).then_some(key)
        }));
        for key in std::mem::take(&mut self.stalled) {
            let secs = limit.as_secs_f64();
            log_first_error(
                &self.tally,
                format_args!("no progress for {secs} s (--stall-timeout)"),
            );
            self.close(key);
            self.fail(Failure::Stall, false);
        }
    }

    fn fail(&mut self, failure: Failure, was_held: bool) {
        let t = &mut self.tally;
        match failure {
            Failure::Connect => t.connect_errors += 1,
            Failure::Io => t.io_errors += 1,
            Failure::Mismatch => t.mismatches += 1,
            Failure::Stall => t.stalls += 1,
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

    /// The tally (taken), with the connections still open counted as
    /// held.
    fn tally(&mut self) -> Tally {
        let held = match self.plan.pattern {
            Pattern::Idle => Phase::Held,
            _ => Phase::Running,
        };
        self.tally.held =
            self.conns.iter().filter(|(_, c)| c.phase == held).count() as u64;
        if self.plan.pattern == Pattern::Pingpong {
            // Fairness: a server that starves some connections shows it
            // here long before it shows in the mean.
            let rounds = self.conns.iter().map(|(_, c)| c.rounds);
            self.tally.rounds_min = rounds.clone().min();
            self.tally.rounds_max = rounds.max();
        }
        std::mem::take(&mut self.tally)
    }

    /// Ends the run's connections the way a polite client does: our FIN
    /// on each, then whatever echo is still in flight read and dropped
    /// until the server's FIN, for at most [`CLOSE_GRACE`]. Closing with
    /// that echo unread would send an RST (trap 17 from the client's
    /// side), and the server would count a clean run's connections as
    /// resets. What is left at the end of the grace is dropped as it is.
    fn close_cleanly(&mut self) {
        for (_, conn) in self.conns.iter() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        let end = Instant::now() + CLOSE_GRACE;
        let mut events = Events::with_capacity(1024);
        let mut done = Vec::new();
        while !self.conns.is_empty() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.poll.poll(&mut events, Some(left)) {
                Ok(()) => {}
                Err(e) if interrupted(&e) => continue, // trap 9
                Err(_) => break,
            }
            for event in events.iter() {
                let key = event.token().0;
                let Some(conn) = self.conns.get_mut(key) else { continue };
                // Trap 1: read until WouldBlock; 0 is the server's FIN.
                loop {
                    match io::Read::read(&mut conn.stream, &mut self.buf) {
                        Ok(0) => break done.push(key),
                        Ok(_) => {}
                        Err(e) if interrupted(&e) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            break
                        }
                        Err(_) => break done.push(key),
                    }
                }
            }
            for key in done.drain(..) {
                if let Some(mut conn) = self.conns.try_remove(key) {
                    let _ = self.poll.registry().deregister(&mut conn.stream);
                }
            }
        }
    }
}
