//! The Prometheus endpoint (`--metrics-addr`): a listener of its own on
//! the server's poll (token [`METRICS`](crate::listener::METRICS)) and
//! a fixed table of at most [`MAX_SCRAPES`] scrape connections (tokens
//! `FIRST_SCRAPE + slot`). The model that waits on the poll feeds it
//! the events of those tokens, calls [`Metrics::turn`] after each wait
//! and folds [`Metrics::deadline`] into the next one, and gives it the
//! counters through [`Metrics::answer`] when [`Metrics::waiting`] says a
//! request is complete: the figures are exact at that moment, and a
//! scrape never counts as a client.
//!
//! A scrape never blocks the loop. It is read and written without
//! blocking: its request head into a buffer of at most
//! [`HEAD_MAX`](http::HEAD_MAX) bytes, its response from a buffer that
//! is flushed on WRITABLE. It has [`SCRAPE_DEADLINE`] from accept to its
//! last byte, and is closed when that passes, however far it got. One
//! scrape over the table's size is closed at once.

mod http;
mod render;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::config::Config;
use crate::journal::RateLimited;
use crate::listener::accept::Accept;
use crate::listener::group::Group;
use crate::listener::{Listener, Source, FIRST_SCRAPE, MAX_SCRAPES};
use crate::net::{interrupted, would_block};

use render::Build;
pub(crate) use render::Counters;

/// How long a scrape may take, from accept to its last byte.
pub(crate) const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);
/// Reads of a client's leftovers after its response, before it is
/// closed anyway (trap 2: a client that keeps sending cannot hold the
/// loop).
const LINGER_READS: usize = 16;

/// The endpoint: its listener, its scrapes and what they share.
#[derive(Debug)]
pub(crate) struct Metrics {
    socket: TcpListener,
    /// The accept state machine every listener runs (budget, skipped
    /// errors, the pause when descriptors run out: trap 4).
    accept: Accept,
    slots: [Option<Scrape>; MAX_SCRAPES],
    /// Scrapes in the table.
    open: usize,
    build: Build,
    /// The last rendering, its capacity kept for the next one.
    text: String,
    /// Whose stop `/healthz` reports.
    group: Arc<Group>,
    turned_away: RateLimited,
}

/// One scrape connection.
#[derive(Debug)]
struct Scrape {
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    state: State,
}

/// How far a scrape has come.
#[derive(Debug)]
enum State {
    /// Reading the request head (what came so far).
    Reading(Vec<u8>),
    /// A complete `GET /metrics` waits for the counters.
    Waiting { body: bool },
    /// Sending the response.
    Writing { out: Vec<u8>, sent: usize },
    /// All sent and our side shut: reading until the client closes.
    Lingering,
}

/// What a scrape's IO left it as.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Waiting for the next event (or for the counters).
    Open,
    /// Finished, or failed: close it.
    Done,
}

impl Metrics {
    /// The endpoint, if `listener` has a metrics listener (registered
    /// under the metrics token): takes it over.
    pub(crate) fn take(
        listener: &mut Listener,
        config: &Config,
    ) -> Option<Metrics> {
        let socket = listener.take_metrics()?;
        Some(Metrics {
            socket,
            accept: Accept::new(config, Arc::clone(listener.group())),
            slots: std::array::from_fn(|_| None),
            open: 0,
            build: Build { model: config.model, mode: config.mode },
            text: String::new(),
            group: Arc::clone(listener.group()),
            turned_away: RateLimited::default(),
        })
    }

    /// An event for the metrics listener or one of its scrapes.
    pub(crate) fn on_event(&mut self, source: Source, registry: &Registry) {
        match source {
            // The metrics listener is the only one its `Accept` knows.
            Source::Metrics => self.accept.on_event(0),
            Source::Scrape(slot) => self.advance(slot, registry),
            _ => {}
        }
    }

    /// The work that follows each wait: accept the scrapes that came,
    /// and close those past their deadline.
    pub(crate) fn turn(&mut self, registry: &Registry, now: Instant) {
        while let Some((stream, peer)) =
            self.accept.next(std::slice::from_ref(&self.socket), now)
        {
            self.admit(stream, peer, registry, now);
        }
        if self.open == 0 {
            return;
        }
        for slot in 0..MAX_SCRAPES {
            let Some(scrape) = &self.slots[slot] else { continue };
            if now < scrape.deadline {
                continue;
            }
            if let State::Reading(_) = scrape.state {
                log::debug!(
                    "metrics: {}: no whole request in {} s; closed",
                    scrape.peer,
                    SCRAPE_DEADLINE.as_secs()
                );
            }
            self.close(slot, registry);
        }
    }

    /// When the poll must wake for the endpoint: a scrape's deadline,
    /// or the end of an accept pause.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        let accept = self.accept.deadline(now);
        if self.open == 0 {
            return accept; // the loop's every turn asks: keep it short
        }
        let scrapes = self.slots.iter().flatten().map(|s| s.deadline).min();
        [accept, scrapes].into_iter().flatten().min()
    }

    /// Whether a complete request waits for [`Metrics::answer`].
    pub(crate) fn waiting(&self) -> bool {
        self.open > 0
            && self
                .slots
                .iter()
                .flatten()
                .any(|s| matches!(s.state, State::Waiting { .. }))
    }

    /// The end of a loop model's turn (mio, uring): accepts and expires
    /// scrapes, and answers the complete ones with every worker's
    /// counters as the group holds them (each worker has published its
    /// bytes in [`Listener::end_turn`]).
    pub(crate) fn serve_group(&mut self, listener: &Listener, now: Instant) {
        let registry = listener.registry();
        self.turn(registry, now);
        if self.waiting() {
            let group = listener.group();
            let (summary, open) = group.totals();
            let workers = group.per_worker();
            self.answer(registry, &Counters { summary, open, workers });
        }
    }

    /// Answers every waiting request with `counters` (rendered once)
    /// and starts sending.
    pub(crate) fn answer(&mut self, registry: &Registry, counters: &Counters) {
        self.text.clear();
        render::render(&mut self.text, counters, self.build);
        for slot in 0..MAX_SCRAPES {
            let Some(scrape) = &mut self.slots[slot] else { continue };
            let State::Waiting { body } = scrape.state else { continue };
            let out = http::metrics(&self.text, body);
            scrape.state = State::Writing { out, sent: 0 };
            if scrape.advance(&self.group) == Step::Done {
                self.close(slot, registry);
            }
        }
    }

    fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        registry: &Registry,
        now: Instant,
    ) {
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            if let Some(folded) = self.turned_away.admit(now) {
                log::warn!(
                    "metrics: {peer} closed at once: {MAX_SCRAPES} scrapes \
                     in progress ({folded} more since the last line)"
                );
            }
            return; // dropping the stream closes it
        };
        // Both interests once: a scrape reads, then writes. The
        // registration reports what is ready already, so a request that
        // came with the connection is an event like any other.
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = Token(FIRST_SCRAPE + slot);
        if let Err(e) = registry.register(&mut stream, token, interest) {
            log::warn!("metrics: {peer}: cannot register: {e}");
            return;
        }
        let deadline = now + SCRAPE_DEADLINE;
        let state = State::Reading(Vec::new());
        self.slots[slot] = Some(Scrape { stream, peer, deadline, state });
        self.open += 1;
    }

    fn advance(&mut self, slot: usize, registry: &Registry) {
        // Trap 6: the scrape of this token may have closed earlier in
        // the batch; a vacant slot means nothing to do.
        let Some(Some(scrape)) = self.slots.get_mut(slot) else { return };
        if scrape.advance(&self.group) == Step::Done {
            self.close(slot, registry);
        }
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        let Some(mut scrape) = self.slots[slot].take() else { return };
        // Trap 6: deregister before the socket closes.
        let _ = registry.deregister(&mut scrape.stream);
        // A forked child that still holds a copy (kernels without
        // close_range) must not keep the scraper waiting for our FIN.
        let _ = scrape.stream.shutdown(Shutdown::Both);
        self.open -= 1;
        self.accept.freed();
    }
}

impl Scrape {
    /// Does all the IO its state allows, until it would block, waits
    /// for the counters, or is done; `/healthz` asks `group`.
    fn advance(&mut self, group: &Group) -> Step {
        loop {
            let next = match &mut self.state {
                State::Reading(head) => match read_head(&self.stream, head) {
                    Head::Blocked => return Step::Open,
                    Head::Read(http::Request::Metrics { body }) => {
                        State::Waiting { body }
                    }
                    Head::Read(http::Request::Health { body }) => {
                        let out = http::health(group.healthy(), body);
                        State::Writing { out, sent: 0 }
                    }
                    Head::Read(http::Request::Refused(status)) => {
                        State::Writing { out: http::refusal(status), sent: 0 }
                    }
                    Head::Gone | Head::Read(http::Request::Partial) => {
                        return Step::Done
                    }
                },
                State::Waiting { .. } => return Step::Open,
                State::Writing { out, sent } => {
                    match flush(&self.stream, out, sent) {
                        Some(step) => return step,
                        // Trap 17: a close with input unread sends an
                        // RST, which can make the client drop the
                        // response; send our FIN and drain first.
                        None => {
                            let _ = self.stream.shutdown(Shutdown::Write);
                            State::Lingering
                        }
                    }
                }
                State::Lingering => return drain(&self.stream),
            };
            self.state = next;
        }
    }
}

/// Where reading a request head got to.
enum Head {
    /// The socket would block before the head was complete.
    Blocked,
    /// The client closed or failed first: nothing to answer.
    Gone,
    /// What the complete (or refused) head asks for (never `Partial`).
    Read(http::Request),
}

/// Reads into `head` until the request is complete or refused, the
/// socket would block (trap 1: reads until `WouldBlock`), or the client
/// is gone.
fn read_head(mut stream: &TcpStream, head: &mut Vec<u8>) -> Head {
    loop {
        let start = head.len();
        head.resize(http::HEAD_MAX, 0);
        let read = stream.read(&mut head[start..]);
        head.truncate(start + read.as_ref().map_or(0, |n| *n));
        match read {
            Ok(0) => return Head::Gone,
            Ok(_) => match http::parse(head) {
                http::Request::Partial => {}
                request => return Head::Read(request),
            },
            Err(e) if would_block(&e) => return Head::Blocked,
            Err(e) if interrupted(&e) => {}
            Err(_) => return Head::Gone,
        }
    }
}

/// Writes what is left of `out`: `None` once all of it went, else what
/// the scrape is now. Trap 7: what does not go now waits for WRITABLE.
fn flush(
    mut stream: &TcpStream,
    out: &[u8],
    sent: &mut usize,
) -> Option<Step> {
    while *sent < out.len() {
        match stream.write(&out[*sent..]) {
            Ok(0) => return Some(Step::Done),
            Ok(n) => *sent += n,
            Err(e) if would_block(&e) => return Some(Step::Open),
            Err(e) if interrupted(&e) => {}
            Err(_) => return Some(Step::Done),
        }
    }
    None
}

/// Discards what the client still sends until its EOF (done), or until
/// it would block (open), or [`LINGER_READS`] reads (done).
fn drain(mut stream: &TcpStream) -> Step {
    let mut buf = [0u8; 4096];
    for _ in 0..LINGER_READS {
        match stream.read(&mut buf) {
            Ok(0) => return Step::Done,
            Ok(_) => {}
            Err(e) if would_block(&e) => return Step::Open,
            Err(e) if interrupted(&e) => {}
            Err(_) => return Step::Done,
        }
    }
    Step::Done
}
