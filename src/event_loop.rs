//! The mio model: one thread, one `mio::Poll`, a slab of nonblocking
//! connections. This file is the loop; [`Connection`] does the IO of one
//! client and returns what should happen next.
//!
//! Cost per connection: a 48-byte slab entry, 24 bytes of idle
//! bookkeeping when `--idle-timeout` is set, 16 bytes of log rate limit
//! in log mode, with `--proxy-protocol` 8 bytes beside the slab and a
//! partial header only while one arrives (`pending`), and an output
//! buffer only while a write is blocked. Those
//! buffers share one budget (`--max-output-memory`): past it, a
//! connection whose writes block stops being read, so clients that never
//! read cost the budget, not their number times
//! [`OUT_CAP`](crate::OUT_CAP). It breaks down only when one core cannot
//! keep up with the total traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Token};
use slab::Slab;

use crate::config::{Config, Mode};
use crate::connection::{Connection, Io, Progress, Ready};
use crate::error::Error;
use crate::idle::IdleList;
use crate::journal::{self, ChunkLimit};
use crate::listener::accept::Accept;
use crate::listener::{
    Control, Listener, Source, FIRST_CONNECTION, STOP_WINDOW,
};
use crate::log_limit::{Bucket, Limits};
use crate::metrics::Metrics;
use crate::pending::{Header, Pending};
use crate::stats::{Reason, Stats, Summary, Traffic};

/// The one read buffer every connection shares.
const READ_BUF: usize = 64 * 1024;
/// Events taken from one `epoll_wait`.
const EVENTS: usize = 1024;

/// Runs the mio model until it is stopped.
pub(crate) fn run(
    listener: Listener,
    config: &Config,
) -> Result<Summary, Error> {
    let mut events = Events::with_capacity(EVENTS);
    let mut lp = EventLoop::new(listener, config);
    loop {
        let deadline = lp.deadline(Instant::now());
        lp.listener.wait(&mut events, deadline)?;
        let now = Instant::now();
        lp.now_ms = lp.clock(now);
        for event in events.iter() {
            match Source::of(event.token()) {
                Source::Listener(n) => lp.accept.on_event(n),
                Source::Connection(key) => lp.drive(key, Ready::of(event)),
                Source::Control => {
                    if let Some(control) = lp.listener.control(event.token()) {
                        lp.on_control(control, now);
                    }
                }
                source @ (Source::Metrics | Source::Scrape(_)) => {
                    if let Some(metrics) = &mut lp.metrics {
                        metrics.on_event(source, lp.listener.registry());
                    }
                }
            }
        }
        lp.after_events(now);
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

/// The loop's state; see the crate docs for one turn of it.
struct EventLoop {
    listener: Listener,
    mode: Mode,
    connections: Slab<Connection>,
    /// This worker's counters: accepts and closes counted as they happen,
    /// bytes added once a turn from `traffic`.
    stats: Arc<Stats>,
    traffic: Traffic,
    buf: Box<[u8]>,
    scratch: String,
    idle: Option<IdleList>,
    /// Log mode's rate limit state; `None` in the other modes.
    log: Option<LogBuckets>,
    /// Connections whose read budget ran out (trap 2): driven again after
    /// this batch, and the next poll does not block while any wait.
    again: Vec<usize>,
    accept: Accept,
    /// Bytes the connections' output buffers hold now.
    out_held: usize,
    /// `--max-output-memory`.
    out_budget: usize,
    stopping: Option<Instant>,
    start: Instant,
    now_ms: u64,
    /// `--metrics-addr`, served by this loop until the process exits.
    metrics: Option<Metrics>,
    /// `--proxy-protocol`: the connections whose header is arriving.
    pending: Option<Pending>,
}

impl EventLoop {
    fn new(mut listener: Listener, config: &Config) -> EventLoop {
        // Capacity is reserved, not touched: untouched pages cost no RSS.
        let capacity = config.max_connections.min(1 << 20);
        let idle = config.idle_timeout.map(|t| {
            IdleList::new(t.as_millis().try_into().unwrap_or(u64::MAX))
        });
        EventLoop {
            connections: Slab::with_capacity(capacity),
            stats: Arc::clone(listener.group().stats(listener.worker())),
            traffic: Traffic::default(),
            buf: vec![0; READ_BUF].into_boxed_slice(),
            scratch: String::new(),
            idle,
            log: LogBuckets::of(config),
            again: Vec::new(),
            accept: Accept::new(config, Arc::clone(listener.group())),
            out_held: 0,
            out_budget: config.max_output_memory,
            stopping: None,
            start: Instant::now(),
            now_ms: 0,
            metrics: Metrics::take(&mut listener, config),
            pending: config.proxy.clone().map(Pending::new),
            listener,
            mode: config.mode,
        }
    }

    fn clock(&self, now: Instant) -> u64 {
        now.duration_since(self.start)
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// Until when the next poll may block: not at all while work is
    /// left over, otherwise until the nearest deadline.
    fn deadline(&self, now: Instant) -> Option<Instant> {
        if !self.again.is_empty() {
            return Some(now);
        }
        let idle = self
            .idle
            .as_ref()
            .and_then(IdleList::next_deadline)
            .map(|ms| self.start + Duration::from_millis(ms));
        let accept = match self.stopping {
            None => self.accept.deadline(now),
            Some(_) => None,
        };
        let log = journal::retry_at(now);
        let metrics = self.metrics.as_ref().and_then(|m| m.deadline(now));
        let header = self
            .pending
            .as_ref()
            .and_then(Pending::next_deadline)
            .map(|ms| self.start + Duration::from_millis(ms));
        [idle, accept, self.stopping, log, metrics, header]
            .into_iter()
            .flatten()
            .min()
    }

    /// Work that follows each batch of events: accept, retry connections
    /// with budget left over, expire idle ones.
    fn after_events(&mut self, now: Instant) {
        if self.stopping.is_none() {
            while let Some((stream, peer)) =
                self.accept.next(self.listener.sockets(), now)
            {
                self.admit(stream, peer);
            }
        }
        for key in std::mem::take(&mut self.again) {
            self.drive(key, Ready::ANY);
        }
        self.expire_idle();
        self.expire_headers();
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let open = self.connections.len();
        let admitted = match &self.pending {
            // A proxied connection's address is the balancer's until its
            // header arrives: the per-address limit waits for the client.
            Some(_) => self.accept.admits_one_more(open, peer, &self.stats),
            None => self.accept.admits(open, peer, &self.stats),
        };
        if !admitted {
            return; // dropping the stream closes it at once
        }
        if let Some(reason) =
            self.pending.as_ref().and_then(|p| p.refuses(peer))
        {
            self.stats.accepted();
            self.stats.closed(&reason);
            journal::closed(peer, &reason, open);
            return;
        }
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let token = Token(key + FIRST_CONNECTION);
        // Both interests once, for the connection's life: a readiness
        // change then never costs an epoll_ctl on the hot path.
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.listener.registry().register(&mut stream, token, interest)
        {
            self.stats.accepted();
            let reason = Reason::Error(e);
            self.stats.closed(&reason);
            journal::closed(peer, &reason, self.connections.len());
            self.accept.release(peer);
            return;
        }
        entry.insert(Connection::new(stream, peer));
        if let Some(log) = &mut self.log {
            *log.bucket(key) = Bucket::default();
        }
        if let Some(pending) = &mut self.pending {
            // Counted and logged once the header names the client.
            pending.start(key, self.now_ms);
            return;
        }
        self.serving(key, peer);
    }

    /// Connection `key` from `peer` is served from now on: counted,
    /// tracked for idleness, logged.
    fn serving(&mut self, key: usize, peer: SocketAddr) {
        self.stats.accepted();
        if let Some(idle) = &mut self.idle {
            idle.insert(key, self.now_ms);
        }
        journal::accepted(peer, self.connections.len());
    }

    /// Reads connection `key`'s PROXY header; once it is complete, the
    /// connection is admitted by the client's address and served.
    fn read_header(&mut self, key: usize) {
        let (Some(conn), Some(pending)) =
            (self.connections.get_mut(key), &mut self.pending)
        else {
            return;
        };
        let first = match pending.read(key, conn.stream_mut(), &mut self.buf) {
            Header::Waiting => return,
            Header::Refused(reason) => return self.close(key, reason),
            Header::Done { peer, first } => {
                let peer = peer.unwrap_or(conn.peer());
                conn.set_peer(peer);
                first
            }
        };
        let peer = conn.peer();
        if !self.accept.admits_address(peer, &self.stats) {
            // Counted as rejected, as at accept: never served.
            if let Some(mut conn) = self.connections.try_remove(key) {
                let _ = self.listener.registry().deregister(conn.stream_mut());
            }
            self.accept.freed();
            return;
        }
        self.serving(key, peer);
        if !first.is_empty() {
            let n = first.len();
            self.buf.copy_within(first, 0);
            self.drive_with(key, |conn, io| conn.first_bytes(io, n));
        }
        // Trap 1: the header's reads took this edge; read what follows.
        self.drive(key, Ready::ANY);
    }

    fn expire_headers(&mut self) {
        while let Some(key) =
            self.pending.as_mut().and_then(|p| p.expired(self.now_ms))
        {
            self.close(key, crate::pending::too_slow());
        }
    }

    /// Lets connection `key` do the IO `ready` allows, then acts on what
    /// it reports, in this one place.
    fn drive(&mut self, key: usize, ready: Ready) {
        // Trap 6: the token may belong to a connection closed earlier in
        // this batch. Its slot cannot hold a new connection yet (accepts
        // happen after the batch), so a vacant slot is the whole check;
        // a wake-up that finds nothing to do is harmless.
        if self.pending.as_ref().is_some_and(|p| p.waits(key)) {
            return self.read_header(key);
        }
        self.drive_with(key, |conn, io| conn.on_ready(io, ready));
    }

    /// Runs `handler` on connection `key` and acts on its [`Progress`].
    fn drive_with(
        &mut self,
        key: usize,
        handler: impl FnOnce(&mut Connection, &mut Io<'_>) -> Progress,
    ) {
        let Some(conn) = self.connections.get_mut(key) else { return };
        let held = conn.held();
        let mut io = Io {
            buf: &mut self.buf,
            scratch: &mut self.scratch,
            traffic: &mut self.traffic,
            mode: self.mode,
            limit: self.log.as_mut().map(|log| log.limit(key, &self.stats)),
            moved: false,
            allowance: self.out_budget.saturating_sub(self.out_held),
        };
        let progress = handler(conn, &mut io);
        // The budget is kept here, in one place, from what the buffer
        // holds before and after; the allowance only bounds the growth.
        self.out_held = self.out_held - held + conn.held();
        if io.moved {
            if let Some(idle) = &mut self.idle {
                idle.touch(key, self.now_ms);
            }
        }
        match progress {
            Progress::Waiting => {}
            Progress::More => self.again.push(key),
            Progress::Closed(reason) => self.close(key, reason),
        }
    }

    /// Deregisters, removes, counts and logs connection `key`.
    fn close(&mut self, key: usize, reason: Reason) {
        let Some(mut conn) = self.connections.try_remove(key) else { return };
        // A connection refused at its header was counted at none of
        // accept, the per-address table or the idle list.
        let unserved = self.pending.as_mut().is_some_and(|p| p.forget(key));
        if unserved {
            self.stats.accepted();
        }
        // Trap 6: deregister before the socket closes and its slot is
        // reused, so no event can arrive for a token that moved on.
        let _ = self.listener.registry().deregister(conn.stream_mut());
        if let Some(idle) = &mut self.idle {
            idle.remove(key);
        }
        // Everything still open when the stop began closes as `shutdown`.
        let reason =
            if self.stopping.is_some() { Reason::Shutdown } else { reason };
        self.stats.closed(&reason);
        if let Some(log) = &mut self.log {
            journal::suppressed(conn.peer(), log.bucket(key));
        }
        journal::closed(conn.peer(), &reason, self.connections.len());
        self.out_held -= conn.held();
        if !unserved {
            self.accept.release(conn.peer());
        }
        drop(conn);
        self.accept.freed();
    }

    fn expire_idle(&mut self) {
        while let Some(key) =
            self.idle.as_ref().and_then(|l| l.expired(self.now_ms))
        {
            let queued = match self.connections.get(key) {
                Some(conn) => conn.has_input(),
                // Never expected; unlink so the loop cannot spin on it.
                None => {
                    if let Some(idle) = &mut self.idle {
                        idle.remove(key);
                    }
                    continue;
                }
            };
            match queued {
                // Input waits that the loop has not read yet (a budget
                // retry, a pause): the client was not idle; serve it.
                true => {
                    if let Some(idle) = &mut self.idle {
                        idle.touch(key, self.now_ms);
                    }
                    self.again.push(key);
                }
                false => self.close(key, Reason::Idle),
            }
        }
    }

    /// Acts on what the waker or a signal asked.
    fn on_control(&mut self, control: Control, now: Instant) {
        if control.stop {
            self.begin_stop(now);
        }
        if control.now {
            // The stop window ends now: `finished` closes the rest.
            self.stopping = Some(now);
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(now + STOP_WINDOW);
        self.listener.stop_listening();
        self.idle = None; // idle timeouts no longer apply
        let keys: Vec<usize> =
            self.connections.iter().map(|(k, _)| k).collect();
        log::info!("stopping: {} connections open", keys.len());
        for key in keys {
            // A header still arriving: nothing was served to flush.
            if self.pending.as_ref().is_some_and(|p| p.waits(key)) {
                self.close(key, Reason::Shutdown);
                continue;
            }
            if let Some(conn) = self.connections.get_mut(key) {
                conn.stop();
            }
            self.drive(key, Ready::ANY);
        }
    }

    /// True once stopping is complete: every connection closed, or the
    /// stop window is over and the rest are closed now.
    fn finished(&mut self, now: Instant) -> bool {
        let Some(deadline) = self.stopping else { return false };
        if now >= deadline {
            let keys: Vec<usize> =
                self.connections.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.close(key, Reason::Shutdown);
            }
        }
        self.connections.is_empty()
    }
}

/// Log mode's rate limits: the server's, and a bucket per slab key. They
/// live beside the slab rather than in [`Connection`], so the other modes
/// pay nothing for them.
pub(crate) struct LogBuckets {
    limits: Limits,
    buckets: Vec<Bucket>,
}

impl LogBuckets {
    /// The buckets `config` asks for: `None` outside log mode.
    pub(crate) fn of(config: &Config) -> Option<LogBuckets> {
        (config.mode == Mode::Log).then(|| LogBuckets {
            limits: Limits::of(config),
            buckets: Vec::new(),
        })
    }

    /// The bucket of slab key `key`, made on first use.
    pub(crate) fn bucket(&mut self, key: usize) -> &mut Bucket {
        if self.buckets.len() <= key {
            self.buckets.resize(key + 1, Bucket::default());
        }
        &mut self.buckets[key]
    }

    /// What decides whether connection `key` may log a chunk line.
    pub(crate) fn limit<'a>(
        &'a mut self,
        key: usize,
        stats: &'a Stats,
    ) -> ChunkLimit<'a> {
        self.bucket(key);
        ChunkLimit {
            limits: &self.limits,
            bucket: &mut self.buckets[key],
            stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection cost the README quotes: an idle connection is
    /// one `Connection` of 48 bytes in the slab, no output buffer (mio's
    /// sockets carry a registration check in debug builds, 16 bytes more).
    #[test]
    fn an_idle_connection_is_a_small_slab_entry() {
        let debug_extra = if cfg!(debug_assertions) { 16 } else { 0 };
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 48 + debug_extra, "Connection is {size} bytes");
    }
}
