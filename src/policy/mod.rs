//! The connection policy of the event-driven models, written once: what
//! the mio loop and the uring loop decide alike, whatever tells them a
//! socket is ready. As nginx's event core owns accept, timers and
//! closes while each of its IO methods (epoll, kqueue, iocp) only fills a
//! small table of actions, [`Policy`] owns:
//!
//! - admission: `--max-connections`, `--max-connections-per-ip`, the
//!   PROXY header's trust, rejections counted (`admission`);
//! - every deadline: idle (`idle`, the idle contract), the PROXY
//!   header's 5 s (`header`), the stop window, accept pauses, scrapes;
//! - close accounting: every connection counted once, with one journal
//!   line (`closing`);
//! - the stop sequence and control: signals and the [`Handle`] become
//!   a stop, the stop walks every connection, the window ends it
//!   (`stop`);
//! - the end of each turn: bytes published, the stats line, systemd's
//!   duties, scrapes answered, the log flushed.
//!
//! A model is a [`Method`]: how it waits, how it moves bytes, how it
//! winds a connection down and closes it. [`run`] is the one loop both
//! run.
//!
//! [`Handle`]: crate::Handle

mod admission;
mod closing;
pub(crate) mod header;
mod idle;
mod log;
mod stop;

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;

use crate::config::{Config, Mode};
use crate::error::Error;
use crate::journal;
use crate::listener::accept::Accept;
use crate::listener::{Control, Listener, Source};
use crate::metrics::Metrics;
use crate::stats::{Reason, Stats, Summary, Traffic};

pub(crate) use admission::Verdict;
pub(crate) use header::{Header, Headers};
use idle::IdleList;
use log::LogBuckets;

/// Echo backpressure: while this much output waits, stop reading. Just
/// under 64 KiB, so that a full buffer together with the allocator's
/// chunk header fits in 16 pages, not 17: a client that never reads costs
/// the server at most 64 KiB.
pub const OUT_CAP: usize = 64 * 1024 - 64;

/// A read while the output budget (`--max-output-memory`) cannot hold a
/// full chunk: small, because if the echo of it blocks, the rest must be
/// kept, and that is what a connection can add past the budget.
pub(crate) const OVER_BUDGET_STEP: usize = 512;

/// What an IO method does for the policy: the mio model's readiness, the
/// uring model's completions. Everything else is [`Policy`]'s.
pub(crate) trait Method {
    /// The policy this method serves.
    fn policy(&mut self) -> &mut Policy;
    /// Waits for readiness or completions until `deadline` (`None`: no
    /// deadline), reads the clock ([`Policy::tick`]) and acts on what
    /// came; tokens that are not its own go to [`Policy::on_token`].
    fn wait(&mut self, deadline: Option<Instant>) -> Result<(), Error>;
    /// The method's work between waits (accepting, budget retries,
    /// re-arming, queued sends), and when it wants the next wait to end.
    fn between(&mut self, now: Instant) -> Option<Instant>;
    /// The slab keys of the connections it holds.
    fn keys(&self) -> Vec<usize>;
    /// Connection `key`'s socket, if it is open.
    fn fd(&self, key: usize) -> Option<RawFd>;
    /// The stop began: flush connection `key`, then close or linger.
    fn wind_down(&mut self, key: usize);
    /// Closes connection `key` (counted through [`Policy::closing`]).
    fn close(&mut self, key: usize, reason: Reason);
    /// Nothing is left to wait for: every connection is gone.
    fn done(&self, now: Instant) -> bool;
}

/// Runs `method` until it is stopped; see the crate docs for one turn.
pub(crate) fn run<M: Method>(mut method: M) -> Result<Summary, Error> {
    let mut now = Instant::now();
    let mut due = method.between(now);
    loop {
        let deadline = method.policy().deadline(now, due);
        method.wait(deadline)?;
        now = method.policy().now;
        stop::act(&mut method, now);
        due = method.between(now);
        closing::expire(&mut method);
        method.policy().end_turn(now);
        if stop::finished(&mut method, now) {
            return Ok(method.policy().summary());
        }
    }
}

/// The output buffers' share of memory: what they hold now, and
/// `--max-output-memory`.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) held: usize,
    pub(crate) budget: usize,
}

impl Output {
    /// What is left of the budget.
    pub(crate) fn left(&self) -> usize {
        self.budget.saturating_sub(self.held)
    }
}

/// What every event-driven model decides alike; see the module docs.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) listener: Listener,
    pub(crate) mode: Mode,
    /// This worker's counters: accepts and closes counted as they
    /// happen, bytes added once a turn from `traffic`.
    pub(crate) stats: Arc<Stats>,
    pub(crate) traffic: Traffic,
    /// Reused for escaping logged chunks.
    pub(crate) scratch: String,
    /// Log mode's rate limit state; `None` in the other modes.
    pub(crate) log: Option<LogBuckets>,
    pub(crate) accept: Accept,
    /// `--proxy-protocol`: the connections whose header is arriving.
    pub(crate) headers: Option<Headers>,
    pub(crate) output: Output,
    idle: Option<IdleList>,
    /// `--metrics-addr`, served from this loop until the process exits.
    metrics: Option<Metrics>,
    /// When the stop window ends, once a stop began.
    stopping: Option<Instant>,
    /// What the waker and the signals asked during this turn.
    asked: Control,
    /// Connections admitted and not yet counted as closed.
    open: usize,
    start: Instant,
    now: Instant,
    /// `now` on the loop's own clock, in ms since `start`.
    pub(crate) now_ms: u64,
}

impl Policy {
    /// The policy `config` asks for, over `listener`.
    pub(crate) fn new(mut listener: Listener, config: &Config) -> Policy {
        let group = Arc::clone(listener.group());
        let start = Instant::now();
        Policy {
            stats: Arc::clone(group.stats(listener.worker())),
            traffic: Traffic::default(),
            scratch: String::new(),
            mode: config.mode,
            log: LogBuckets::of(config),
            accept: Accept::new(config, group),
            headers: config.proxy.clone().map(Headers::new),
            output: Output { held: 0, budget: config.max_output_memory },
            idle: config.idle_timeout.map(IdleList::new),
            metrics: Metrics::take(&mut listener, config),
            listener,
            stopping: None,
            asked: Control::default(),
            open: 0,
            start,
            now: start,
            now_ms: 0,
        }
    }

    /// Reads the clock once for the turn that begins.
    pub(crate) fn tick(&mut self) -> Instant {
        self.now = Instant::now();
        let ms = self.now.duration_since(self.start).as_millis();
        self.now_ms = ms.try_into().unwrap_or(u64::MAX);
        self.now
    }

    /// Connections admitted and not yet counted as closed.
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    /// Whether a stop began.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// Connection `key` moved a byte: it is not idle.
    pub(crate) fn touch(&mut self, key: usize) {
        if let Some(idle) = &mut self.idle {
            idle.touch(key, self.now_ms);
        }
    }

    /// Until when the next wait may block: the method's own `due`, the
    /// nearest idle or header deadline, the end of an accept pause or of
    /// the stop window, a log retry, the service duties, a scrape.
    fn deadline(&self, now: Instant, due: Option<Instant>) -> Option<Instant> {
        let start = self.start;
        let at = |ms: u64| start + Duration::from_millis(ms);
        let idle = self.idle.as_ref().and_then(IdleList::next_deadline);
        let header = self.headers.as_ref().and_then(Headers::next_deadline);
        let log = journal::retry_at(now);
        let service = self.listener.service_due();
        let metrics = self.metrics.as_ref().and_then(|m| m.deadline(now));
        let idle = idle.map(at);
        let header = header.map(at);
        [due, idle, header, self.stopping, log, service, metrics]
            .into_iter()
            .flatten()
            .min()
    }

    /// A token that is neither a connection's nor a client listener's:
    /// the waker and the signals (what they ask is acted on after the
    /// batch), the metrics listener and its scrapes.
    pub(crate) fn on_token(&mut self, token: Token) {
        match Source::of(token) {
            Source::Control => {
                if let Some(control) = self.listener.control(token) {
                    self.asked.merge(control);
                }
            }
            source @ (Source::Metrics | Source::Scrape(_)) => {
                if let Some(metrics) = &mut self.metrics {
                    metrics.on_event(source, self.listener.registry());
                }
            }
            Source::Listener(_) | Source::Connection(_) => {}
        }
    }

    /// The end of a turn: this turn's bytes added to the worker's
    /// counters (one atomic add per counter per turn), the periodic
    /// duties, the scrapes answered with every worker's counters, and
    /// the log lines of the turn handed to the sink.
    fn end_turn(&mut self, now: Instant) {
        self.stats.set_output_held(self.output.held);
        self.listener.end_turn(now, &self.stats, &mut self.traffic);
        if let Some(metrics) = &mut self.metrics {
            metrics.serve_group(&self.listener, now);
        }
        journal::flush();
    }

    fn summary(&mut self) -> Summary {
        self.stats.add(std::mem::take(&mut self.traffic));
        self.stats.summary()
    }
}

/// Asserts that an idle connection of type `T` costs at most `bytes` in
/// its slab, the figure docs/models.md quotes (mio's sockets carry a
/// registration check in debug builds, 16 bytes more).
#[cfg(test)]
pub(crate) fn assert_slab_entry<T>(bytes: usize) {
    let debug_extra = if cfg!(debug_assertions) { 16 } else { 0 };
    let size = std::mem::size_of::<T>();
    let name = std::any::type_name::<T>();
    assert!(size <= bytes + debug_extra, "{name} is {size} bytes");
}
