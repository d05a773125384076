//! The uring model: one thread, one io_uring, completions instead of
//! readiness. Where the mio model asks "which sockets are ready?" and
//! then pays a `recv` and a `send` for each message, this loop keeps a
//! multishot accept and a multishot receive per connection armed, lets
//! the kernel fill buffers from one shared pool ([`bufs`]), and submits
//! every send of a turn and reaps every completion with one
//! `io_uring_enter`.
//!
//! One turn:
//!
//! ```text
//!   submit queued sends and re-arms; wait for a completion or a deadline
//!   for each completion (user_data: kind, slab key, generation):
//!       accept  -> admit or reject the new socket, arm its receive
//!       control -> the listener layer's epoll is readable: waker,
//!                  signals, the metrics listener and its scrapes
//!       recv    -> log / echo (copy to its output) / discard; buffer back
//!       send    -> advance its output; drained: resume, close or linger
//!       cancel  -> one less operation in flight
//!   give the buffers back, queue sends, re-arm what ended
//!   close connections idle past the timeout
//! ```
//!
//! The completion traps (C1-C6 in the README) are named where handled.

// Unsafe code: the ring's submissions point at memory the kernel uses
// later, and the buffer pool is a mapping shared with the kernel.
#![allow(unsafe_code)]

mod bufs;
mod conn;
mod ring;

use std::net::{Shutdown, SocketAddr};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::opcode::{AcceptMulti, AsyncCancel2, PollAdd};
use io_uring::opcode::{Recv, RecvMulti, Send};
use io_uring::squeue::Flags;
use io_uring::types::{CancelBuilder, Fd};
use io_uring::IoUring;
use mio::net::TcpStream;
use mio::Events;
use slab::Slab;

use crate::config::{Config, Mode};
use crate::error::Error;
use crate::event_loop::LogBuckets;
use crate::idle::IdleList;
use crate::journal;
use crate::listener::accept::Accept;
use crate::listener::{Control, Listener, Source, STOP_WINDOW};
use crate::metrics::Metrics;
use crate::pending::{Header, Pending};
use crate::stats::{Reason, Stats, Summary, Traffic};
use crate::OUT_CAP;

use bufs::Pool;
use conn::{Conn, Phase};
use ring::{Completion, Kind, Op};

/// Control events taken from the listener layer's poll at once.
const EVENTS: usize = 64;
/// A receive while the output budget (`--max-output-memory`) is spent:
/// small, as in the mio model.
const OVER_BUDGET_STEP: usize = 512;
/// Drained output buffers of the first size kept for the next echo: an
/// echo needs its bytes until its send completes, and reusing these
/// saves an allocation per message and the heap's fragmentation (RSS
/// that did not come back after a burst of clients). At most 512 KiB.
const SPARE_OUT: usize = 256;
/// How long the end of a stop waits for the last cancels.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// Runs the uring model until it is stopped.
pub(crate) fn run(
    listener: Listener,
    config: &Config,
) -> Result<Summary, Error> {
    let mut lp = Loop::new(listener, config)?;
    let mut completions = Vec::new();
    loop {
        lp.after_completions(Instant::now());
        let deadline = lp.deadline(Instant::now());
        ring::submit_and_wait(&mut lp.ring, deadline)?;
        let now = Instant::now();
        lp.now_ms = lp.clock(now);
        ring::reap(&mut lp.ring, &mut completions);
        for c in &completions {
            lp.on_completion(*c, now);
        }
        lp.listener.end_turn(now, &lp.stats, &mut lp.traffic);
        if let Some(metrics) = &mut lp.metrics {
            metrics.serve_group(&lp.listener, now);
        }
        journal::flush();
        if lp.finished(now) {
            lp.stats.add(std::mem::take(&mut lp.traffic));
            return Ok(lp.stats.summary());
        }
    }
}

/// The loop's state. The ring is dropped first (which ends every
/// operation), then the pool its receives wrote to, then the sockets.
struct Loop {
    ring: IoUring,
    pool: Pool,
    listener: Listener,
    events: Events,
    mode: Mode,
    conns: Slab<Conn>,
    /// Connections not yet counted as closed.
    open: usize,
    next_gen: u32,
    /// This worker's counters (accepts and closes as they happen, bytes
    /// once a turn from `traffic`), which `--workers` adds up.
    stats: Arc<Stats>,
    traffic: Traffic,
    scratch: String,
    idle: Option<IdleList>,
    log: Option<LogBuckets>,
    accept: Accept,
    /// Per client listener: its multishot accept is armed.
    accepting: Vec<bool>,
    /// The multishot poll on the listener layer's epoll is armed.
    watching: bool,
    /// Connections with output to send, and receives to arm again.
    to_send: Vec<usize>,
    /// Drained output buffers to reuse ([`SPARE_OUT`]), boxed as a
    /// connection holds them: reuse moves a pointer, allocates nothing.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<conn::OutBuf>>,
    to_arm: Vec<usize>,
    out_held: usize,
    out_budget: usize,
    stopping: Option<Instant>,
    start: Instant,
    now_ms: u64,
    /// `--metrics-addr`: its sockets are on the listener layer's epoll,
    /// so their events arrive with the control completions.
    metrics: Option<Metrics>,
    /// `--proxy-protocol`: the connections whose header is arriving.
    pending: Option<Pending>,
}

impl Loop {
    fn new(mut listener: Listener, config: &Config) -> Result<Loop, Error> {
        let metrics = Metrics::take(&mut listener, config);
        let listeners = listener.sockets().len();
        let group = Arc::clone(listener.group());
        let stats = Arc::clone(group.stats(listener.worker()));
        let capacity = config.max_connections.min(1 << 20);
        // Trap C5: the completion queue holds a turn's completions: one
        // receive per buffer, a send and a re-arm per connection. When it
        // overflows anyway, the kernel keeps the rest (NODROP) and sets
        // IORING_SQ_CQ_OVERFLOW; the next wait flushes them (io-uring's
        // submit enters with GETEVENTS then), and multishot operations
        // it ended arrive without F_MORE and are armed again.
        let cq = (4 * capacity).clamp(4096, 1 << 17) as u32;
        let ring = ring::create(cq)?;
        let pool = Pool::new(&ring, Pool::wanted(capacity, config.mode))?;
        let idle = config.idle_timeout.map(|t| {
            IdleList::new(t.as_millis().try_into().unwrap_or(u64::MAX))
        });
        Ok(Loop {
            ring,
            pool,
            listener,
            events: Events::with_capacity(EVENTS),
            mode: config.mode,
            conns: Slab::with_capacity(capacity),
            open: 0,
            next_gen: 0,
            stats,
            traffic: Traffic::default(),
            scratch: String::new(),
            idle,
            log: LogBuckets::of(config),
            accept: Accept::new(config, group),
            accepting: vec![false; listeners],
            watching: false,
            to_send: Vec::new(),
            spare: Vec::new(),
            to_arm: Vec::new(),
            out_held: 0,
            out_budget: config.max_output_memory,
            stopping: None,
            start: Instant::now(),
            now_ms: 0,
            metrics,
            pending: config.proxy.clone().map(Pending::new),
        })
    }

    fn clock(&self, now: Instant) -> u64 {
        let ms = now.duration_since(self.start).as_millis();
        ms.try_into().unwrap_or(u64::MAX)
    }

    /// Until when the next wait may block: the nearest idle expiry,
    /// accept pause, stop window, log retry, or scrape deadline.
    fn deadline(&mut self, now: Instant) -> Option<Instant> {
        let idle = self
            .idle
            .as_ref()
            .and_then(IdleList::next_deadline)
            .map(|ms| self.start + Duration::from_millis(ms));
        let accept = match self.stopping {
            None => self.accept.paused_until(now),
            Some(_) => None,
        };
        let log = journal::retry_at(now);
        let service = self.listener.service_due();
        let metrics = self.metrics.as_ref().and_then(|m| m.deadline(now));
        let header = self
            .pending
            .as_ref()
            .and_then(Pending::next_deadline)
            .map(|ms| self.start + Duration::from_millis(ms));
        [idle, accept, self.stopping, log, service, metrics, header]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_completion(&mut self, c: Completion, now: Instant) {
        match c.op.kind {
            Kind::Accept => self.on_accept(c, now),
            Kind::Control => self.on_control(c, now),
            Kind::Recv => self.on_recv(c),
            Kind::Send => self.on_send(c),
            Kind::Cancel => {
                if let Some(conn) = live(&mut self.conns, c.op) {
                    conn.cancels = conn.cancels.saturating_sub(1);
                }
                self.free_if_done(c.op.key as usize);
            }
        }
    }

    /// Work between waits: buffers back, re-arms, sends, accepting, idle
    /// expiry. Everything it queues goes in the next wait's submit.
    fn after_completions(&mut self, now: Instant) {
        self.pool.publish();
        for key in std::mem::take(&mut self.to_arm) {
            self.arm_recv(key);
        }
        for key in std::mem::take(&mut self.to_send) {
            self.send(key);
        }
        if !self.watching {
            self.watching = true;
            let fd = Fd(self.listener.poll_fd());
            let poll = PollAdd::new(fd, libc::POLLIN as u32).multi(true);
            ring::push(
                &mut self.ring,
                poll.build(),
                Op::new(Kind::Control, 0, 0),
            );
        }
        if self.stopping.is_none() && self.accept.paused_until(now).is_none() {
            for i in 0..self.accepting.len() {
                if !self.accepting[i] {
                    self.arm_accept(i);
                }
            }
        }
        self.expire_idle();
        while let Some(key) =
            self.pending.as_mut().and_then(|p| p.expired(self.now_ms))
        {
            self.close(key, crate::pending::too_slow());
        }
    }

    fn arm_accept(&mut self, i: usize) {
        let Some(socket) = self.listener.sockets().get(i) else { return };
        let fd = Fd(socket.as_raw_fd());
        self.accepting[i] = true;
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        let accept = AcceptMulti::new(fd).flags(flags).build();
        ring::push(&mut self.ring, accept, Op::new(Kind::Accept, i, 0));
    }

    fn on_accept(&mut self, c: Completion, now: Instant) {
        let i = c.op.key as usize;
        if !c.more() {
            if let Some(armed) = self.accepting.get_mut(i) {
                *armed = false;
            }
        }
        if let Some(e) = c.error() {
            // Trap C4: a multishot accept ends on an error (EMFILE among
            // them); `Accept` pauses on exhaustion (trap 4), and
            // `after_completions` arms it again once the pause is over
            // or a close freed a descriptor. Trap 12: others are skipped.
            if self.stopping.is_none() {
                self.accept.on_failure(&e, now);
            }
            return;
        }
        // SAFETY: a successful accept's result is a new descriptor that
        // nothing else owns.
        let stream = unsafe { TcpStream::from_raw_fd(c.result) };
        // (AcceptMulti has no address buffer: one getpeername a
        // connection.)
        if self.stopping.is_some() {
            return; // dropped: closed at once
        }
        let Ok(peer) = stream.peer_addr() else {
            return; // trap 12: reset before we looked at it
        };
        self.accept.size_send_buffer(&stream, peer, now);
        self.admit(stream, peer);
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let admitted = match &self.pending {
            // The balancer's address until the header names the client.
            Some(_) => {
                self.accept.admits_one_more(self.open, peer, &self.stats)
            }
            None => self.accept.admits(self.open, peer, &self.stats),
        };
        if !admitted {
            return; // dropping the stream closes it at once
        }
        if let Some(reason) =
            self.pending.as_ref().and_then(|p| p.refuses(peer))
        {
            self.stats.accepted();
            self.stats.closed(&reason);
            journal::closed(peer, &reason, self.open);
            return;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let key = self.conns.insert(Conn::new(stream, peer, self.next_gen));
        self.open += 1;
        if let Some(pending) = &mut self.pending {
            // Counted and logged once the header names the client; the
            // first receives feed it.
            pending.start(key, self.now_ms);
            if let Some(log) = &mut self.log {
                *log.bucket(key) = Default::default();
            }
            return self.arm_recv(key);
        }
        self.serving(key, peer);
        self.arm_recv(key);
    }

    /// Connection `key` from `peer` is served from now on.
    fn serving(&mut self, key: usize, peer: SocketAddr) {
        self.stats.accepted();
        if let Some(idle) = &mut self.idle {
            idle.insert(key, self.now_ms);
        }
        if let Some(log) = &mut self.log {
            *log.bucket(key) = Default::default();
        }
        journal::accepted(peer, self.open);
    }

    /// Acts on what a receive of `n` bytes made of connection `key`'s
    /// header: how many of them were header (the rest is the client's
    /// stream), or `None` if the connection was refused.
    fn header(&mut self, key: usize, got: Header, n: usize) -> Option<usize> {
        let (peer, first) = match got {
            Header::Waiting => return Some(n),
            Header::Refused(reason) => {
                self.close(key, reason);
                return None;
            }
            Header::Done { peer, first } => (peer, first),
        };
        let conn = &mut self.conns[key];
        let peer = peer.unwrap_or(conn.peer);
        conn.peer = peer;
        if !self.accept.admits_address(peer, &self.stats) {
            self.close_unserved(key);
            return None;
        }
        self.serving(key, peer);
        Some(first.start)
    }

    /// Arms connection `key`'s multishot receive, if it wants one.
    fn arm_recv(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let wants = matches!(
            conn.phase,
            Phase::Open | Phase::Stopping | Phase::Lingering | Phase::Draining
        );
        if conn.recv || conn.paused || !wants {
            return;
        }
        let fd = Fd(conn.stream.as_raw_fd());
        let recv = match (self.mode, conn.phase) {
            (Mode::Echo, Phase::Open) => {
                // Echo backpressure: each receive takes at most what the
                // output may still hold. A multishot receive cannot be
                // bounded so (one wake-up may post a completion for
                // everything the socket holds, megabytes, before a cancel
                // lands), so echo receives one completion at a time.
                let room = echo_room(conn, self.out_held, self.out_budget);
                if room == 0 {
                    conn.paused = true;
                    return;
                }
                let len = room.min(self.pool.size()) as u32;
                Recv::new(fd, std::ptr::null_mut(), len)
                    .buf_group(bufs::GROUP)
                    .build()
                    .flags(Flags::BUFFER_SELECT)
            }
            _ => RecvMulti::new(fd, bufs::GROUP).build(),
        };
        conn.recv = true;
        let op = Op::new(Kind::Recv, key, conn.gen);
        ring::push(&mut self.ring, recv, op);
    }

    fn on_recv(&mut self, c: Completion) {
        let key = c.op.key as usize;
        let bid = c.buffer();
        if live(&mut self.conns, c.op).is_some() {
            self.received(key, c, bid);
        }
        // Every buffer goes back, whoever it was for.
        if let Some(bid) = bid {
            self.pool.put(bid);
        }
        self.free_if_done(key);
    }

    fn received(&mut self, key: usize, c: Completion, bid: Option<u16>) {
        let conn = &mut self.conns[key];
        if !c.more() {
            conn.recv = false;
        }
        if conn.phase == Phase::Closing {
            return;
        }
        match c.result {
            n if n > 0 => {
                let n = n as usize;
                // The first receives feed a PROXY header, if one is due.
                let pending = self.pending.as_mut().filter(|p| p.waits(key));
                let skip = match pending {
                    None => 0,
                    Some(p) => {
                        let data =
                            bid.map_or(&[][..], |b| self.pool.data(b, n));
                        let got = p.feed(key, data);
                        match self.header(key, got, n) {
                            Some(skip) => skip,
                            None => return,
                        }
                    }
                };
                if skip < n {
                    self.take(key, bid, skip..n);
                }
            }
            0 => {
                let conn = &mut self.conns[key];
                conn.phase = Phase::HalfClosed;
                if self.pending.as_mut().is_some_and(|p| p.waits(key)) {
                    return self.close(key, crate::pending::cut_short());
                }
                if conn.pending() == 0 {
                    self.close(key, Reason::Eof);
                }
                return;
            }
            _ => {
                let e = c
                    .error()
                    .unwrap_or_else(|| std::io::ErrorKind::Other.into());
                match e.raw_os_error() {
                    // Trap C3: the pool ran dry and ended this receive;
                    // arm it again once buffers are back (this turn's
                    // are published before the next submit).
                    Some(libc::ENOBUFS) => {}
                    _ => return self.close(key, Reason::from_io(e)),
                }
            }
        }
        if !self.conns[key].recv {
            self.to_arm.push(key);
        }
    }

    /// Logs, echoes or discards `range` of buffer `bid`, received for
    /// connection `key`.
    fn take(&mut self, key: usize, bid: Option<u16>, range: Range<usize>) {
        let conn = &mut self.conns[key];
        let n = range.end;
        self.traffic.bytes_in += range.len() as u64;
        if let Some(idle) = &mut self.idle {
            idle.touch(key, self.now_ms);
        }
        let data = bid.map_or(&[][..], |b| self.pool.data(b, n));
        let data = data.get(range).unwrap_or_default();
        match (conn.phase, self.mode) {
            (Phase::Open, Mode::Log) => {
                let stats = &self.stats;
                let log = self.log.as_mut();
                if let Some(mut limit) = log.map(|l| l.limit(key, stats)) {
                    let scratch = &mut self.scratch;
                    journal::chunk(conn.peer, data, scratch, &mut limit);
                }
            }
            (Phase::Open, Mode::Echo) => {
                let before = conn.held();
                let spare = &mut self.spare;
                let out = conn
                    .out
                    .get_or_insert_with(|| spare.pop().unwrap_or_default());
                // The first output of a turn queues one send; the
                // rest of the turn's joins it.
                if out.is_quiet() {
                    self.to_send.push(key);
                }
                out.push(data);
                self.out_held = self.out_held - before + conn.held();
            }
            // Trap 17: input left at the stop means lingering.
            (Phase::Stopping, _) => conn.phase = Phase::Lingering,
            _ => {}
        }
    }

    /// Queues connection `key`'s next send, if one is due.
    fn send(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        let Some(out) = &mut conn.out else { return };
        let Some((ptr, len)) = out.next_send() else { return };
        let fd = Fd(conn.stream.as_raw_fd());
        // Trap 10: MSG_NOSIGNAL, so a dead peer is an EPIPE here.
        let send = Send::new(fd, ptr, len).flags(libc::MSG_NOSIGNAL).build();
        let op = Op::new(Kind::Send, key, conn.gen);
        ring::push(&mut self.ring, send, op);
    }

    fn on_send(&mut self, c: Completion) {
        let key = c.op.key as usize;
        let n = usize::try_from(c.result).unwrap_or(0);
        self.traffic.bytes_out += n as u64;
        let Some(conn) = live(&mut self.conns, c.op) else { return };
        let drained = conn.out.as_mut().is_some_and(|out| out.sent(n));
        if conn.phase == Phase::Closing {
            return self.free_if_done(key);
        }
        if let Some(e) = c.error() {
            return self.close(key, Reason::from_io(e));
        }
        if n > 0 {
            if let Some(idle) = &mut self.idle {
                idle.touch(key, self.now_ms);
            }
        }
        if !drained {
            // A short send: the rest goes next (trap 7's completion
            // form: nothing is lost, nothing is sent twice).
            self.to_send.push(key);
            // Output shrank: a paused receive may take what now fits.
            if std::mem::take(&mut conn.paused) {
                self.to_arm.push(key);
            }
            return;
        }
        // The output buffer is freed once drained: idle connections hold
        // none.
        self.out_held -= conn.held();
        let recycled = conn.out.take().and_then(conn::OutBuf::recycle);
        if let Some(out) = recycled.filter(|_| self.spare.len() < SPARE_OUT) {
            self.spare.push(out);
        }
        if std::mem::take(&mut conn.paused) {
            self.to_arm.push(key);
        }
        self.flushed(key);
    }

    /// Connection `key` has no output left: what its phase does next.
    fn flushed(&mut self, key: usize) {
        match self.conns[key].phase {
            Phase::HalfClosed => self.close(key, Reason::Eof),
            Phase::Stopping => self.look_for_input(key),
            Phase::Lingering => self.linger(key),
            _ => {}
        }
    }

    /// Trap 17 at a stop: with no output left, input the client sent and
    /// we never read would make `close()` send an RST; peek for it.
    fn look_for_input(&mut self, key: usize) {
        let mut byte = [0u8; 1];
        match self.conns[key].stream.peek(&mut byte) {
            Ok(n) if n > 0 => self.linger(key),
            Err(e) if crate::net::interrupted(&e) => self.linger(key),
            _ => self.close(key, Reason::Shutdown),
        }
    }

    /// Lingering close: our FIN after the last byte, then discard input
    /// until the client's EOF or the end of the stop window.
    fn linger(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        conn.phase = Phase::Draining;
        let _ = conn.stream.shutdown(Shutdown::Write);
        self.arm_recv(key);
    }

    /// Counts and logs connection `key` as closed, then frees its slot,
    /// or, trap C1, cancels its operations first: `close()` would not end
    /// them, and the kernel could still write into a receive buffer or
    /// read a send's bytes. The slot is freed on the last completion.
    fn close(&mut self, key: usize, reason: Reason) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        // A connection refused at its header was counted at none of
        // accept, the per-address table or the idle list.
        let unserved = self.pending.as_mut().is_some_and(|p| p.forget(key));
        if unserved {
            self.stats.accepted();
        }
        let reason =
            if self.stopping.is_some() { Reason::Shutdown } else { reason };
        self.stats.closed(&reason);
        if let Some(log) = &mut self.log {
            journal::suppressed(conn.peer, log.bucket(key));
        }
        journal::closed(conn.peer, &reason, self.open - 1);
        if !unserved {
            self.accept.release(conn.peer);
        }
        self.close_unserved(key);
    }

    /// Ends connection `key` without counting it: its header named a
    /// client over the per-address limit (counted as rejected), or
    /// [`Loop::close`] counted it.
    fn close_unserved(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        self.open -= 1;
        if let Some(pending) = &mut self.pending {
            pending.forget(key);
        }
        if let Some(idle) = &mut self.idle {
            idle.remove(key);
        }
        if conn.in_flight() {
            conn.cancels += 1;
            let fd = Fd(conn.stream.as_raw_fd());
            let cancel = AsyncCancel2::new(CancelBuilder::fd(fd).all());
            let op = Op::new(Kind::Cancel, key, conn.gen);
            ring::push(&mut self.ring, cancel.build(), op);
        }
        self.free_if_done(key);
    }

    /// Frees slot `key` once its connection is closed and its last
    /// operation has completed (trap C1); closes the socket.
    fn free_if_done(&mut self, key: usize) {
        let done = self.conns.get(key).is_some_and(|conn| {
            conn.phase == Phase::Closing && !conn.in_flight()
        });
        if done {
            let conn = self.conns.remove(key);
            self.out_held -= conn.held();
            drop(conn);
            self.accept.freed();
        }
    }

    fn expire_idle(&mut self) {
        while let Some(key) =
            self.idle.as_ref().and_then(|l| l.expired(self.now_ms))
        {
            match self.conns.contains(key) {
                true => self.close(key, Reason::Idle),
                // Never expected; unlink so the loop cannot spin on it.
                false => {
                    if let Some(idle) = &mut self.idle {
                        idle.remove(key);
                    }
                }
            }
        }
    }

    /// The listener layer's epoll is readable: the waker or a signal.
    /// Its events are taken without blocking and asked what they mean,
    /// so a stop is a completion like any other (trap 13).
    fn on_control(&mut self, c: Completion, now: Instant) {
        if !c.more() {
            self.watching = false;
        }
        if let Err(e) = self.listener.wait(&mut self.events, Some(now)) {
            log::warn!("{e}");
            return;
        }
        let tokens: Vec<_> = self.events.iter().map(|e| e.token()).collect();
        for token in tokens {
            let source = Source::of(token);
            if let Source::Metrics | Source::Scrape(_) = source {
                if let Some(metrics) = &mut self.metrics {
                    metrics.on_event(source, self.listener.registry());
                }
                continue;
            }
            if source != Source::Control {
                continue; // the listener: its multishot accept takes it
            }
            if let Some(control) = self.listener.control(token) {
                self.act(control, now);
            }
        }
    }

    fn act(&mut self, control: Control, now: Instant) {
        if control.stop {
            self.begin_stop(now);
        }
        if control.now {
            self.stopping = Some(now);
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(now + STOP_WINDOW);
        self.listener.stop_listening();
        self.idle = None;
        log::info!("stopping: {} connections open", self.open);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            // A header still arriving: nothing was served to flush.
            if self.pending.as_ref().is_some_and(|p| p.waits(key)) {
                self.close(key, Reason::Shutdown);
                continue;
            }
            let conn = &mut self.conns[key];
            if conn.phase != Phase::Open {
                continue;
            }
            conn.phase = Phase::Stopping;
            if conn.pending() == 0 {
                self.look_for_input(key);
            }
        }
    }

    /// True once stopping is complete: every connection closed and its
    /// operations ended, or the window is over and the rest are closed.
    fn finished(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.stopping else { return false };
        if now >= deadline {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.close(key, Reason::Shutdown);
            }
        }
        // Every count is final once the last open connection closed;
        // dropping the ring ends cancels that are slow to complete.
        self.conns.is_empty()
            || (self.open == 0 && now >= deadline + CANCEL_GRACE)
    }
}

/// Trap C2: the connection an operation belongs to, if its slot still
/// holds the connection that issued it.
fn live(conns: &mut Slab<Conn>, op: Op) -> Option<&mut Conn> {
    let conn = conns.get_mut(op.key as usize)?;
    (Op::new(op.kind, 0, conn.gen).gen == op.gen).then_some(conn)
}

/// How much an echo receive of `conn` may take: what its output may
/// still hold within [`OUT_CAP`] and what is left of the budget (at
/// least a small step while nothing waits, as in the mio model).
fn echo_room(conn: &Conn, held: usize, budget: usize) -> usize {
    let pending = conn.pending();
    let budget_left = budget.saturating_sub(held);
    let room = (OUT_CAP - pending.min(OUT_CAP)).min(budget_left);
    match pending {
        0 => room.max(OVER_BUDGET_STEP),
        _ => room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection cost the README quotes: an idle connection is
    /// one `Conn` of 56 bytes in the slab (mio's sockets carry a
    /// registration check in debug builds, 16 bytes more), and holds no
    /// receive buffer: the pool is shared.
    #[test]
    fn an_idle_connection_is_a_small_slab_entry() {
        let debug_extra = if cfg!(debug_assertions) { 16 } else { 0 };
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 56 + debug_extra, "Conn is {size} bytes");
    }

    /// Echo never receives more than the output can still hold.
    #[test]
    fn echo_room_stops_at_the_cap_and_the_budget() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client =
            std::net::TcpStream::connect(listener.local_addr().unwrap());
        let (s, peer) = listener.accept().unwrap();
        let mut conn = Conn::new(TcpStream::from_std(s), peer, 1);
        assert_eq!(echo_room(&conn, 0, usize::MAX), OUT_CAP);
        assert_eq!(echo_room(&conn, 100, 100), OVER_BUDGET_STEP);
        let mut out = Box::<conn::OutBuf>::default();
        out.push(&vec![1; OUT_CAP]);
        conn.out = Some(out);
        assert_eq!(echo_room(&conn, 0, usize::MAX), 0);
    }
}
