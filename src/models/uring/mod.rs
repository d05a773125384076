//! The uring model: one thread, one io_uring, completions instead of
//! readiness. Where the mio model asks "which sockets are ready?" and
//! then pays a `recv` and a `send` for each message, this loop keeps a
//! multishot accept and a multishot receive per connection armed, lets
//! the kernel fill buffers from one shared pool ([`bufs`]), and submits
//! every send of a turn and reaps every completion with one
//! `io_uring_enter`. It is the policy's second IO method ([`Method`]),
//! beside the mio model: admission, deadlines, closes and the stop are
//! the policy's.
//!
//! One turn:
//!
//! ```text
//!   submit queued sends and re-arms; wait for a completion or a deadline
//!   for each completion (user_data: kind, slab key, generation):
//!       accept  -> admit or reject the new socket, arm its receive
//!       control -> the listener layer's epoll is readable: waker,
//!                  signals, the metrics listener and its scrapes
//!       recv    -> log / discard, or echo: lease its buffers to the
//!                  output (sent in place, trap C11) or copy them there;
//!                  a buffer goes back once read through and sent
//!       send    -> advance its output; drained: resume, close or linger
//!       cancel  -> one less operation in flight
//!   give the buffers back, queue sends, re-arm what ended
//! ```
//!
//! The completion traps (C1-C11 in docs/traps.md) are named where handled.

// Unsafe code: the ring's submissions point at memory the kernel uses
// later, and the buffer pool is a mapping shared with the kernel.
#![allow(unsafe_code)]

mod bufs;
mod close;
mod connection;
mod recv;
mod ring;
mod send;
mod switches;
mod trace;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::opcode::{AcceptMulti, PollAdd};
use io_uring::types::Fd;
use io_uring::IoUring;
use mio::net::TcpStream;
use mio::Events;
use slab::Slab;

use crate::config::Config;
use crate::error::Error;
use crate::listener::{Listener, Source};
use crate::net::UNKNOWN_PEER;
use crate::policy::{self, Method, Policy};
use crate::stats::{Reason, Summary};

use bufs::Pool;
use connection::{Connection, Phase};
use ring::{Completion, Kind, Op};
use switches::Switches;

/// Control events taken from the listener layer's poll at once.
const EVENTS: usize = 64;
/// Output memory freed since the heap was last trimmed that makes the
/// next moment with no output held trim it ([`Loop::give_back_memory`]).
const TRIM_AFTER: usize = 1 << 20;
/// The most that the receives armed (again) in one turn are expected to
/// bring ([`Loop::arm_recv`] says what each is expected to bring). The
/// turn's bytes pass through the buffer pool and the outputs; kept to
/// a fraction of a core's 2 MiB L2 cache, the kernel and the copies find
/// them there (a stream at 100 connections read 2.3 MB a turn, every
/// receive re-armed, and ran at half mio's MB/s; lifting the cap costs
/// it 1.26x the CPU per message, docs/completion.md).
const TURN_RECV: usize = 512 * 1024;
/// How long the end of a stop waits for the last cancels.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// Runs the uring model until it is stopped.
pub(crate) fn run(
    listener: Listener,
    config: &Config,
) -> Result<Summary, Error> {
    let listeners = listener.sockets().len();
    let capacity = config.max_connections.min(1 << 20);
    // Trap C5: the completion queue holds a turn's completions: one
    // receive per buffer, a send and a re-arm per connection. When it
    // overflows anyway, the kernel keeps the rest (NODROP) and sets
    // IORING_SQ_CQ_OVERFLOW; the next wait flushes them (io-uring's
    // submit enters with GETEVENTS then), and multishot operations
    // it ended arrive without F_MORE and are armed again.
    let cq = (4 * capacity).clamp(4096, 1 << 17) as u32;
    let ring = ring::create(cq)?;
    let switches = Switches::read();
    let (inc, buffers) = (switches.inc, switches.buffers);
    let mut pool = Pool::new(&ring, capacity, config.mode, inc, buffers)?;
    if !switches.fitted {
        pool.unfit();
    }
    let incremental = pool.incremental();
    log::debug!(
        "io_uring: {} receive buffers of {} bytes, incremental: {}",
        pool.count(),
        pool.size(),
        pool.incremental()
    );
    policy::run(Loop {
        ring,
        pool,
        policy: Policy::new(listener, config),
        events: Events::with_capacity(EVENTS),
        completions: Vec::new(),
        connections: Slab::with_capacity(capacity),
        next_gen: 0,
        accepting: vec![false; listeners],
        watching: false,
        to_send: Vec::new(),
        spare: connection::Spare::default(),
        freed: 0,
        to_arm: Vec::new(),
        echo_multishot: switches.echo_multishot,
        bundle: switches.bundle && incremental,
        in_place: if incremental { switches.in_place } else { usize::MAX },
        poll_first: switches.poll_first,
        defer_recv: switches.defer_recv,
        turn_recv: switches.turn_recv,
        capped: 0,
        dry: 0,
        full_in_place: 0,
    })
}

/// The loop's state. The ring is dropped first (which ends every
/// operation), then the pool its receives wrote to, then the sockets.
struct Loop {
    ring: IoUring,
    pool: Pool,
    policy: Policy,
    events: Events,
    completions: Vec<Completion>,
    connections: Slab<Connection>,
    next_gen: u32,
    /// Per client listener: its multishot accept is armed.
    accepting: Vec<bool>,
    /// The multishot poll on the listener layer's epoll is armed.
    watching: bool,
    /// Connections with output to send, and receives to arm again.
    to_send: Vec<usize>,
    /// Drained output buffers to reuse, boxed as a connection holds
    /// them: reuse moves a pointer, allocates nothing.
    spare: connection::Spare,
    /// Bytes of output buffers freed since the last trim.
    freed: usize,
    to_arm: Vec<usize>,
    /// Echo arms a multishot receive bounded in total (Linux 6.17);
    /// cleared by the first `EINVAL` of a kernel without it.
    echo_multishot: bool,
    /// Echo's bounded multishot receive is a bundle (trap C10), with
    /// incremental buffers only; cleared by the first refusal.
    bundle: bool,
    /// Echo sends a read of at least this many bytes in place from the
    /// receive buffers (trap C11); `usize::MAX`: never (without
    /// incremental buffers, or switched off).
    in_place: usize,
    /// Receives and sends on a socket known empty (full) poll first
    /// (`IORING_RECVSEND_POLL_FIRST`); on only with its switch.
    poll_first: bool,
    /// Receives the empty buffer ring ended (`ENOBUFS`, trap C3).
    dry: u64,
    /// An echo receive with little room left waits for the send in
    /// flight to complete; on only with its switch.
    defer_recv: bool,
    /// What the receives armed in one turn may bring ([`TURN_RECV`]).
    turn_recv: usize,
    /// Turns that left receives for the next ([`TURN_RECV`]).
    capped: u64,
    /// Sends in place that found the socket full (trap C11).
    full_in_place: u64,
}

impl Drop for Loop {
    /// Says how often the buffer ring ran dry and turns were capped, if
    /// they were.
    fn drop(&mut self) {
        if self.capped > 0 {
            log::debug!(
                "io_uring: {} turns left receives for the next",
                self.capped
            );
        }
        if self.dry > 0 {
            log::debug!(
                "io_uring: the receive buffer ring ran dry {} times \
                 (ENOBUFS, trap C3); each receive was armed again",
                self.dry
            );
        }
        if self.full_in_place > 0 {
            log::debug!(
                "io_uring: {} sends in place found the socket full and \
                 were copied (trap C11)",
                self.full_in_place
            );
        }
    }
}

impl Method for Loop {
    fn policy(&mut self) -> &mut Policy {
        &mut self.policy
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        let tracing = trace::on();
        if tracing {
            self.trace_submit();
        }
        ring::submit_and_wait(&mut self.ring, deadline)?;
        let now = self.policy.tick();
        let mut completions = std::mem::take(&mut self.completions);
        ring::reap(&mut self.ring, &mut completions);
        for c in &completions {
            if tracing {
                self.trace_completion(c);
            }
            match c.op.kind {
                Kind::Accept => self.on_accept(*c, now),
                Kind::Control => self.on_control(*c, now),
                Kind::Recv | Kind::Bundle => self.on_recv(*c),
                Kind::Send => self.on_send(*c),
                Kind::Cancel => self.on_cancel(*c),
            }
        }
        self.completions = completions;
        Ok(())
    }

    /// Buffers back, sends, then re-arms (sends first: an echo receive
    /// sees the send in flight, [`Loop::arm_recv`]), accepting:
    /// everything it queues goes in the next wait's submit.
    fn between(&mut self, now: Instant) -> Option<Instant> {
        self.pool.publish();
        self.give_back_memory();
        for key in std::mem::take(&mut self.to_send) {
            self.send(key);
        }
        // Receives armed again this turn are expected to bring at most
        // TURN_RECV bytes in all (each twice what its last read brought:
        // a stream's 64 KiB, a pingpong's 1 KiB floor, so that re-arming
        // thousands of small receives after ENOBUFS takes a turn or two);
        // the rest wait for the next turn, and trap C9: that
        // turn's wait must not block, since nothing submitted may ever
        // complete for them.
        let mut budget = self.turn_recv;
        let mut waiting = std::mem::take(&mut self.to_arm).into_iter();
        for key in waiting.by_ref() {
            budget = budget.saturating_sub(self.arm_recv(key));
            if budget == 0 {
                break;
            }
        }
        self.to_arm.extend(waiting);
        let again = (!self.to_arm.is_empty()).then_some(now);
        if again.is_some() {
            if self.capped == 0 {
                log::debug!(
                    "io_uring: a turn's receives reached {} KiB: {} wait \
                     for the next turn",
                    TURN_RECV / 1024,
                    self.to_arm.len()
                );
            }
            self.capped += 1;
        }
        if !self.watching {
            self.watching = true;
            let fd = Fd(self.policy.listener.poll_fd());
            let poll = PollAdd::new(fd, libc::POLLIN as u32).multi(true);
            let op = Op::new(Kind::Control, 0, 0);
            ring::push(&mut self.ring, poll.build(), op);
        }
        if self.policy.stopping() {
            return again;
        }
        let paused = self.policy.accept.paused_until(now);
        if paused.is_none() {
            for i in 0..self.accepting.len() {
                if !self.accepting[i] {
                    self.arm_accept(i);
                }
            }
        }
        again.or(paused)
    }

    fn keys(&self) -> Vec<usize> {
        self.connections.iter().map(|(k, _)| k).collect()
    }

    fn fd(&self, key: usize) -> Option<RawFd> {
        let conn = self.connections.get(key)?;
        (conn.phase != Phase::Closing).then(|| conn.stream.as_raw_fd())
    }

    fn wind_down(&mut self, key: usize) {
        let conn = &mut self.connections[key];
        if conn.phase != Phase::Open {
            return;
        }
        conn.phase = Phase::Stopping;
        if conn.pending() == 0 {
            self.look_for_input(key);
        }
    }

    fn close(&mut self, key: usize, reason: Reason) {
        self.close_for(key, reason);
    }

    /// Every count is final once the last open connection closed;
    /// dropping the ring ends cancels that are slow to complete.
    fn done(&self, now: Instant) -> bool {
        let end = self.policy.window_end().unwrap_or(now);
        self.connections.is_empty()
            || (self.policy.open() == 0 && now >= end + CANCEL_GRACE)
    }
}

impl Loop {
    /// Once output buffers of a megabyte or more were freed and no output
    /// is held, hands the heap's free pages back to the kernel. Echo's
    /// receives bring up to 32 KiB at once, so a burst of clients grows
    /// many output buffers to the 64 KiB cap; freed, they leave holes in
    /// the heap that the allocator keeps resident (the chaos run's RSS
    /// stayed over its baseline by more than the 6 MiB allowed, 2 runs in
    /// 6). `malloc_trim` returns them (glibc; elsewhere a no-op).
    fn give_back_memory(&mut self) {
        if self.freed < TRIM_AFTER || self.policy.output.held > 0 {
            return;
        }
        self.freed = 0;
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free heap memory; it takes no
        // pointer and may be called at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    fn arm_accept(&mut self, i: usize) {
        let sockets = self.policy.listener.sockets();
        let Some(socket) = sockets.get(i) else { return };
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
            // `between` arms it again once the pause is over or a close
            // freed a descriptor. Trap 12: others are skipped.
            if !self.policy.stopping() {
                self.policy.accept.on_failure(&e, now);
            }
            return;
        }
        // SAFETY: a successful accept's result is a new descriptor that
        // nothing else owns.
        let stream = unsafe { TcpStream::from_raw_fd(c.result) };
        // AcceptMulti has no address buffer: one getpeername a
        // connection, which fails (ENOTCONN) on a client that already
        // reset. It is still a connection the kernel handed over: served
        // as an unknown peer, its first receive says how it ended.
        let peer = stream.peer_addr().unwrap_or(UNKNOWN_PEER);
        self.policy.accept.size_send_buffer(&stream, peer, now);
        self.admit(stream, peer);
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        if !self.policy.admits(peer) {
            return; // dropping the stream closes it at once
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let conn = Connection::new(stream, peer, self.next_gen);
        let key = self.connections.insert(conn);
        if trace::on() {
            self.trace_state(key, &format!("accepted: slot {key}"));
        }
        self.policy.opened(key, peer);
        // With a PROXY header due, the first receives feed it.
        self.arm_recv(key);
    }

    /// The listener layer's epoll is readable: the waker, a signal, or
    /// the metrics endpoint. Its events are taken without blocking and
    /// handed to the policy, so a stop is a completion like any other
    /// (trap 13).
    fn on_control(&mut self, c: Completion, now: Instant) {
        if !c.more() {
            self.watching = false;
        }
        let listener = &mut self.policy.listener;
        if let Err(e) = listener.wait(&mut self.events, Some(now)) {
            log::warn!("{e}");
            return;
        }
        for event in self.events.iter() {
            // A client listener's readiness: its multishot accept takes
            // it.
            if !matches!(Source::of(event.token()), Source::Listener(_)) {
                self.policy.on_token(event.token());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection cost docs/models.md quotes: an idle connection is
    /// one `Connection` of 56 bytes in the slab, and holds no receive
    /// buffer: the pool is shared.
    #[test]
    fn an_idle_connection_is_a_small_slab_entry() {
        crate::policy::assert_slab_entry::<Connection>(56);
    }
}
